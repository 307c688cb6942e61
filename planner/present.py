"""Show a plan document to a person: rich tables of the plan, its memory and its decisions (stdout)."""

from typing import Optional

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

WIDE = 120  # a narrower console (an 80-column terminal) gets a few lines per row where a table would need more


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _console(width: int = 150) -> Console:
    """stdout console: the terminal's width (or COLUMNS, which rich reads); wide enough for the why column when
    stdout is a file or pipe and COLUMNS is not set (rich would default to 80)."""
    import os
    import sys

    return Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else width)


def _record(console: Console, head: Text, lines: list[tuple[str, str]]) -> None:
    """One row of a table as a few lines, for a narrow console: the head, then each labelled text indented and
    wrapped at spaces, so no name or value is cut."""
    console.print(head)
    for label, text in lines:
        if text:
            console.print(Padding(Text(f"{label}{text}"), (0, 0, 0, 6), expand=False))


def show(req, compiled, console: Optional[Console] = None, saved_to: Optional[str] = None) -> None:
    """The plan as tables: each field with the decision behind it, memory per GPU, the prediction, what lost."""
    from planner.document import plain

    console = console or _console()
    plan, mem, hw = compiled.plan, compiled.memory, req.hw
    title = (f"{req.model.name} on {hw.name} ({hw.nodes * hw.gpus_per_node} x {hw.gpu.name}), "
             f"target={req.target.name}, workload={req.workload.name}")

    decided = {d.field: d for d in compiled.decisions}  # a rule that explains a field comes after the search's
    _decisions(console, f"Plan: {title}", [(key, _fmt(_plan_value(plan, key, value)),
                                            decided[key].by if key in decided else "",
                                            decided[key].why if key in decided else "")
                                           for key, value in plain(plan).items()])

    m = Table(title="Memory per GPU (most loaded rank)", box=box.SIMPLE, title_justify="left")
    m.add_column("")
    m.add_column("GiB", justify="right")
    m.add_column("share of usable", justify="right")
    usable = mem.usable_gib or 1.0
    for label, value in (("weights", mem.weights_gib), ("activations (profiling peak)", mem.activations_gib),
                         ("runtime (workspaces, CUDA graphs)", mem.runtime_overhead_gib),
                         ("KV cache", mem.kv_cache_gib)):
        m.add_row(label, f"{value:.2f}", f"{value / usable:.0%}")
    m.add_row("usable of total", f"{mem.usable_gib:.2f} / {mem.total_gib:.2f}", "")
    console.print(m)
    dp = plan.data_parallel
    where = "per replica" if dp == 1 else f"per data-parallel rank, {dp} ranks per replica"
    console.print(f"KV cache: {mem.kv_cache_tokens:,} tokens {where} ({mem.kv_bytes_per_token:,.0f} bytes "
                  f"per token per GPU, blocks of {mem.block_size}); {mem.max_concurrency_at_max_len:.1f} "
                  f"requests of max_model_len {plan.max_model_len:,} at once" + (" on each" if dp > 1 else "") + ".")
    if compiled.prediction is not None:
        _prediction(compiled.prediction, console)
    if plan.autoscaling:
        _bands(plan.autoscaling, console)
    if compiled.alternatives:
        a = Table(title="Considered and rejected", box=box.SIMPLE, title_justify="left")
        a.add_column("candidate", overflow="fold")
        a.add_column("layout")
        a.add_column("rejected because", overflow="fold", ratio=1)
        for alt in compiled.alternatives:
            a.add_row(alt.summary, alt.layout, alt.rejected_because)
        console.print(a)
    if compiled.pareto_front:
        f = Table(title="Pareto front (analytic): output tok/s per GPU against TPOT", box=box.SIMPLE,
                  title_justify="left")
        for col in ("candidate", "TPOT ms", "TTFT ms", "tok/s/GPU", "meets"):
            f.add_column(col, justify="left" if col == "candidate" else "right",
                         overflow="fold", ratio=1 if col == "candidate" else None)
        for pt in compiled.pareto_front:
            f.add_row(pt.summary, _fmt(pt.tpot_ms), _fmt(pt.ttft_ms), _fmt(pt.output_tok_s_per_gpu),
                      "yes" if pt.meets_target else "no")
        console.print(f)
    for note in compiled.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    if saved_to:
        console.print(f"plan written to {saved_to}")


def _bands(rules, console: Console) -> None:
    b = Table(title="Autoscaling: replicas per request-rate band (target.request_rate_range)", box=box.SIMPLE,
              title_justify="left")
    for col in ("pool", "req/s from", "to", "replicas", "one replica sustains"):
        b.add_column(col, justify="left" if col == "pool" else "right")
    for r in rules:
        for band in r.bands:
            b.add_row(r.pool, f"{band.low_rps:,.2f}", f"{band.high_rps:,.2f}", str(band.replicas),
                      f"{r.replica_rps:,.2f} req/s")
    console.print(b)


def _plan_value(plan, key: str, value):
    """A plan field as the table shows it: the disaggregation and autoscaling objects in a line."""
    if key == "disaggregation" and plan.disaggregation is not None:
        return plan.disaggregation.summary()
    if key == "autoscaling" and plan.autoscaling:
        return ", ".join(f"{r.pool} {r.min_replicas}-{r.max_replicas}" for r in plan.autoscaling)
    return value


def _decisions(console: Console, title: str, rows: list[tuple[str, str, str, str]]) -> None:
    """Each plan field with its value and the decision behind it (by, why): a table, or a record per field."""
    if console.width < WIDE:
        console.print(Text(title, style="italic"))
        for key, value, by, why in rows:
            _record(console, Text.assemble(("  " + key, "bold"), f" = {value}", ("   " + by if by else "", "cyan")),
                    [("", why)])
        console.print()
        return
    t = Table(title=title, box=box.SIMPLE_HEAVY, show_header=True, title_justify="left")
    t.add_column("field", no_wrap=True)
    t.add_column("value", justify="right", overflow="fold")
    t.add_column("by", overflow="fold")
    t.add_column("why", overflow="fold", ratio=1)
    for row in rows:
        t.add_row(*row)
    console.print(t)


def _prediction(pred, console: Console) -> None:
    p = Table(title=f"Prediction ({pred.load.describe()})", box=box.SIMPLE, title_justify="left")
    p.add_column("metric")
    p.add_column("value", justify="right", overflow="fold")
    dists = (("ttft_ms", pred.ttft_ms), ("tpot_ms", pred.tpot_ms), ("e2e_latency_ms", pred.e2e_latency_ms)) + \
        ((("kv_transfer_ms", pred.kv_transfer_ms),) if pred.kv_transfer_ms is not None else ())
    for label, dist in dists:
        p.add_row(label, ", ".join([f"p{q:g} {_fmt(v)}" for q, v in dist.quantiles] + [f"mean {_fmt(dist.mean)}"]))
    for label, value in (("output_throughput_tok_s", pred.output_throughput_tok_s),
                         ("output_throughput_tok_s_per_gpu", pred.output_throughput_tok_s_per_gpu),
                         ("request_throughput_rps", pred.request_throughput_rps), ("concurrency", pred.concurrency),
                         ("cost_usd_per_mtok", pred.cost_usd_per_mtok), ("meets_target", pred.meets_target),
                         ("binding_constraint", pred.binding_constraint), ("percentile", pred.percentile)):
        p.add_row(label, _fmt(value))
    console.print(p)


def compare(plans: list, console: Optional[Console] = None) -> None:
    """One side-by-side table for the plans of a Hydra multirun sweep: (Request, CompiledPlan) pairs; one column
    per plan on a console too narrow for one row per plan."""
    console = console or _console(200)
    labels = ("model", "hw", "target", "TP", "PP", "replicas", "quant", "KV dtype", "max seqs", "weights GiB/GPU",
              "KV tokens", "tok/s/GPU", "TTFT p90 ms", "TPOT p90 ms", "$/Mtok", "meets")
    rows = [_compared(req, c) for req, c in plans]
    t = Table(title="Sweep: plans side by side", box=box.SIMPLE_HEAVY, title_justify="left")
    if console.width >= 150:
        for col in labels:
            t.add_column(col, justify="right" if col not in ("model", "hw", "target") else "left", overflow="fold")
        for row in rows:
            t.add_row(*row)
    else:
        t.add_column("", no_wrap=True)
        for i in range(len(rows)):
            t.add_column(f"#{i + 1}", justify="right", overflow="fold")
        for j, label in enumerate(labels):
            t.add_row(label, *(row[j] for row in rows))
    console.print(t)


def hardware(options, percentile: float, shown: int = 6, console: Optional[Console] = None) -> None:
    """hw=any: the hardware options ranked (the chosen one first), each with its layout, cost and prediction."""
    console = console or _console(200)
    t = Table(title="Hardware considered (hw=any): cheapest that meets the target first", box=box.SIMPLE,
              title_justify="left")
    for col in ("GPU", "GPUs", "layout", "$/hour", "$/Mtok", f"TTFT p{percentile:g}", f"TPOT p{percentile:g}",
                "meets"):
        t.add_column(col, justify="left" if col in ("GPU", "layout") else "right", overflow="fold")
    planned = [o for o in options if o.compiled is not None]
    for o in planned[:shown]:
        p = o.compiled.prediction
        t.add_row(o.hw.gpu.name, str(o.gpus), o.layout(), f"{o.usd_per_hour:,.2f}",
                  "-" if o.usd_per_mtok is None else f"{o.usd_per_mtok:,.3f}", _fmt(p.ttft_ms.at(percentile)),
                  _fmt(p.tpot_ms.at(percentile)), "yes" if o.meets else "no")
    console.print(t)
    unplanned = [o for o in options if o.compiled is None]
    if unplanned:
        console.print(f"not planned: {len(unplanned)} option(s), e.g. " +
                      "; ".join(escape(f"{o.hw.name}: {o.why}") for o in unplanned[:3]))


def _compared(req, c) -> tuple[str, ...]:
    p, m, pr = c.plan, c.memory, c.prediction
    cost = pr.cost_usd_per_mtok if pr else None
    return (req.model.name, req.hw.name, req.target.name, str(p.tensor_parallel), str(p.pipeline_parallel),
            str(p.replicas), p.quantization.value, p.kv_cache_dtype.value, f"{p.max_num_seqs:,}",
            f"{m.weights_gib:.1f}", f"{m.kv_cache_tokens:,}", _fmt(pr.output_throughput_tok_s_per_gpu if pr else None),
            _fmt(_p90(pr.ttft_ms) if pr else None), _fmt(_p90(pr.tpot_ms) if pr else None),
            "-" if cost is None else f"{cost:.2f}", _fmt(pr.meets_target if pr else None))


def _p90(dist):
    return dict(dist.quantiles).get(90.0)


def _effects(rule) -> str:
    t = rule.then
    parts = [f"{k} only {v}" for k, v in t.allow.items()] + [f"{k} not {v}" for k, v in t.exclude.items()]
    parts += [f"prefer {k} {v}" for k, v in t.prefer.items()] + [f"{k}={v}" for k, v in t.set.items()]
    if t.warn:
        parts.append("warns")
    if rule.decides:
        parts.append(f"explains {', '.join(rule.decides)}")
    if rule.kind == "troubleshoot":
        parts = [r.says for r in rule.remedies]
    return "; ".join(parts)


def rules_table(rules, console: Optional[Console] = None) -> None:
    """action=rules: every rule with its condition, effect and source."""
    console = console or _console()
    title = f"{len(rules)} rules (conf/rules/*.yaml, plus rules.extra, minus rules.disable)"
    rows = [(r.id, str(r.priority), r.when if r.kind == "plan" else (" | ".join(r.match) or f"symptom {r.symptom}"),
             _effects(r), r.why, r.source) for r in sorted(rules, key=lambda r: (r.kind, r.id))]
    if console.width < WIDE:
        console.print(Text(title, style="italic"))
        for rid, prio, cond, effect, why, source in rows:
            _record(console, Text.assemble((rid, "bold"), f"  (priority {prio})"),
                    [("when: ", cond), ("then: ", effect), ("why: ", why), ("source: ", source)])
        return
    t = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for col in ("id", "prio", "when / match", "then", "why", "source"):
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*(escape(x) for x in row))
    console.print(t)


def explain(constraints, req, compiled, console: Optional[Console] = None) -> None:
    """action=explain: every plan rule, fired or not, in the order applied, then the plan."""
    console = console or _console()
    t = Table(title="Rules, in the order applied (priority, then file order)", box=box.SIMPLE, title_justify="left")
    for col in ("", "id", "prio", "what it did / why not"):
        t.add_column(col, overflow="fold", no_wrap=col == "id")  # ids stay whole; the detail wraps at spaces
    for e in constraints.trace:
        t.add_row("✔" if e.fired else "·", e.rule.id, str(e.rule.priority), escape(e.detail))
    console.print(t)
    c = Table(title="What the search may choose (most preferred first)", box=box.SIMPLE, title_justify="left")
    c.add_column("field")
    c.add_column("allowed")
    c.add_column("shaped by", overflow="fold")
    for f, values in constraints.choices.items():
        shaped_by = dict.fromkeys(r.id for r in constraints.choice_rules[f])  # a rule that shaped it twice: once
        c.add_row(f, ", ".join(values) or "(none)", " ".join(shaped_by))
    console.print(c)
    show(req, compiled, console)


def preflight(verdict, console: Optional[Console] = None) -> None:
    """action=preflight: nccl-tests' times at the plan's message sizes against the perf model's, and the verdict."""
    console = console or _console()
    t = Table(title=f"nccl-tests preflight ({verdict.group}): "
                    f"{'BREAKS THE PREDICTION' if verdict.breaks_prediction else 'prediction holds'}",
              box=box.SIMPLE_HEAVY, title_justify="left")
    for col in ("message bytes", "assumed us", "measured us", "ratio"):
        t.add_column(col, justify="right")
    for c in verdict.checks:
        t.add_row(f"{c.size_bytes:,}", f"{c.assumed_us:,.1f}", f"{c.measured_us:,.1f}", f"x{c.ratio:.2f}")
    console.print(t)
    console.print(verdict.why)


def diagnosis(found, path: str, console: Optional[Console] = None) -> None:
    """action=diagnose: the troubleshooting rules a log matched, with their remedies."""
    console = console or _console()
    if not found:
        console.print(f"{path}: no known symptom found (checked every troubleshooting rule; "
                      "`python -m planner action=rules` lists them).")
        return
    for d in found:
        console.print(f"[bold]{d.rule.id}[/] (line {d.line_no}): {escape(d.line)}")
        console.print(f"  why: {escape(d.rule.why)}")
        for r in d.rule.remedies:
            console.print(escape(f"  - {r.says}" + (f"  [{' '.join(r.overrides)}]" if r.overrides else "")))
        console.print(f"  source: {escape(d.rule.source)}")


def verdict(report, path, pngs, console: Optional[Console] = None) -> None:
    """The verification verdict: each SLO check, predicted vs measured, where the report and plots are."""
    console = console or _console()
    t = Table(title=f"Verification of {report.plan}: {'PASSED' if report.passed else 'TARGET MISSED'}",
              box=box.SIMPLE_HEAVY, title_justify="left")
    for col in ("check", "measured", "target", ""):
        t.add_column(col, justify="right" if col in ("measured", "target") else "left")
    for c in report.checks:
        t.add_row(c.metric, f"{c.measured:,.2f}", f"{c.limit:,.2f}", "pass" if c.passed else "MISS")
    s = report.summary
    t.add_row("completed / failed", f"{s.get('completed', 0)} / {s.get('failed', 0)}", "", "")
    t.add_row("output tokens/s", f"{s.get('output_throughput', 0):,.1f}", "", "")
    q = report.quality
    if q:
        acc = q.get("accuracy") or {}
        base = q.get("baseline") or {}
        t.add_row(f"accuracy ({acc.get('task', 'lm-eval')})",
                  f"{acc['value']:.4f}" if "value" in acc else "error",
                  f">= {base['value'] - q['max_accuracy_drop']:.4f}" if "value" in base else "",
                  "pass" if q.get("passed") else "MISS")
    console.print(t)
    if q:
        console.print(f"accuracy gate: {q.get('why')}")
    if report.predicted_vs_measured:
        p = Table(title="Predicted vs measured (one server)", box=box.SIMPLE, title_justify="left")
        scaled = all("at_host_speed" in r for r in report.predicted_vs_measured)
        for col in ("metric", "predicted", "measured", "error") + (("at host speed", "error") if scaled else ()):
            p.add_column(col, justify="right" if col != "metric" else "left")
        for r in report.predicted_vs_measured:
            p.add_row(r["metric"], f"{r['predicted']:,.2f}", f"{r['measured']:,.2f}", f"{r['error_pct']:+.1f}%",
                      *((f"{r['at_host_speed']:,.2f}", f"{r['error_at_host_speed_pct']:+.1f}%") if scaled else ()))
        console.print(p)
    kv = report.server
    if kv.get("host_speed"):
        console.print(f"Host speed: {kv['host_speed']['why']} (report.json server.host_speed; a virtual core's speed "
                      "varies with what else its physical core runs).")
    host = kv.get("host") or {}
    from planner.hostload import NOTABLE_CORES

    if host.get("other_processes_cores", 0.0) > NOTABLE_CORES:
        console.print(f"[yellow]Other processes took {host['other_processes_cores']:.2f} of this host's "
                      f"{host['host_cores']} cores during the run (the run itself {host['run_cores']:.2f}): what was "
                      "measured is not this plan alone (report.json server.host).[/]")
    if host.get("steal_cores", 0.0) > NOTABLE_CORES:
        console.print(f"[yellow]The hypervisor took {host['steal_cores']:.2f} of this virtual machine's "
                      f"{host['host_cores']} cores during the run (steal time): what was measured is not this plan "
                      "alone (report.json server.host).[/]")
    if kv.get("kv_cache_tokens_reported") is not None:
        console.print(f"KV cache: server reports {kv['kv_cache_tokens_reported']:,} tokens, plan said "
                      f"{kv['kv_cache_tokens_planned']:,}.")
    console.print(f"report: {path}; plots: {', '.join(str(x) for x in pngs)}")

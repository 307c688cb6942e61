"""Verify a plan against a running server: load it as the plan's workload says, check the target, compare the
measurements with the plan's prediction, and write report.json (keys as `vllm bench serve` where they overlap).

Schema of report.json:
    plan: the plan file's name; endpoint; target: {name, percentile, ttft_ms, tpot_ms, e2e_latency_ms, ...}
    load: the LoadSpec used (no secrets); summary: LoadResult.summary() (vllm bench serve keys)
    load: also `offered`: the load the plan was predicted under (per replica), which is what was sent
    checks: [{metric, measured, limit, passed}]   # one per bounded SLO, at the target's percentile (slo.check)
    binding_constraint: the missed SLO furthest from its limit (slo.binding), or null
    predicted_vs_measured: [{metric, predicted, measured, error_pct[, at_host_speed, error_at_host_speed_pct]}]
        at_host_speed: on a CPU host under a closed loop, the prediction at the speed the host ran during the run
        (server.host_speed); see host_speed()
    server.host_speed: {run_mops, calibrated_mops, ratio, why}: the host's CPython speed sampled during the run over
        the speed sampled while the calibration was measured (CPU hosts; planner/hostload.py SpeedSampler)
    server: {kv_cache_tokens_reported, kv_cache_tokens_planned, ready_s}; remediation: [{what, why}]
    server_metrics: peaks of vLLM's running/waiting requests and KV usage over the run (/metrics scrapes)
    streaming: {mean_tokens_per_chunk, one_chunk_requests, multi_token_requests, merged, warning}: whether the
               answers came token by token or merged into lumps by an API server that fell behind (then TPOT/ITL
               as measured are 0 and TTFT is the time to the whole answer; the warning says so and what to do)
    sweep: [{request_rate, goodput, output_throughput, passed}] when sweep=true asked for a rate sweep
    quality: with quality=true, the accuracy gate (planner/quality.py): {accuracy: {task, metric, value, stderr,
             samples, model, endpoint, lm_eval_version, argv}, baseline (the same, or null: this plan is the
             baseline), max_accuracy_drop, drop, passed, why}; when lm-eval could not score the server: {passed:
             false, why, error, ...}
    profile: with profile=nsys, {tool: nsys, report: profile/<name>.nsys-rep (relative to report.json), written,
             bytes, max_iterations, view}
    passed: every check passed, no request failed, and the accuracy gate (if asked) passed
    complete: true once the run finished. A run writes {"complete": false, "passed": false, "plan", "why"} here when
              it starts (mark_started: the previous run's report and plots are gone), and the whole report only at
              the end, so a run that was interrupted or failed never leaves an earlier `passed: true` behind.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from planner import loadgen, slo
from planner.plan import CompiledPlan, Prediction
from planner.loadresult import Streaming
from planner.specs import Request

logger = logging.getLogger("planner")


@dataclass(frozen=True)
class Check:
    metric: str
    measured: float
    limit: float
    passed: bool


@dataclass(frozen=True)
class Report:
    plan: str
    endpoint: str
    target: dict
    load: dict
    summary: dict
    checks: tuple
    predicted_vs_measured: tuple
    server: dict = field(default_factory=dict)
    remediation: tuple = ()
    server_metrics: dict = field(default_factory=dict)
    sweep: tuple = ()  # SweepPoint rows when a rate sweep ran
    binding_constraint: Optional[str] = None  # the SLO furthest from its limit, when one was missed
    quality: dict = field(default_factory=dict)  # the accuracy gate's verdict (planner/quality.py), when asked
    profile: dict = field(default_factory=dict)  # profile=nsys: the .nsys-rep beside report.json (planner/profile.py)
    streaming: Optional[Streaming] = None  # tokens per chunk: whether TPOT/ITL were measurable at the client

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and self.summary.get("failed", 0) == 0 and \
            self.summary.get("completed", 0) > 0 and self.quality.get("passed", True)

    def to_json(self) -> dict:
        d = asdict(self)
        d["checks"] = [asdict(c) for c in self.checks]
        d["sweep"] = [asdict(p) for p in self.sweep]
        if self.streaming is not None:
            d["streaming"].update(merged=self.streaming.merged, warning=self.streaming.warning())
        d["passed"] = self.passed
        d["complete"] = True
        return d


def load_spec(req: Request, compiled: CompiledPlan, endpoint: str, model_name: str,
              num_prompts: Optional[int] = None, time_limit_s: float = 300.0) -> loadgen.LoadSpec:
    """The load the plan was predicted under, against one server (this server is one replica): the prediction's
    offered load (slo.offered), the workload's lengths, the target's SLOs for goodput. A closed loop settles
    (LoadSpec.settle = its concurrency): the measured requests run in a full loop, as planner/predict.py simulates."""
    wl, target = req.workload, req.target
    offered = compiled.prediction.load if compiled.prediction is not None else \
        slo.offered(req, compiled.plan.replicas, compiled.plan.max_num_seqs, compiled.plan.data_parallel)
    return loadgen.LoadSpec(
        base_url=endpoint.rstrip("/"), model=model_name, input_len=wl.input_len, output_len=wl.output_len,
        num_prompts=num_prompts or wl.num_prompts, request_rate=offered.request_rate_rps, burstiness=wl.burstiness,
        max_concurrency=offered.concurrency, range_ratio=wl.range_ratio, shared_prefix_len=wl.shared_prefix_len,
        num_prefixes=wl.num_prefixes,
        settle=int(offered.concurrency) if offered.concurrency and not offered.request_rate_rps else 0,
        vocab_size=req.model.vocab_size, timeout_s=time_limit_s, slo_ttft_ms=target.ttft_ms,
        slo_tpot_ms=target.tpot_ms, slo_e2el_ms=target.e2e_latency_ms)


_SERIES = {"ttft_ms": "ttft", "tpot_ms": "tpot", "e2e_latency_ms": "e2el"}


def observed(result, spec: loadgen.LoadSpec, percentile: float, replicas: int) -> slo.Observed:
    """What one server's run measured, at the target's percentile, scaled to the deployment (x replicas), with an
    open loop's rate as the rate the server sustained (departures vs arrivals)."""
    if not any(r.ok for r in result.records):
        return slo.Observed()
    summary = result.summary()
    served = summary["request_throughput"] if not spec.request_rate else sustained(spec, result)
    return slo.Observed(**{metric: result.percentile_ms(name, percentile) for metric, name in _SERIES.items()},
                        request_rate_rps=served * replicas,
                        output_throughput_tok_s=summary["output_throughput"] * replicas)


def checks(target, obs: slo.Observed) -> tuple[Check, ...]:
    """Each SLO the target bounds, at its percentile (slo.check: the one verdict planning uses too)."""
    return tuple(Check(_label(c.metric, target.percentile), float(c.observed), c.limit, bool(c.passed))
                 for c in slo.check(target, obs))


def _label(metric: str, percentile: float) -> str:
    """A check's name in report.json: latencies with their percentile as `vllm bench serve` keys them."""
    return f"p{percentile:g}_{_SERIES[metric]}_ms" if metric in _SERIES else metric


def host_speed(req: Request, spec: loadgen.LoadSpec, host: dict) -> Optional[dict]:
    """On a CPU host: how fast the worker's core ran during the load (hostload.SpeedSampler's effective speed,
    `host["cpu_speed"]`) against how fast it ran while the calibration behind the prediction was measured (the
    calibration's `sampled_speed_mops`, moved to this host by its CPython speed: Calibration.on_host). A virtual
    core's speed changes by 2x within minutes (planner/hostload.py), and the worker's step follows it. Under a closed
    loop (a fixed concurrency, no think time) every time then stretches by 1 / ratio and the throughput shrinks by
    the ratio; the worker's step is most of a CPU step, and the scheduler and front end on the other core, whose speed
    is not sampled, are taken to move alike (an approximation). None on a GPU host, without samples or a calibrated
    speed; `ratio` None under an open loop (a fixed arrival rate does not slow down with the host: the queue
    changes, not only the times)."""
    from planner import calibration
    from planner.enums import DeviceKind

    run = (host.get("cpu_speed") or {}).get("effective_mops")
    if req.hw.gpu.kind is not DeviceKind.cpu or not run:
        return None
    gpu = req.hw.gpu
    cal = calibration.calibration(gpu.name).on_host(gpu.interpreter_speed_mops)
    if not cal.sampled_speed_mops:
        return None
    closed = spec.max_concurrency is not None and spec.request_rate is None
    ratio = run / cal.sampled_speed_mops
    return {"run_mops": run, "calibrated_mops": round(cal.sampled_speed_mops, 2),
            "ratio": round(ratio, 3) if closed else None,
            "why": f"the worker's core ran the speed probe at {run:g} M iterations/s (effective, over the run); the "
                   f"prediction assumed {cal.sampled_speed_mops:.2f} (the calibration's runs, moved to this host by "
                   f"its CPython speed): {ratio:.2f}x"
                   + ("" if closed else "; an open loop's prediction does not scale with it, not adjusted")}


def compare(summary: dict, prediction: Optional[Prediction], replicas: int, speed: Optional[float] = None) -> tuple:
    """Predicted vs measured, one server (a replica): medians and p90s of latencies, output throughput. `speed`
    (host_speed's ratio): each row also says the prediction at that speed (times / speed, throughput x speed)."""
    if prediction is None:
        return ()
    rows = []
    for metric, short in _SERIES.items():
        dist = dict(getattr(prediction, metric).quantiles)
        for q in (50.0, 90.0):
            measured = summary.get(f"{'median' if q == 50 else 'p90'}_{short}_ms")
            pred = dist.get(q)
            if measured and pred:
                rows.append(_row(f"p{q:g}_{short}_ms", pred, measured, 1 / speed if speed else None))
    if prediction.output_throughput_tok_s and summary.get("output_throughput"):
        rows.append(_row("output_throughput", prediction.output_throughput_tok_s / max(1, replicas),
                         summary["output_throughput"], speed))
    return tuple(rows)


def _row(metric: str, pred: float, measured: float, scale: Optional[float]) -> dict:
    row = {"metric": metric, "predicted": round(pred, 3), "measured": round(measured, 3),
           "error_pct": round((pred - measured) / measured * 100, 1)}
    if scale:
        row |= {"at_host_speed": round(pred * scale, 3),
                "error_at_host_speed_pct": round((pred * scale - measured) / measured * 100, 1)}
    return row


def build(req: Request, compiled: CompiledPlan, plan_name: str, endpoint: str, spec: loadgen.LoadSpec, result,
          server: dict, remediation: tuple = ()) -> Report:
    from planner.document import plain

    summary = result.summary()
    replicas = compiled.plan.replicas
    obs = observed(result, spec, req.target.percentile, replicas)
    found = checks(req.target, obs)
    worst = slo.binding(slo.violations(slo.check(req.target, obs)))
    load = {k: v for k, v in asdict(spec).items() if k != "api_key_env"}
    if compiled.prediction is not None:
        load["offered"] = plain(compiled.prediction.load)  # the load the plan was predicted under, per replica
    speed = host_speed(req, spec, server.get("host") or {})
    if speed:
        server = server | {"host_speed": speed}
    streaming = result.streaming()
    if streaming.merged:
        logger.warning("%s", streaming.warning())
    return Report(streaming=streaming, plan=plan_name, endpoint=endpoint, target=plain(req.target), load=load, summary=summary,
                  checks=found, predicted_vs_measured=compare(summary, compiled.prediction, replicas,
                                                                (speed or {}).get("ratio")),
                  server=server, remediation=remediation, server_metrics=server_metrics(result),
                  binding_constraint=slo.describe(worst, req.target.percentile))


def sustained(spec: loadgen.LoadSpec, result) -> Optional[float]:
    """Requests/s this server sustained under an open loop (None for a closed loop)."""
    if not spec.request_rate:
        return None
    from planner.simulate import kept_up

    sent = [r.sent_s for r in result.records]
    done = [r.sent_s + r.e2e_s for r in result.records]
    return spec.request_rate * kept_up(sent, done)


def server_metrics(result) -> dict:
    """The server's own view during the run (Prometheus /metrics scrapes): peaks of running and waiting requests
    and of KV-cache usage, and preemptions counted over the run."""
    series = list(result.metrics_series)
    if not series:
        return {}
    out = {}
    for name in {k for s in series for k in s.values}:
        values = [s.values[name] for s in series if name in s.values]
        key = name.replace("vllm:", "")
        out[f"{key}_max"] = round(max(values), 4)
        if name.endswith("_total"):
            out[f"{key}_delta"] = round(values[-1] - values[0], 4)
    out["samples"] = len(series)
    return out


@dataclass(frozen=True)
class SweepPoint:
    request_rate: float
    goodput: float
    output_throughput: float
    passed: bool


def sweep(spec: loadgen.LoadSpec, target, rates: list[float]) -> tuple[Optional[SweepPoint], tuple]:
    """Raise the request rate step by step; the best point is the highest goodput whose checks still pass (the
    run stops at the first rate that misses the target: beyond it the server is saturated)."""
    from dataclasses import replace, replace as with_

    points, best = [], None
    for rate in sorted(rates):
        res = loadgen.run_sync(with_(spec, request_rate=rate, max_concurrency=None, settle=0))
        summary = res.summary()
        slos = replace(target, min_request_rate=None)  # the sweep itself looks for the rate
        ok = all(c.passed for c in checks(slos, observed(res, spec, target.percentile, 1))) and \
            summary.get("failed", 0) == 0 and summary.get("completed", 0) > 0
        point = SweepPoint(rate, float(summary.get("request_goodput") or 0.0), float(summary["output_throughput"]),
                           ok)
        points.append(point)
        if ok and (best is None or point.goodput > best.goodput):
            best = point
        if not ok:
            break
    return best, tuple(points)


def write(report: Report, outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "report.json"
    path.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    return path


def mark_started(outdir: Path, plan_name: str) -> Path:
    """At the start of a run: remove the previous run's plots and leave report.json saying 'not complete'."""
    outdir.mkdir(parents=True, exist_ok=True)
    for png in outdir.glob("*.png"):  # planner/plots.py's plots; nothing else in the folder is a PNG
        png.unlink()
    path = outdir / "report.json"
    path.write_text(json.dumps({"plan": plan_name, "complete": False, "passed": False,
                                "why": "a run started here and has not finished (interrupted, or it failed before "
                                       "measuring: see the planner's error and server.log)"}, indent=2) + "\n")
    return path

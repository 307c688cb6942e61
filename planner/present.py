"""Show a plan document to a person: rich tables of the plan, its memory and its decisions (stdout)."""

from typing import Optional

from rich import box
from rich.console import Console
from rich.table import Table


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


def _console() -> Console:
    """stdout console; wide enough for the why column when stdout is a file or pipe (rich defaults to 80)."""
    import sys

    return Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def show(doc: dict, console: Optional[Console] = None, saved_to: Optional[str] = None) -> None:
    console = console or _console()
    req, plan, mem = doc["request"], doc["plan"], doc["memory"]
    hw = req["hw"]
    title = (f"{req['model']['name']} on {hw['name']} ({hw['nodes'] * hw['gpus_per_node']} x {hw['gpu']['name']}), "
             f"target={req['target']['name']}, workload={req['workload']['name']}")

    t = Table(title=f"Plan: {title}", box=box.SIMPLE_HEAVY, show_header=True, title_justify="left")
    t.add_column("field")
    t.add_column("value", justify="right")
    t.add_column("by")
    t.add_column("why", overflow="fold")
    decided = {d["field"]: d for d in doc["decisions"]}
    for key, value in plan.items():
        d = decided.get(key, {})
        t.add_row(key, _fmt(value), d.get("by", ""), d.get("why", ""))
    console.print(t)

    m = Table(title="Memory per GPU (most loaded rank)", box=box.SIMPLE, title_justify="left")
    m.add_column("")
    m.add_column("GiB", justify="right")
    m.add_column("share of usable", justify="right")
    usable = mem["usable_gib"] or 1.0
    for label, key in (("weights", "weights_gib"), ("activations (profiling peak)", "activations_gib"),
                       ("runtime (workspaces, CUDA graphs)", "runtime_overhead_gib"), ("KV cache", "kv_cache_gib")):
        m.add_row(label, f"{mem[key]:.2f}", f"{mem[key] / usable:.0%}")
    m.add_row("usable of total", f"{mem['usable_gib']:.2f} / {mem['total_gib']:.2f}", "")
    console.print(m)
    console.print(f"KV cache: {mem['kv_cache_tokens']:,} tokens per replica ({mem['kv_bytes_per_token']:,.0f} bytes "
                  f"per token per GPU, blocks of {mem['block_size']}); {mem['max_concurrency_at_max_len']:.1f} "
                  f"requests of max_model_len {plan['max_model_len']:,} at once.")

    if doc.get("prediction"):
        p = Table(title="Prediction", box=box.SIMPLE, title_justify="left")
        p.add_column("metric")
        p.add_column("value", justify="right")
        for k, v in doc["prediction"].items():
            p.add_row(k, _fmt(v) if not isinstance(v, dict) else ", ".join(f"{a} {_fmt(b)}" for a, b in v.items()))
        console.print(p)

    if doc.get("alternatives"):
        a = Table(title="Considered and rejected", box=box.SIMPLE, title_justify="left")
        a.add_column("candidate")
        a.add_column("rejected because", overflow="fold")
        for alt in doc["alternatives"]:
            a.add_row(alt["summary"], alt["rejected_because"])
        console.print(a)
    for note in doc.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    if saved_to:
        console.print(f"plan written to {saved_to}")


def compare(docs: list[dict], console: Optional[Console] = None) -> None:
    """One side-by-side table for the plans of a Hydra multirun sweep."""
    console = console or _console()
    t = Table(title="Sweep: plans side by side", box=box.SIMPLE_HEAVY, title_justify="left")
    for col in ("model", "hw", "target", "TP", "PP", "replicas", "quant", "KV dtype", "max seqs",
                "weights GiB/GPU", "KV GiB/GPU", "KV tokens"):
        t.add_column(col, justify="right" if col not in ("model", "hw", "target") else "left")
    for d in docs:
        r, p, m = d["request"], d["plan"], d["memory"]
        t.add_row(r["model"]["name"], r["hw"]["name"], r["target"]["name"], str(p["tensor_parallel"]),
                  str(p["pipeline_parallel"]), str(p["replicas"]), p["quantization"], p["kv_cache_dtype"],
                  f"{p['max_num_seqs']:,}", f"{m['weights_gib']:.1f}", f"{m['kv_cache_gib']:.1f}",
                  f"{m['kv_cache_tokens']:,}")
    console.print(t)

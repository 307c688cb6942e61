"""search_speed's queries side by side with NVIDIA's aiconfigurator (aggregated mode, same ISL/OSL/SLOs, same engine):
wall times, configurations per second, and each tool's choice and prediction.

aiconfigurator lives in its own virtualenv (it pins its own numpy/pandas):
    python3.11 -m venv /tmp/aicvenv && /tmp/aicvenv/bin/pip install aiconfigurator
Run: python benchmarks/aiconfigurator_compare.py --aic-python /tmp/aicvenv/bin/python  (or AIC_PYTHON=...)
"""

import argparse
import csv
import functools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import search  # noqa: E402
from planner.errors import NoFeasiblePlan  # noqa: E402
from planner.plan import CompiledPlan  # noqa: E402
from planner.specs import Request  # noqa: E402

# Our catalog name -> the HF config aiconfigurator bundles (aiconfigurator_core/model_configs/; it cannot download
# here). Llama 3 and 3.1 share every shape it reads (layers, heads, KV heads, hidden, intermediate, vocab); only
# RoPE scaling and the context length differ.
AIC_MODELS = {"llama3-70b": "meta-llama/Meta-Llama-3.1-70B", "llama3-8b": "meta-llama/Meta-Llama-3.1-8B",
              "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B", "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1"}
# Our GPU name -> aiconfigurator's system (aiconfigurator_core/systems/*.yaml).
AIC_SYSTEMS = {"h100-sxm": "h100_sxm", "h200": "h200_sxm", "a100-80g": "a100_sxm", "b200": "b200_sxm",
               "l40s": "l40s", "l4": "l4", "h100-pcie": "h100_pcie"}
AIC_BACKENDS = {"vllm", "trtllm", "sglang"}
_PROBE = ("import importlib.metadata as m, importlib.util as u; print(m.version('aiconfigurator')); "
          "print(u.find_spec('aiconfigurator_core').submodule_search_locations[0])")


class Ours(NamedTuple):
    """One search_speed row: the query, its request, and what search_speed measured."""

    query: list[str]
    request: Request
    candidates_per_s: float
    compile_s: float  # median compile_plan wall time, in process


@dataclass(frozen=True)
class Aic:
    """An installed aiconfigurator: its console script, version, and the HF configs it bundles."""

    cli: Path
    version: str
    model_configs: Path


@dataclass(frozen=True)
class AicRun:
    wall_s: float  # the CLI as a user runs it (fresh process, default log level, no --save-dir)
    search_s: Optional[float]  # its own "All experiments completed in" time
    evaluated: int  # run_agg points it logged at DEBUG (one per parallel x batch x ctx_tokens point)
    best: dict  # rank 1 of agg/best_config_topn.csv


@functools.cache
def locate(python: Optional[str] = None) -> Aic:
    """aiconfigurator beside `python` (default $AIC_PYTHON); LookupError says why not."""
    python = python or os.environ.get("AIC_PYTHON")
    if not python:
        raise LookupError("no aiconfigurator: pass --aic-python or set AIC_PYTHON to its virtualenv's python")
    cli = Path(python).with_name("aiconfigurator")
    probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True) if cli.exists() else None
    if probe is None or probe.returncode:
        raise LookupError(f"no aiconfigurator beside {python} ({cli} missing or not importable)")
    version, core = probe.stdout.split()
    return Aic(cli, version, Path(core) / "model_configs")


def aic_args(aic: Aic, req: Request, backend: str, model_dir: Path) -> list[str]:
    """`aiconfigurator cli default` for `req`: aggregated serving only, our ISL/OSL (means), prefix and SLOs."""
    t, wl = req.target, req.workload
    slos = [(flag, v) for flag, v in (("--ttft", t.ttft_ms), ("--tpot", t.tpot_ms),
                                      ("--request-latency", t.e2e_latency_ms)) if v is not None]
    return [str(aic.cli), "cli", "default", "--model-path", str(model_dir), "--system", AIC_SYSTEMS[req.hw.gpu.name],
            "--total-gpus", str(req.hw.total_gpus), "--backend", backend, "--serving-mode", "agg",
            "--isl", str(wl.input_len), "--osl", str(wl.output_len), "--prefix", str(wl.shared_prefix_len),
            *(s for flag, v in slos for s in (flag, f"{v:g}")), "--no-color"]


def run_aic(aic: Aic, req: Request, backend: str) -> AicRun:
    """Time the CLI once as a user runs it, then once more at DEBUG with --save-dir to count and read its choice."""
    with tempfile.TemporaryDirectory() as tmp:
        # A local config.json: aiconfigurator only serves bundled configs for ids on its own list (Mixtral is not).
        model_dir = Path(tmp, "model")
        model_dir.mkdir()
        hf_id = AIC_MODELS[req.model.name]
        shutil.copy(aic.model_configs / f"{hf_id.replace('/', '--')}_config.json", model_dir / "config.json")
        args = aic_args(aic, req, backend, model_dir)
        t0 = time.perf_counter()
        timed = subprocess.run(args, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        debug = subprocess.run([*args, "--log-level", "DEBUG", "--save-dir", tmp], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=600)
        if timed.returncode or debug.returncode:
            raise RuntimeError((timed.stderr or debug.stdout).strip().splitlines()[-1])
        search_s = re.search(r"All experiments completed in ([\d.]+) seconds", timed.stdout + timed.stderr)
        found = next(Path(tmp).glob("**/agg/best_config_topn.csv"), None)
        if found is None:
            raise RuntimeError("no aggregated configuration met the SLOs")
        with found.open() as f:
            best = next(csv.DictReader(f))
    return AicRun(wall, search_s and float(search_s[1]), debug.stdout.count("output_throughput: "), best)


def our_choice(req: Request) -> CompiledPlan:
    try:
        return search.compile_plan(req)
    except NoFeasiblePlan as e:  # the closest plan still says what the search chose
        return e.closest


def cli_wall_s(query: list[str], runs: int = 3) -> float:
    """Median wall time of `python -m planner <query> save=false`, as plan_speed.py measures it."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "planner", *query, "save=false"], cwd=ROOT, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def side_by_side(rows: list[Ours], aic: Optional[Aic] = None) -> None:
    aic = aic or locate()
    speed = Table(title=f"Search speed vs aiconfigurator {aic.version} (agg mode; ratio = aiconfigurator / ours)",
                  title_justify="left")
    for col in ("query", "ours compile_plan s", "ours CLI s", "ours cand/s", "aic CLI s", "aic search s",
                "aic configs", "aic configs/s", "ratio CLI", "ratio search"):
        speed.add_column(col, justify="left" if col == "query" else "right", no_wrap=col == "query")
    choice = Table(title="Chosen config and prediction (ours: p90 of the simulation; aic: its point estimate)",
                   title_justify="left")
    for col in ("query", "tool", "config", "tok/s/GPU", "TTFT ms", "TPOT ms"):
        choice.add_column(col, justify="right" if col.endswith(("GPU", "ms")) else "left", no_wrap=col == "query")
    for r in rows:
        name = " ".join(r.query)
        compiled = our_choice(r.request)
        p, pred = compiled.plan, compiled.prediction
        cli_s = cli_wall_s(r.query)
        choice.add_row(name, "ours", f"TP{p.tensor_parallel} PP{p.pipeline_parallel} x{p.replicas} "
                       f"seqs {p.max_num_seqs} {p.quantization.value}/{p.kv_cache_dtype.value} {p.backend.value}",
                       f"{pred['output_throughput_tok_s_per_gpu']:,.0f}", f"{pred['ttft_ms']['p90']:.0f}",
                       f"{pred['tpot_ms']['p90']:.1f}")
        unsupported = [f"{what} {v}" for what, v, known in (
            ("model", r.request.model.name, AIC_MODELS), ("gpu", r.request.hw.gpu.name, AIC_SYSTEMS),
            ("backend", p.backend.value, AIC_BACKENDS)) if v not in known]
        try:
            if unsupported:
                raise RuntimeError(f"not in aiconfigurator: {', '.join(unsupported)}")
            a = run_aic(aic, r.request, p.backend.value)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            speed.add_row(name, f"{r.compile_s:.3f}", f"{cli_s:.2f}", f"{r.candidates_per_s:,.0f}",
                          *["-"] * 6)
            choice.add_row(name, "aic", f"[red]{e}[/red]", "-", "-", "-")
            continue
        b = a.best
        search_txt = "-" if a.search_s is None else f"{a.search_s:.2f}"
        rate = "-" if not a.search_s else f"{a.evaluated / a.search_s:,.0f}"
        ratio_search = "-" if a.search_s is None else f"{a.search_s / r.compile_s:.1f}x"
        speed.add_row(name, f"{r.compile_s:.3f}", f"{cli_s:.2f}", f"{r.candidates_per_s:,.0f}", f"{a.wall_s:.2f}",
                      search_txt, f"{a.evaluated:,}", rate, f"{a.wall_s / cli_s:.1f}x", ratio_search)
        replicas = r.request.hw.total_gpus // int(b["num_total_gpus"])
        choice.add_row(name, "aic", f"{b['parallel']} x{replicas} bs {b['bs']} {b['gemm']}/{b['kvcache']} "
                       f"{b['backend']} {b['version']}", f"{float(b['tokens/s/gpu']):,.0f}",
                       f"{float(b['ttft']):.0f}", f"{float(b['tpot']):.1f}")
    console = Console(width=200)
    console.print(speed)
    console.print(choice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aic-python", help="python of the virtualenv with aiconfigurator (default: $AIC_PYTHON)")
    args = parser.parse_args()
    try:
        locate(args.aic_python)
    except LookupError as e:
        print(f"aiconfigurator side by side skipped: {e}")
        return
    if args.aic_python:
        os.environ["AIC_PYTHON"] = args.aic_python  # search_speed's own call finds it there
    import search_speed

    search_speed.main()


if __name__ == "__main__":
    main()

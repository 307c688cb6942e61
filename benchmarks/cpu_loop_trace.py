"""README's whole loop traced second by second: where a request's time to first token goes on a CPU host.

`python -m planner model=tiny-llama hw=cpu action=verify` measures time to first token hundreds of ms above the
plan's prediction while TPOT and throughput agree (docs/perf-model.md, 'Largest known misses'). This runs the same
server (with benchmarks/vllm_probe timing every engine step) under the same load as action=verify (the plan's
settled closed loop: planner/verify.py load_spec), and prints, per second of the run:
  - the engine's running batch (mean/min/max requests per step), the requests it admitted, its steps;
  - the CPU each process of the run used (API server, EngineCore, worker, this load generator) and the rest of the
    machine, from psutil: a process starved of CPU shows here;
then the time to first token as the client saw it against the server's own split (vLLM's Prometheus histograms,
differenced over the run: queue time in the scheduler, prefill time, time to first token in the API server).

Run: python benchmarks/cpu_loop_trace.py [--requests N]   (needs the cpu extra; about a minute on 2 cores)
"""

import argparse
import json
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_serve import _cpu, _roles, probed_server  # noqa: E402

SERVER_SPLIT = ("time_to_first_token", "request_queue_time", "request_prefill_time", "request_decode_time")


def server_seconds(base: str) -> dict[str, float]:
    """vLLM's request-timing histograms: {name_sum: s, name_count: n}, summed over label sets."""
    text = urllib.request.urlopen(base + "/metrics", timeout=60).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^vllm:([a-z_]+)_seconds_(sum|count)\{.*\} (\S+)$", line)
        if m and m.group(1) in SERVER_SPLIT:
            key = f"{m.group(1)}_{m.group(2)}"
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


class CpuSampler(threading.Thread):
    """Every `every` seconds: CPU seconds so far of each role's processes, this process, and the whole machine."""

    def __init__(self, roles: dict, every: float = 0.5):
        super().__init__(daemon=True)
        self.roles, self.every, self.rows, self.stop = roles, every, [], threading.Event()
        self.me = psutil.Process()

    def run(self) -> None:
        while not self.stop.is_set():
            m = psutil.cpu_times()
            self.rows.append({"t": time.perf_counter(), "machine": m.user + m.system + getattr(m, "nice", 0.0),
                              "steal": getattr(m, "steal", 0.0), "loadgen": _cpu([self.me]),
                              **{role: _cpu(procs) for role, procs in self.roles.items()}})
            self.stop.wait(self.every)


def engine_steps(probe_dir: Path) -> list[dict]:
    rows = []
    for f in probe_dir.glob("*.jsonl"):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return sorted((r for r in rows if r["fn"] == "schedule" and r.get("reqs")), key=lambda r: r["t"])


def per_second(steps: list[dict], cpu: list[dict], t0: float, t1: float) -> Table:
    t = Table(title="The engine and the host, second by second (t from the load's start)", title_justify="left")
    for col in ("t s", "steps", "running mean", "min", "max", "admitted", "API server", "EngineCore", "worker",
                "load gen", "others", "steal"):
        t.add_column(col, justify="right")
    st = np.array([s["t"] for s in steps])
    reqs, new = np.array([s["reqs"] for s in steps]), np.array([s["new"] for s in steps])
    ct = np.array([c["t"] for c in cpu])
    for b in np.arange(t0, t1, 1.0):
        m = (st >= b) & (st < b + 1.0)
        i, j = np.searchsorted(ct, b), min(np.searchsorted(ct, b + 1.0), len(cpu) - 1)
        if i >= j:
            continue
        dt = cpu[j]["t"] - cpu[i]["t"]
        use = {k: (cpu[j][k] - cpu[i][k]) / dt for k in ("api", "engine", "worker", "loadgen", "machine", "steal")}
        others = max(use["machine"] - use["api"] - use["engine"] - use["worker"] - use["loadgen"], 0.0)
        t.add_row(f"{b - t0:.0f}", str(int(m.sum())), f"{reqs[m].mean():.0f}" if m.any() else "-",
                  str(reqs[m].min()) if m.any() else "-", str(reqs[m].max()) if m.any() else "-", str(int(new[m].sum())),
                  *(f"{use[k]:.2f}" for k in ("api", "engine", "worker", "loadgen")), f"{others:.2f}",
                  f"{use['steal']:.2f}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="measured requests (the plan's workload: 200)")
    args = ap.parse_args()
    from planner import loadgen, verify

    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="vllm-probe-") as tmp:
        probe_dir = Path(tmp)
        with probed_server(probe_dir) as (req, compiled, base, roles, _argv):
            spec = verify.load_spec(req, compiled, base, compiled.plan.served_model_name, num_prompts=args.requests)
            spec = loadgen.LoadSpec(**{**spec.__dict__, "scrape_metrics_every_s": None})
            before = server_seconds(base)
            sampler = CpuSampler(roles)
            sampler.start()
            t0 = time.perf_counter()
            result = loadgen.run_sync(spec, progress=False)
            t1 = time.perf_counter()
            sampler.stop.set()
            sampler.join()
            after = server_seconds(base)
        steps = engine_steps(probe_dir)
    console.print(f"load: {spec.max_concurrency} in flight, settle {spec.settle}, {args.requests} measured, "
                  f"input {spec.input_len} / output {spec.output_len} tokens (±{spec.range_ratio:.0%}); "
                  f"max_num_seqs {compiled.plan.max_num_seqs}, max_num_batched_tokens "
                  f"{compiled.plan.max_num_batched_tokens}")
    console.print(per_second(steps, sampler.rows, t0, t1))
    ok = [r for r in result.records if r.ok]
    ttft = np.array([r.ttft_s for r in ok]) * 1e3
    pred = compiled.prediction
    console.print(f"client, measured requests: TTFT p50 {np.percentile(ttft, 50):.0f} ms, p90 "
                  f"{np.percentile(ttft, 90):.0f} ms (predicted p50 {dict(pred.ttft_ms.quantiles)[50.0]:.1f}); TPOT p50 "
                  f"{np.percentile([r.tpot_s * 1e3 for r in ok], 50):.2f} ms (predicted "
                  f"{dict(pred.tpot_ms.quantiles)[50.0]:.2f})")
    split = []
    for name in SERVER_SPLIT:
        n = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        s = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
        split.append(f"{name} {1e3 * s / max(n, 1):.0f} ms")
    console.print(f"server, every request of the run (warm-up, fill and tail too), means: {', '.join(split)}")


if __name__ == "__main__":
    main()

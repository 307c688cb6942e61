"""Per-kernel floor and bandwidth of the elementwise work a decoder layer does besides GEMMs and attention, on one
GPU: RMSNorm with residual add, SiLU-and-mul, rotary embedding, KV-cache scatter, residual add, and a trivial kernel.

Each op is PyTorch's own (F.rms_norm, F.silu, index_copy_ ...), as benchmarks/gpu/roofline_calibration.py's layer
runs them, not vLLM's fused kernels; `kernels` counts the CUDA kernels one call launches (torch.profiler), so
`us_graph / kernels` is the per-kernel figure. Rows 1..8192 at Llama-3.1-8B (hidden 4096, intermediate 14336) and
-70B (8192, 28672) widths, bf16. A timed call runs K back-to-back copies of the op (K sized so one call is ~1 ms)
over rotating buffer copies (~256 MiB touched, so mid sizes are not served from L2), captured into one CUDA graph and
replayed (us_graph: no launch gaps) and run eagerly (us_eager: one CPU launch per kernel); both divided by K.
bytes_moved is what a fused kernel must read and write; gb_s = bytes_moved / us_graph.

  python benchmarks/gpu/elementwise.py --out elementwise_h100.json [--quick]   # on the GPU
  python benchmarks/gpu/elementwise.py --dry-run --out /tmp/elementwise.json   # CPU, float32, tiny widths
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from roofline_calibration import MODELS, TINY_MODELS  # noqa: E402
from timing import GRAPH, Timer, timed, versions  # noqa: E402

ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
QUICK_ROWS = [1, 4, 16, 64, 256, 1024, 4096, 8192]
DRY_ROWS = [1, 4, 32]
TARGET_US = 1000.0  # one timed call: K copies of the op, about this long
EST_GB_S = 2500.0  # a guess of achieved bandwidth, only to size K before anything is measured
EST_FLOOR_US = 3.0
MAX_COPIES = 200
ROTATE_BYTES = 256 * 2**20
FLOOR_ROWS = 8  # summary: the floor is the median us_graph over rows <= this
KERNELS = ("empty", "residual_add", "rmsnorm_residual", "silu_and_mul", "rotary", "kv_cache_write")


class Op:
    """One elementwise op at one size: `buffers()` makes one copy of its per-call tensors, `call(bufs)` runs it."""

    def __init__(self, torch, F, kernel: str, rows: int, m: dict, dev, dtype):
        self.torch, self.F, self.kernel, self.rows = torch, F, kernel, rows
        self.dt = {"device": dev, "dtype": dtype}
        self.es = torch.empty((), dtype=dtype).element_size()
        H, hd = m["hidden"], m["head_dim"]
        self.hq, self.hkv, self.hd, self.H = m["heads"], m["kv_heads"], hd, H
        es = self.es
        if kernel == "empty":  # x.add_(0) on one element: the launch/graph-node floor
            self.width, self.bytes_moved = 1, 2 * es
        elif kernel == "residual_add":  # out = x + residual
            self.width, self.bytes_moved = H, 3 * rows * H * es
        elif kernel == "rmsnorm_residual":  # residual += x; y = rms_norm(residual) * w  (vLLM: fused_add_rms_norm)
            self.width, self.bytes_moved = H, 4 * rows * H * es + H * es
            self.weight = torch.ones(H, **self.dt)
        elif kernel == "silu_and_mul":  # y = silu(gate) * up over the gate_up output (rows, 2 x intermediate)
            self.width = m["inter"]
            self.bytes_moved = 3 * rows * self.width * es
        elif kernel == "rotary":  # NeoX-style RoPE on q and k in place, cos/sin gathered by position
            self.width = (self.hq + self.hkv) * hd
            self.bytes_moved = 2 * rows * self.width * es + rows * hd * es + rows * 8
            angle = torch.rand(8192, hd // 2, device=dev, dtype=torch.float32) * 6.2832  # max positions x hd/2
            self.cos_sin = torch.cat((angle.cos(), angle.sin()), dim=-1).to(dtype)  # (cos | sin): norm-preserving
        elif kernel == "kv_cache_write":  # new K and V scattered into a paged cache at slot_mapping
            self.width = 2 * self.hkv * hd
            self.bytes_moved = 2 * rows * self.width * es + rows * 8
            slots = max(2 * rows, 1024)
            self.k_cache = torch.zeros(slots, self.hkv, hd, **self.dt)  # (blocks x block_size) flattened
            self.v_cache = torch.zeros(slots, self.hkv, hd, **self.dt)
        else:
            raise ValueError(f"kernel={kernel!r} is none of {KERNELS}")
        self.rms = getattr(F, "rms_norm", None)

    def buffers(self) -> tuple:
        torch, r, dt = self.torch, self.rows, self.dt
        if self.kernel == "empty":
            return (torch.zeros(1, **dt),)
        if self.kernel == "residual_add":
            return torch.randn(r, self.H, **dt), torch.randn(r, self.H, **dt), torch.empty(r, self.H, **dt)
        if self.kernel == "rmsnorm_residual":
            return torch.randn(r, self.H, **dt), torch.randn(r, self.H, **dt)
        if self.kernel == "silu_and_mul":
            return (torch.randn(r, 2 * self.width, **dt),)
        if self.kernel == "rotary":
            pos = torch.randint(0, self.cos_sin.shape[0], (r,), device=dt["device"])
            return torch.randn(r, self.hq, self.hd, **dt), torch.randn(r, self.hkv, self.hd, **dt), pos
        slots = torch.randperm(self.k_cache.shape[0], device=dt["device"])[:r]
        return torch.randn(r, self.hkv, self.hd, **dt), torch.randn(r, self.hkv, self.hd, **dt), slots

    def call(self, b: tuple):
        torch, F = self.torch, self.F
        if self.kernel == "empty":
            return b[0].add_(0)
        if self.kernel == "residual_add":
            return torch.add(b[0], b[1], out=b[2])
        if self.kernel == "rmsnorm_residual":
            res = b[1].add_(b[0])
            if self.rms is not None:
                return self.rms(res, (self.H,), self.weight, 1e-5)
            rf = res.float()
            return (rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(res.dtype) * self.weight
        if self.kernel == "silu_and_mul":
            g, u = b[0].chunk(2, dim=-1)
            return F.silu(g) * u
        if self.kernel == "rotary":
            cos, sin = self.cos_sin.index_select(0, b[2]).unsqueeze(1).chunk(2, dim=-1)
            for x in (b[0], b[1]):
                x1, x2 = x.chunk(2, dim=-1)
                x.copy_(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1))
            return b[0]
        self.k_cache.index_copy_(0, b[2], b[0])
        self.v_cache.index_copy_(0, b[2], b[1])
        return self.k_cache


def inner_calls(bytes_moved: int, dry: bool) -> int:
    """K: copies of the op per timed call, so that one call lasts about TARGET_US at a guessed bandwidth."""
    if dry:
        return 2
    est_us = max(bytes_moved / (EST_GB_S * 1e3), EST_FLOOR_US)
    return int(min(MAX_COPIES, max(1, TARGET_US // est_us)))


def kernel_names(torch, fn) -> list:
    """Names of the CUDA kernels (and memcpy/memset) one call launches, read off torch.profiler as
    roofline_calibration.py does; one entry per launch. Empty where the profiler fails."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        return [ev.key[:100] for ev in prof.key_averages() if ev.device_type.name == "CUDA" for _ in range(ev.count)]
    except Exception as e:  # noqa: BLE001 - the names annotate the row; the timing stands without them
        print(f"  (kernel names unavailable: {type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
        return []


def annotate_kernels(torch, F, rows: list, shapes: dict, dev, dtype) -> None:
    """Adds `kernels` (launches per op call) and `kernel_names` to every row, profiling each op and width once
    at its smallest size."""
    launched: dict = {}
    for r in rows:
        key = (r["kernel"], r["model"])
        if key not in launched:
            try:
                op = Op(torch, F, r["kernel"], r["rows"], shapes[r["model"]], dev, dtype)
                bufs = op.buffers()
                op.call(bufs)  # warm: first-call allocations are not kernels of the op
                launched[key] = kernel_names(torch, lambda op=op, bufs=bufs: op.call(bufs))
            except Exception as e:  # noqa: BLE001
                print(f"  (kernel names of {key}: {type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
                launched[key] = []
        names = launched[key]
        r["kernels"], r["kernel_names"] = len(names) or None, sorted(set(names))


def cases(args) -> list[tuple[str, str, int]]:
    """(kernel, model, rows): per model width, except the 1-element kernel and the KV scatter (8 KV heads in both)."""
    models = list(TINY_MODELS) if args.dry_run else list(MODELS)
    rows = DRY_ROWS if args.dry_run else QUICK_ROWS if args.quick else ROWS
    out = [("empty", models[0], 1)]
    for kernel in KERNELS[1:]:
        for model in (models[:1] if kernel == "kv_cache_write" else models):
            out += [(kernel, model, r) for r in rows]
    return out


def measure(torch, F, timer: Timer, kernel: str, model: str, rows: int, m: dict, dev, dtype, dry: bool) -> dict:
    row: dict = {"kernel": kernel, "model": model, "rows": rows, "hidden": m["hidden"], "errors": {}}
    try:
        op = Op(torch, F, kernel, rows, m, dev, dtype)
        row.update(width=op.width, bytes_moved=op.bytes_moved)
        k = inner_calls(op.bytes_moved, dry)
        per_copy = max(sum(t.numel() * t.element_size() for t in op.buffers()), 1)
        copies = max(1, min(k, math.ceil(ROTATE_BYTES / per_copy))) if not dry else 1
        bufs = [op.buffers() for _ in range(copies)]
        row.update(calls_per_graph=k, buffer_copies=copies)

        def fn():
            for i in range(k):
                op.call(bufs[i % copies])

    except Exception as e:  # noqa: BLE001
        row["errors"]["setup"] = f"{type(e).__name__}: {str(e)[:200]}"
        return row
    for key, how in (("us_graph", "graph"), ("us_eager", "eager")):
        t = timed(timer, how, fn, k, row["errors"], key)
        row[key] = t.ms * 1e3 if t else None
        if t:
            row[f"mode_{how}"] = t.mode
    row["gb_s"] = op.bytes_moved / (row["us_graph"] * 1e3) if row.get("us_graph") else None
    return row


def summarize(rows: list) -> dict:
    """Per kernel and model width: the floor (median us_graph over rows <= FLOOR_ROWS), the large-size bandwidth
    (median gb_s over the sizes >= half the largest measured), and how well us = floor + bytes / bandwidth fits
    every size (median |error| %)."""
    out = {}
    groups: dict = {}
    for r in rows:
        if r.get("us_graph"):
            groups.setdefault(f"{r['kernel']}.{r['model']}" if r["kernel"] != "empty" else "empty", []).append(r)
    for name, rs in groups.items():
        small = [r["us_graph"] for r in rs if r["rows"] <= FLOOR_ROWS]
        big = max(r["rows"] for r in rs)
        large = [r["gb_s"] for r in rs if r["rows"] >= big / 2] if name != "empty" else []
        floor = statistics.median(small) if small else None
        bw = statistics.median(large) if large else None
        fit = [abs(floor + r["bytes_moved"] / (bw * 1e3) - r["us_graph"]) / r["us_graph"] * 100 for r in rs] \
            if floor is not None and bw else []
        kernels = rs[0].get("kernels")
        eager_small = [r["us_eager"] for r in rs if r["rows"] <= FLOOR_ROWS and r.get("us_eager")]
        out[name] = {"floor_us": floor, "bandwidth_gb_s": bw, "kernels": kernels,
                     "floor_us_per_kernel": floor / kernels if floor is not None and kernels else None,
                     "fit_median_abs_error_pct": statistics.median(fit) if fit else None,
                     "eager_floor_us": statistics.median(eager_small) if eager_small else None}
    return out


def write_json(path: str, provenance: dict, rows: list, summary: dict | None) -> None:
    tmp = f"{path}.partial"
    with open(tmp, "w") as f:
        json.dump({"provenance": provenance, "rows": rows, "summary": summary}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="elementwise.json", help="JSON rewritten after every measurement")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median)")
    ap.add_argument("--quick", action="store_true", help=f"rows {QUICK_ROWS}")
    ap.add_argument("--dry-run", action="store_true", help="CPU, float32, tiny widths (tests the script)")
    ap.add_argument("--deadline-s", type=int, default=420, help="stop measuring after this; rows so far are kept")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("elementwise: no CUDA device. Fix: run on a GPU, or --dry-run to test the script.", file=sys.stderr)
        sys.exit(2)
    if cuda:
        torch.cuda.set_device(0)
    else:
        torch.set_num_threads(1)
    dev = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    timer = Timer(torch, cuda, repeats=3 if args.dry_run else args.repeats, warmup=1 if args.dry_run else 2)
    shapes = TINY_MODELS if args.dry_run else MODELS
    plan = cases(args)
    info = versions(torch, cuda)
    provenance = {**info, "dtype": str(dtype).replace("torch.", ""), "repeats": timer.repeats,
                  "model_shapes": shapes, "command": " ".join(["python", *sys.argv]),
                  "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "note": "us_* per op call (us_graph: CUDA-graph replay of K calls / K; us_eager: the same eagerly); "
                          "bytes_moved: a fused kernel's reads + writes; gb_s = bytes_moved / us_graph"}
    print(f"elementwise: {len(plan)} measurements x 2 (graph, eager) x {timer.repeats} repeats on {info['gpu']}",
          flush=True)
    rows, t_start = [], time.time()
    for kernel, model, r in plan:
        if time.time() - t_start > args.deadline_s:
            print(f"elementwise: deadline {args.deadline_s}s reached; {len(rows)} rows kept", file=sys.stderr)
            break
        row = measure(torch, F, timer, kernel, model, r, shapes[model], dev, dtype, args.dry_run)
        row.update(info)
        rows.append(row)
        write_json(args.out, provenance, rows, None)
        if cuda:
            torch.cuda.empty_cache()
        fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        print(f"[{time.time() - t_start:5.0f}s] {kernel:16s} {model:14s} rows={r:<5d} width={row.get('width', '-')!s:<6s}"
              f" graph {fmt(row.get('us_graph'), '8.2f')} us  eager {fmt(row.get('us_eager'), '8.2f')} us  "
              f"{fmt(row.get('gb_s'), '7.1f')} GB/s  K={row.get('calls_per_graph')}"
              + (f"  errors: {row['errors']}" if row["errors"] else ""), flush=True)
    if cuda:  # after all timings, so that the profiler cannot disturb a graph capture
        annotate_kernels(torch, F, rows, shapes, dev, dtype)
    summary = summarize(rows)
    write_json(args.out, provenance, rows, summary)
    print(f"\n{'kernel':34s} {'kernels':>7s} {'floor us':>9s} {'/kernel':>8s} {'eager us':>9s} {'GB/s':>8s} "
          f"{'fit |err|':>9s}")
    for name, s in summary.items():
        f = lambda v, spec: format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0].rstrip("d"))  # noqa: E731
        print(f"{name:34s} {f(s['kernels'], '7d')} {f(s['floor_us'], '9.2f')} {f(s['floor_us_per_kernel'], '8.2f')} "
              f"{f(s['eager_floor_us'], '9.2f')} {f(s['bandwidth_gb_s'], '8.1f')} "
              f"{f(s['fit_median_abs_error_pct'], '9.0f')}")
    print(f"wrote {len(rows)} rows to {args.out}; all graph-timed: "
          f"{all(r.get('mode_graph') == GRAPH for r in rows) if cuda else 'n/a (CPU)'}", flush=True)


if __name__ == "__main__":
    main()

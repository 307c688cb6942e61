"""A tensor-parallel Llama-3.1-70B decoder-layer step on N GPUs of one host, with and without its all-reduces
(issues 9-11): the communication share of a TP layer measured directly, to check planner/perf.py's TP term.

One process per GPU (torch.multiprocessing spawn), NCCL with NVLink multicast off (NCCL_NVLS_ENABLE=0). The layer is
roofline_calibration.py's (RMSNorm, fused QKV, SDPA over a bf16 KV cache without RoPE, O, SiLU-gated MLP; decode
writes the new K/V into the cache) sharded Megatron-style over TP=N: QKV and gate_up column-parallel, O and down
row-parallel, each followed by dist.all_reduce: two all-reduces per layer. Per shape, each timed eager and
CUDA-graph replayed (`--layers-per-graph` chained layers per capture): the layer, the layer without its all-reduces,
and one all-reduce of the layer's message (tokens x hidden, bf16). Rank 0 writes the JSON after every shape.

  python benchmarks/gpu/tp_layer.py --out tp_layer_h100x2.json [--world 2] [--quick]   # on the GPU host
  python benchmarks/gpu/tp_layer.py --predict tp_layer_h100x2.json                     # anywhere: vs perf.py
  python benchmarks/gpu/tp_layer.py --dry-run --out /tmp/tp_layer.json                 # CPU, gloo, tiny shapes
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from roofline_calibration import MODELS, TINY_MODELS, causal_attention  # noqa: E402
from timing import Timer, timed, versions  # noqa: E402

MODEL = "llama-3.1-70b"
CATALOG_MODEL = "llama3.1-70b"  # conf/model/ name of the same shapes, for --predict
DECODE_BATCH, DECODE_CONTEXT, PREFILL_TOKENS = [1, 8, 32, 64, 128, 256], 1024, [512, 2048, 8192]
QUICK_BATCH, QUICK_PREFILL = [1, 32, 256], [2048]
DRY_BATCH, DRY_CONTEXT, DRY_PREFILL = [1, 4], 32, [16, 64]
ALLREDUCES_PER_GRAPH = 20  # as benchmarks/gpu/allreduce.py: amortises the graph launch over small messages


def shapes(args) -> list[tuple[str, int, int]]:
    """(phase, tokens, context) in measuring order. Prefill attends causally over its own tokens."""
    if args.dry_run:
        batch, ctx, prefill = DRY_BATCH, DRY_CONTEXT, DRY_PREFILL
    elif args.quick:
        batch, ctx, prefill = QUICK_BATCH, DECODE_CONTEXT, QUICK_PREFILL
    else:
        batch, ctx, prefill = DECODE_BATCH, DECODE_CONTEXT, PREFILL_TOKENS
    return [("decode", b, ctx) for b in batch] + [("prefill", t, t) for t in prefill]


class TpLayer:
    """One rank's slice of the decoder layer: weights for hidden H, q_heads/tp and kv_heads/tp heads, inter/tp."""

    def __init__(self, torch, F, dist, cfg: dict, tp: int, dev, dtype):
        if cfg["heads"] % tp or cfg["kv_heads"] % tp or cfg["inter"] % tp:
            raise ValueError(f"world={tp}: the layer's {cfg['heads']} q heads, {cfg['kv_heads']} kv heads and "
                             f"intermediate {cfg['inter']} must divide by the TP degree. Fix: --world 2, 4 or 8.")
        self.torch, self.F, self.dist = torch, F, dist
        self.H, self.hd = cfg["hidden"], cfg["head_dim"]
        self.hq, self.hkv, inter = cfg["heads"] // tp, cfg["kv_heads"] // tp, cfg["inter"] // tp
        self.nq, self.nkv = self.hq * self.hd, self.hkv * self.hd
        self.dt = {"device": dev, "dtype": dtype}
        H = self.H
        self.W = {"qkv": torch.randn(self.nq + 2 * self.nkv, H, **self.dt) * 0.02,  # column-parallel
                  "o": torch.randn(H, self.nq, **self.dt) * 0.02,  # row-parallel: partial sums, then all-reduce
                  "gate_up": torch.randn(2 * inter, H, **self.dt) * 0.02,  # column-parallel
                  "down": torch.randn(H, inter, **self.dt) * 0.02}  # row-parallel
        self.n1, self.n2 = torch.ones(H, **self.dt), torch.ones(H, **self.dt)
        self.rms = getattr(F, "rms_norm", None)

    def norm(self, x, w):
        if self.rms is not None:
            return self.rms(x, (self.H,), w, 1e-5)
        xf = x.float()
        return (xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * w

    def forward(self, x, attn, comm: bool):
        F, W = self.F, self.W
        r = x
        a = attn(F.linear(self.norm(x, self.n1), W["qkv"]))
        o = F.linear(a, W["o"])
        if comm:
            self.dist.all_reduce(o)
        x = o + r
        g, u = F.linear(self.norm(x, self.n2), W["gate_up"]).chunk(2, dim=-1)
        d = F.linear(F.silu(g) * u, W["down"])
        if comm:
            self.dist.all_reduce(d)
        return d + x

    def decode_inputs(self, batch: int, ctx: int):
        """Attention of one new token per sequence over a contiguous KV cache of `ctx` tokens (the last slot is
        the new token's: its K/V are written first), as roofline_calibration.py's layer does."""
        torch, F = self.torch, self.F
        hq, hkv, hd, nq, nkv = self.hq, self.hkv, self.hd, self.nq, self.nkv
        kc, vc = torch.randn(batch, hkv, ctx, hd, **self.dt), torch.randn(batch, hkv, ctx, hd, **self.dt)

        def attn(qkv):
            q = qkv[:, :nq].reshape(batch, hq, 1, hd)
            kc[:, :, ctx - 1, :] = qkv[:, nq:nq + nkv].reshape(batch, hkv, hd)
            vc[:, :, ctx - 1, :] = qkv[:, nq + nkv:].reshape(batch, hkv, hd)
            return F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True).reshape(batch, nq)

        return torch.randn(batch, self.H, **self.dt), attn

    def prefill_inputs(self, tokens: int):
        torch, F = self.torch, self.F
        hq, hkv, hd, nq = self.hq, self.hkv, self.hd, self.nq

        def attn(qkv):
            return causal_attention(F, qkv, tokens, hq, hkv, hd, nq)

        return torch.randn(tokens, self.H, **self.dt), attn


def measure_shape(layer: TpLayer, timer: Timer, phase: str, tokens: int, ctx: int, n_layers: int,
                  ar_calls: int) -> dict:
    """Six timings of one shape; a failure of one is recorded in `errors` and the others still run."""
    torch, dist = layer.torch, layer.dist
    row: dict = {"modes": {}, "errors": {}}
    try:
        x0, attn = layer.decode_inputs(tokens, ctx) if phase == "decode" else layer.prefill_inputs(tokens)
    except Exception as e:  # noqa: BLE001
        row["errors"]["inputs"] = f"{type(e).__name__}: {str(e)[:200]}"
        return row
    buf = torch.zeros(tokens, layer.H, **layer.dt)
    row["allreduce_bytes"] = buf.numel() * buf.element_size()

    def layers(comm):
        def fn():
            x = x0
            for _ in range(n_layers):
                x = layer.forward(x, attn, comm)
        return fn

    def allreduces():
        for _ in range(ar_calls):
            dist.all_reduce(buf)

    for key, fn, n in (("layer", layers(True), n_layers), ("layer_no_comm", layers(False), n_layers),
                       ("allreduce", allreduces, ar_calls)):
        for how in ("graph", "eager"):
            name = f"ms_{key}" + ("_eager" if how == "eager" else "")
            t = timed(timer, how, fn, n, row["errors"], name)
            row[name] = t.ms if t else None
            if t:
                row["modes"][name] = t.mode
    return row


def write_json(path: str, provenance: dict, rows: list) -> None:
    tmp = f"{path}.partial"
    with open(tmp, "w") as f:
        json.dump({"provenance": provenance, "rows": rows}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def worker(rank: int, world: int, args, port: int) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    cuda = not args.dry_run
    if cuda:
        torch.cuda.set_device(rank)
        torch.backends.cuda.matmul.allow_tf32 = False
    else:
        torch.set_num_threads(1)  # two ranks on a 2-core CI runner
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=args.collective_timeout_s))
    dtype = torch.bfloat16 if cuda else torch.float32
    model = "tiny-70b" if args.dry_run else MODEL
    cfg = (TINY_MODELS if args.dry_run else MODELS)[model]

    def agree(ok: bool) -> bool:
        flag = torch.tensor([int(ok)], device=dev)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    agree(True)  # creates the communicator before anything is timed
    layer = TpLayer(torch, F, dist, cfg, world, dev, dtype)
    timer = Timer(torch, cuda, repeats=args.repeats, warmup=args.warmup, agree=agree)
    n_layers = args.layers_per_graph
    ar_calls = 2 if args.dry_run else ALLREDUCES_PER_GRAPH
    info = versions(torch, cuda)
    provenance = {**info, "world": world, "tp": world, "backend": "nccl" if cuda else "gloo", "model": model,
                  "model_shape": cfg, "dtype": str(dtype).replace("torch.", ""), "NCCL_NVLS_ENABLE":
                  os.environ.get("NCCL_NVLS_ENABLE"), "layers_per_graph": n_layers, "allreduces_per_graph":
                  ar_calls, "repeats": args.repeats, "command": " ".join(["python", *sys.argv]),
                  "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "note": "ms_* are per layer (or per all-reduce) on rank 0, median of repeats; ms_layer: with both "
                          "all-reduces, ms_layer_no_comm: the same kernels without them; *_eager: no graph"}
    rows = []
    t_start = time.time()
    for phase, tokens, ctx in shapes(args):
        t0 = time.time()
        row = {"phase": phase, "batch": tokens if phase == "decode" else 1, "tokens": tokens, "context": ctx,
               "tp": world, **info}
        row.update(measure_shape(layer, timer, phase, tokens, ctx, n_layers, ar_calls))
        with_comm, without = row.get("ms_layer"), row.get("ms_layer_no_comm")
        row["mode"] = row["modes"].get("ms_layer", "failed")
        same_mode = row["modes"].get("ms_layer") == row["modes"].get("ms_layer_no_comm")
        row["ms_comm"] = with_comm - without if with_comm is not None and without is not None and same_mode else None
        if cuda:
            torch.cuda.empty_cache()
        if rank == 0:
            rows.append(row)
            write_json(args.out, provenance, rows)
            fmt = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
            print(f"[{time.time() - t_start:5.0f}s] {phase:7s} tokens={tokens:<5d} ctx={ctx:<5d} {row['mode']:13s} "
                  f"layer {fmt(with_comm)} ms, no-comm {fmt(without)} ms, comm {fmt(row['ms_comm'])} ms, "
                  f"all-reduce {fmt(row.get('ms_allreduce'))} ms ({time.time() - t0:.1f}s)"
                  + (f" errors: {sorted(row['errors'])}" if row["errors"] else ""), flush=True)
    agree(True)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> int:
    os.environ["NCCL_NVLS_ENABLE"] = "0"  # before any process initialises NCCL (the device notes ask for it off)
    import torch
    import torch.multiprocessing as mp

    world = args.world
    if not args.dry_run and torch.cuda.device_count() < world:
        print(f"--world={world}: only {torch.cuda.device_count()} CUDA devices visible; one process per GPU needs "
              f"{world}. Fix: run on a host with {world} GPUs, lower --world, or --dry-run (CPU).", file=sys.stderr)
        return 2
    plan = shapes(args)
    n_timings = 6 * len(plan)
    print(f"tp_layer: world={world}, {len(plan)} shapes x 6 timings = {n_timings} x {args.repeats} repeats "
          f"(+{args.warmup} warm-up), {args.layers_per_graph} layers per call; deadline {args.deadline_s}s",
          flush=True)
    if os.path.exists(args.out):
        os.remove(args.out)
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, args, port)) for r in range(world)]
    for p in procs:
        p.start()
    deadline, failed_at = time.time() + args.deadline_s, None
    while any(p.is_alive() for p in procs):
        time.sleep(0.2)
        if failed_at is None and any(p.exitcode not in (None, 0) for p in procs):
            failed_at = time.time()  # a rank died: the others wait in a collective until they time out
        if time.time() > deadline or (failed_at is not None and time.time() - failed_at > 30):
            print("tp_layer: stopping the ranks ("
                  + ("deadline" if time.time() > deadline else "a rank failed") + "); rows so far are in "
                  + args.out, file=sys.stderr, flush=True)
            for p in procs:
                if p.is_alive():
                    p.terminate()
            break
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
    codes = [p.exitcode for p in procs]
    if not os.path.exists(args.out):
        print(f"tp_layer: no rows written (exit codes {codes})", file=sys.stderr)
        return 1
    rows = json.loads(Path(args.out).read_text())["rows"]
    print(f"wrote {len(rows)} rows to {args.out} (exit codes {codes})", flush=True)
    return 0 if all(c == 0 for c in codes) and len(rows) == len(plan) else 1


# ------------------------------------------------------------------------------------------------------------------
# --predict: measured vs planner/perf.py (CPU; needs the project, not torch)


def predict(args) -> int:
    import layer_check  # the project's model/hardware composition; imports planner
    from rich.console import Console
    from rich.table import Table

    data = json.loads(Path(args.predict).read_text())
    prov, rows = data["provenance"], data["rows"]
    gpu = args.gpu or next((v for k, v in layer_check.GPUS.items() if k in str(prov.get("gpu", "")).lower()), None)
    if gpu is None:
        print(f"gpu={prov.get('gpu')!r} in {args.predict} is none of {sorted(layer_check.GPUS.values())}. "
              f"Fix: --gpu <catalog name>, e.g. --gpu h100-sxm.", file=sys.stderr)
        return 2
    tp = int(prov["tp"])
    models, hws = layer_check.specs([args.model], [gpu])
    sm = layer_check.step_model(models[args.model], hws[gpu], tp)
    cal = sm._consts["cal"]
    table = Table(title=f"TP={tp} decoder layer on {prov.get('gpu')}: measured vs "
                        f"planner/perf.py for {args.model} on {gpu} (ms per layer)", title_justify="left")
    cols = ("phase", "tokens", "ctx", "mode", "layer", "pred", "err", "no-comm", "pred", "err", "comm", "pred",
            "err", "1 all-reduce", "pred", "err")
    for c in cols:
        table.add_column(c, justify="left" if c in ("phase", "mode") else "right")
    errs: dict = {"layer": [], "no_comm": [], "comm": [], "allreduce": []}

    def cell(measured, predicted, key):
        if measured is None or measured <= 0:
            return ["-", f"{predicted:.4f}", "-"]
        e = (predicted - measured) / measured * 100
        errs[key].append(abs(e))
        return [f"{measured:.4f}", f"{predicted:.4f}", f"{e:+.0f}%"]

    for r in rows:
        p_nc = float(sm.layer_seconds(*layer_check.layer_args(r["phase"], r["tokens"], r["context"]))) * 1e3
        p_comm = float(sm.comm_seconds(r["tokens"])) * 1e3
        p_ar = float(cal.allreduce_seconds(r.get("allreduce_bytes") or 0, tp, sm._consts["link"])) * 1e3
        table.add_row(r["phase"], str(r["tokens"]), str(r["context"]), r.get("mode", "-"),
                      *cell(r.get("ms_layer"), p_nc + p_comm, "layer"), *cell(r.get("ms_layer_no_comm"), p_nc, "no_comm"),
                      *cell(r.get("ms_comm"), p_comm, "comm"), *cell(r.get("ms_allreduce"), p_ar, "allreduce"))
    console = Console(width=200)
    console.print(table)
    med = {k: (f"{statistics.median(v):.1f}% ({len(v)} rows)" if v else "-") for k, v in errs.items()}
    console.print(f"median |error|: layer {med['layer']}, layer without all-reduces {med['no_comm']}, "
                  f"comm share (layer - no-comm vs 2 x all-reduce) {med['comm']}, one all-reduce {med['allreduce']}")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tp_layer.json", help="JSON written by rank 0 after every shape")
    ap.add_argument("--world", type=int, default=2, help="GPUs = TP degree (one process each)")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layers-per-graph", type=int, default=4, help="chained layers per timed call / capture")
    ap.add_argument("--quick", action="store_true", help="decode batch 1/32/256, prefill 2048")
    ap.add_argument("--dry-run", action="store_true", help="CPU, gloo, float32, tiny shapes (tests the script)")
    ap.add_argument("--deadline-s", type=int, default=480, help="stop the ranks after this; rows so far are kept")
    ap.add_argument("--collective-timeout-s", type=int, default=120)
    ap.add_argument("--predict", metavar="RESULTS.json", help="no measuring: compare RESULTS.json with perf.py")
    ap.add_argument("--gpu", help="--predict: catalog GPU name (default: from the JSON's device name)")
    ap.add_argument("--model", default=CATALOG_MODEL, help="--predict: catalog model name")
    args = ap.parse_args()
    if args.dry_run:
        args.repeats, args.warmup, args.layers_per_graph = min(args.repeats, 3), 1, min(args.layers_per_graph, 2)
    sys.exit(predict(args) if args.predict else run(args))


if __name__ == "__main__":
    main()

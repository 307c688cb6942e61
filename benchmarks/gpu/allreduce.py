"""All-reduce latency and bus bandwidth over NCCL for tensor-parallel message sizes (issues 9-11).

Message sizes: hidden sizes of Llama-3.1-8B/70B, Qwen and DeepSeek (4096, 5120, 7168, 8192) x 1..8192 tokens, bf16:
what each TP all-reduce carries. One process per GPU (torch.multiprocessing), CUDA events, warmup, median of repeats.
NVLink multicast off (NCCL_NVLS_ENABLE=0, as the device notes ask). Bus bandwidth as nccl-tests defines it:
algbw x 2(n-1)/n. `--dry-run` runs two CPU processes over gloo with small sizes (for testing the script here).

Run: python benchmarks/gpu/allreduce.py --out results.json [--world N] [--dry-run]
"""

import argparse
import json
import os
import statistics
import sys
import time

HIDDEN = [4096, 5120, 7168, 8192]
TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]


def worker(rank: int, world: int, args, queue) -> None:
    import torch
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(args.port))
    backend = "gloo" if args.dry_run else "nccl"
    dist.init_process_group(backend, rank=rank, world_size=world)
    dev = torch.device("cpu") if args.dry_run else torch.device("cuda", rank)
    if not args.dry_run:
        torch.cuda.set_device(dev)
    hidden = HIDDEN[:1] if args.dry_run else HIDDEN
    tokens = TOKENS[:4] if args.dry_run else TOKENS
    rows = []
    for h in hidden:
        for t in tokens:
            x = torch.ones(t * h, dtype=torch.bfloat16 if not args.dry_run else torch.float32, device=dev)
            for _ in range(5):
                dist.all_reduce(x)
            times = []
            for _ in range(args.repeats):
                if args.dry_run:
                    t0 = time.perf_counter()
                    dist.all_reduce(x)
                    times.append(time.perf_counter() - t0)
                else:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    dist.all_reduce(x)
                    end.record()
                    torch.cuda.synchronize()
                    times.append(start.elapsed_time(end) / 1e3)
            med = statistics.median(times)
            graph_us = None
            if not args.dry_run:  # inside a CUDA graph, as vLLM replays decode steps: no CPU launch per call
                g = torch.cuda.CUDAGraph()
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    dist.all_reduce(x)
                torch.cuda.current_stream().wait_stream(s)
                torch.cuda.synchronize()
                with torch.cuda.graph(g):
                    for _ in range(20):
                        dist.all_reduce(x)
                g.replay()
                torch.cuda.synchronize()
                gt = []
                for _ in range(5):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    g.replay()
                    end.record()
                    torch.cuda.synchronize()
                    gt.append(start.elapsed_time(end) / 1e3 / 20)
                graph_us = statistics.median(gt) * 1e6
                del g
            size = x.numel() * x.element_size()
            algbw = size / med / 1e9
            rows.append({"hidden": h, "tokens": t, "bytes": size, "median_us": med * 1e6, "graph_us": graph_us,
                         "p10_us": sorted(times)[len(times) // 10] * 1e6, "algbw_gb_s": algbw,
                         "busbw_gb_s": algbw * 2 * (world - 1) / world})
    if rank == 0:
        queue.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="allreduce.json")
    ap.add_argument("--world", type=int, default=0, help="GPUs (default: all visible)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--port", type=int, default=29555)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    import torch
    import torch.multiprocessing as mp

    os.environ["NCCL_NVLS_ENABLE"] = "0"
    world = args.world or (2 if args.dry_run else torch.cuda.device_count())
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    rows = queue.get(timeout=1200)
    for p in procs:
        p.join(timeout=120)
    meta = {"world": world, "backend": "gloo" if args.dry_run else "nccl", "torch": torch.__version__,
            "device": "cpu" if args.dry_run else torch.cuda.get_device_name(0),
            "cuda": None if args.dry_run else torch.version.cuda,
            "nccl": None if args.dry_run else ".".join(map(str, torch.cuda.nccl.version())),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "NCCL_NVLS_ENABLE": "0",
            "command": " ".join(["python", *sys.argv])}
    with open(args.out, "w") as f:
        json.dump({"provenance": meta, "rows": rows}, f, indent=1)
    print(f"{'hidden':>6} {'tokens':>6} {'bytes':>10} {'eager us':>10} {'graph us':>10} {'busbw GB/s':>10}")
    for r in rows:
        g = f"{r['graph_us']:>10.1f}" if r["graph_us"] is not None else f"{'-':>10}"
        print(f"{r['hidden']:>6} {r['tokens']:>6} {r['bytes']:>10} {r['median_us']:>10.1f} {g} {r['busbw_gb_s']:>10.1f}")


if __name__ == "__main__":
    main()

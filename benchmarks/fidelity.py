"""The performance model against published serving benchmarks: each row's error and the median |error| per metric.

Reference rows: tests/data/reference/serving_benchmarks.yaml (vLLM, TensorRT-LLM, SGLang results with their full
configuration and a citation each). Each row with fixed input/output lengths is replayed through the planner's own
models: the memory model sizes the KV cache, the step model (planner/perf.py, efficiencies from
conf/calibration) times each engine step, and the discrete-event simulation (planner/simulate.py) runs the
benchmark's load (all requests at once, a fixed concurrency, or a Poisson rate). Nothing here is fitted to these
rows. Run: python benchmarks/fidelity.py [--max-requests N]
"""

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import compose, memory, perf, search, simulate  # noqa: E402
from planner.specs import Dtype, KvPrecision, Quantization  # noqa: E402

MODELS = {  # published model name (any spelling) → catalog entry
    "llama-3.1-8b": "llama3.1-8b", "llama-3.1-70b": "llama3.1-70b", "llama-3.3-70b": "llama3.1-70b",
    "llama-3.1-405b": "llama3.1-405b", "qwen3-8b": "qwen3-8b", "qwen3-32b": "qwen3-32b",
    "mixtral-8x7b": "mixtral-8x7b", "qwen3-235b-a22b": "qwen3-235b-a22b",
}
GPUS = {"h100": "h100-sxm", "h100-sxm": "h100-sxm", "h200": "h200", "a100-80g": "a100-80g", "l40s": "l40s",
        "b200": "b200"}
QUANT = {None: Quantization.none, "fp8": Quantization.fp8, "nvfp4": Quantization.nvfp4, "fp4": Quantization.nvfp4}
METRICS = ("output_throughput_tok_s", "total_throughput_tok_s", "request_throughput_rps", "ttft_ms_mean",
           "ttft_ms_median", "tpot_ms_mean", "tpot_ms_median", "itl_ms_median", "e2e_ms_median")


def catalog_model(name: str):
    low = name.lower().replace("meta-", "")
    for key, entry in MODELS.items():
        if key in low:
            return entry
    return None


def replay(row, specs, max_requests: int):
    entry, gpu_name = catalog_model(row["model"]), GPUS.get(row["gpu"])
    if entry is None or gpu_name is None or not row["input_len"] or not row["output_len"]:
        return None, "model, GPU or lengths not replayable"
    quant = QUANT.get((row["quantization"] or "").lower() or None)
    if quant is None:
        return None, f"quantization {row['quantization']}"
    model, hw = specs["model"][entry], specs["hw"][gpu_name]
    tp, pp = row["tensor_parallel"] or 1, row["pipeline_parallel"] or 1
    dp = row.get("data_parallel") or 1
    hw = replace(hw, gpus_per_node=max(tp, 1), nodes=max(1, pp))
    gpu = hw.gpu
    kv = KvPrecision.fp8 if str(row.get("kv_cache_dtype") or "").startswith("fp8") else KvPrecision.bf16
    defaults, _ = search._batch_defaults(gpu)
    seqs = row.get("max_num_seqs") or defaults["max_num_seqs"]
    batched = row.get("max_num_batched_tokens") or defaults["max_num_batched_tokens"]
    max_len = int(row["input_len"] + row["output_len"])
    mem = memory.breakdown(model, gpu, tp=tp, pp=pp, dtype=Dtype.bf16, quant=quant, kv_dtype=kv,
                           max_model_len=max_len, max_num_seqs=seqs, max_num_batched_tokens=batched,
                           gpu_memory_utilization=0.9)
    if not mem.fits:
        return None, "does not fit memory in the planner's model"
    sm = perf.StepModel(model, gpu, hw, tp, pp, Dtype.bf16, quant, kv)
    n = min(row.get("num_prompts") or max_requests, max_requests)
    per_replica = max(1, n // dp)
    ins = np.full(per_replica, int(row["input_len"]))
    outs = np.full(per_replica, int(row["output_len"]))
    if row["mode"] == "rate":
        arrivals = simulate.Arrivals(request_rate=row["request_rate"] / dp)
    elif row["mode"] == "concurrency":
        arrivals = simulate.Arrivals(request_rate=None, max_concurrency=max(1, row["concurrency"] // dp))
    else:
        arrivals = simulate.Arrivals(request_rate=None)

    def step_time(st) -> float:
        return float(sm.step_seconds(st.decode_seqs, st.decode_context, st.prefill_tokens, st.prefill_context))

    res = simulate.simulate(step_time, ins, outs, arrivals, max_num_seqs=seqs, max_num_batched_tokens=batched,
                            kv_blocks=mem.kv_cache_blocks, block_size=mem.block_size)
    out_tps = res.output_throughput() * dp
    return {
        "output_throughput_tok_s": out_tps,
        "total_throughput_tok_s": out_tps * (row["input_len"] + row["output_len"]) / row["output_len"],
        "request_throughput_rps": res.request_throughput() * dp,
        "ttft_ms_mean": float(np.mean(res.ttft_s)) * 1e3, "ttft_ms_median": res.percentile("ttft", 50) * 1e3,
        "tpot_ms_mean": float(np.mean(res.tpot_s)) * 1e3, "tpot_ms_median": res.percentile("tpot", 50) * 1e3,
        "itl_ms_median": res.percentile("itl", 50) * 1e3, "e2e_ms_median": res.percentile("e2e", 50) * 1e3,
    }, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-requests", type=int, default=400, help="requests simulated per row (steady state)")
    args = ap.parse_args()
    rows = yaml.safe_load((ROOT / "tests/data/reference/serving_benchmarks.yaml").read_text())
    with compose.Composer() as c:
        specs = {"model": {e: compose.to_request(c.compose([f"model={e}"])).model for e in set(MODELS.values())},
                 "hw": {g: compose.to_request(c.compose([f"gpu@hw.gpu={g}"])).hw for g in set(GPUS.values())}}
    table = Table(title="Performance model vs published serving benchmarks", title_justify="left")
    for col in ("row", "engine", "GPU", "TP", "quant", "ISL/OSL", "load", "metric", "published", "predicted", "error"):
        table.add_column(col, justify="right" if col in ("published", "predicted", "error", "TP") else "left")
    errors: dict[str, list] = {m: [] for m in METRICS}
    skipped = []
    for row in rows:
        if row["engine"] not in ("vllm", "trtllm", "sglang"):
            skipped.append((row["id"], "engine"))
            continue
        pred, why = replay(row, specs, args.max_requests)
        if pred is None:
            skipped.append((row["id"], why))
            continue
        load = {"offline": "all at once", "rate": f"{row['request_rate']} req/s",
                "concurrency": f"{row['concurrency']} conc"}[row["mode"]]
        for metric in METRICS:
            real = row["results"].get(metric)
            if real is None:
                continue
            err = (pred[metric] - real) / real * 100
            errors[metric].append(abs(err))
            table.add_row(row["id"], row["engine"], row["gpu"], str(row["tensor_parallel"]),
                          str(row["quantization"] or "bf16"), f"{row['input_len']}/{row['output_len']}", load, metric,
                          f"{real:,.1f}", f"{pred[metric]:,.1f}", f"{err:+.0f}%")
    console = Console(width=220)
    console.print(table)
    summary = Table(title="Median |error| per metric", title_justify="left")
    for col in ("metric", "rows", "median |error|", "mean |error|"):
        summary.add_column(col)
    for metric, errs in errors.items():
        if errs:
            summary.add_row(metric, str(len(errs)), f"{statistics.median(errs):.1f}%", f"{statistics.mean(errs):.1f}%")
    console.print(summary)
    console.print(f"{len(skipped)} rows not replayed: " + "; ".join(f"{i} ({w})" for i, w in skipped[:12])
                  + (" ..." if len(skipped) > 12 else ""))


if __name__ == "__main__":
    main()

"""The performance model against published serving benchmarks: each row's error and the median |error| per metric.

Reference rows: tests/data/reference/serving_benchmarks.yaml (vLLM, TensorRT-LLM, SGLang results with their full
configuration and a citation each). Each row with fixed input/output lengths, or with the ShareGPT dataset, is
replayed through the planner's own models: the memory model sizes the KV cache, the step model (planner/perf.py,
efficiencies from conf/calibration) times each engine step, and the discrete-event simulation (planner/simulate.py)
runs the benchmark's load (all requests at once, a fixed concurrency, or a Poisson rate). ShareGPT rows take their
request lengths from a published sample (tests/data/reference/sharegpt_lengths.yaml), rescaled to the row's own
printed token totals where it has them. Nothing here is fitted to these rows.
Run: python benchmarks/fidelity.py [--max-requests N]
"""

import argparse
import re
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import compose, memory, perf, search, simulate, steady  # noqa: E402
from planner.specs import Dtype, KvPrecision, Quantization  # noqa: E402

MODELS = {  # published model name (any spelling) → catalog entry
    "llama-3.1-8b": "llama3.1-8b", "llama-3.1-70b": "llama3.1-70b", "llama-3.3-70b": "llama3.1-70b",
    "llama-3.1-405b": "llama3.1-405b", "qwen3-8b": "qwen3-8b", "qwen3-32b": "qwen3-32b",
    "mixtral-8x7b": "mixtral-8x7b", "qwen3-235b-a22b": "qwen3-235b-a22b",
    "deepseek-r1": "deepseek-r1", "deepseek-v3": "deepseek-v3",
}
GPUS = {"h100": "h100-sxm", "h100-sxm": "h100-sxm", "h200": "h200", "a100-80g": "a100-80g", "l40s": "l40s",
        "b200": "b200"}
QUANT = {None: Quantization.none, "fp8": Quantization.fp8, "nvfp4": Quantization.nvfp4, "fp4": Quantization.nvfp4}
# FP8 checkpoints whose weights are not per-tensor scaled (each one's config.json quantization_config): Qwen's own FP8
# releases are fine-grained (weight_block_size [128, 128]); the NVIDIA (ModelOpt) and neuralmagic (AutoFP8) ones are
# per-tensor, the default.
FP8_SCALING = {"Qwen/Qwen3-32B-FP8": "block"}
SHAREGPT_LENGTHS = ROOT / "tests/data/reference/sharegpt_lengths.yaml"
# What a `vllm bench serve` / `sglang.bench_serving` printout says about the lengths it sent.
PRINTED_TOTALS = {"requests": re.compile(r"Successful requests:\s+(\d+)"),
                  "input": re.compile(r"Total input tokens:\s+(\d+)"),
                  "output": re.compile(r"Total generated tokens:\s+(\d+)")}
METRICS = ("output_throughput_tok_s", "total_throughput_tok_s", "request_throughput_rps", "ttft_ms_mean",
           "ttft_ms_median", "tpot_ms_mean", "tpot_ms_median", "itl_ms_median", "e2e_ms_median")


def catalog_model(name: str):
    low = name.lower().replace("meta-", "")
    for key, entry in MODELS.items():
        if key in low:
            return entry
    return None


@dataclass(frozen=True, eq=False)
class Workload:
    """The requests one replica of a row's benchmark sends, and how the table names them."""

    input_lens: np.ndarray
    """Prompt tokens per request."""
    output_lens: np.ndarray
    """Output tokens per request."""
    label: str
    """ISL/OSL column: "1024/128", "sharegpt", or "sharegpt*" (rescaled to the row's printed totals)."""
    max_model_len: int
    """Longest request the server must accept, in tokens."""


def printed_means(row) -> tuple[float, float] | None:
    """Mean input and output tokens per request from the row's own benchmark printout, if it has one."""
    text = f"{row.get('quote') or ''}\n{row.get('notes') or ''}"
    found = {key: pattern.search(text) for key, pattern in PRINTED_TOTALS.items()}
    if not all(found.values()):
        return None
    n = int(found["requests"].group(1))
    return int(found["input"].group(1)) / n, int(found["output"].group(1)) / n


def sharegpt_workload(row, n: int, sharegpt: dict) -> Workload:
    """`n` ShareGPT requests: the published sample's first pairs in order, then seeded draws with replacement.

    The sample is the first 320 requests of vLLM's seed-0 sampler with the Llama-3 tokenizer, so its first `n` are a
    run with --num-prompts n; further requests are drawn uniformly from its pairs, which all passed the pruning. A row
    that prints its token totals gets both lists rescaled to those means, clipped back into the pruning bounds.
    """
    bounds, sample = sharegpt["pruning"], sharegpt["sample"]
    ins, outs = np.array(sample["input_tokens"]), np.array(sample["output_tokens"])
    head = min(n, ins.size)
    extra = np.random.default_rng(sharegpt["resample_seed"]).integers(0, ins.size, n - head)
    idx = np.concatenate([np.arange(head), extra])
    ins, outs, label = ins[idx], outs[idx], "sharegpt"
    means = printed_means(row)
    if means is not None:
        ins = np.clip(np.rint(ins * means[0] / ins.mean()), bounds["min_tokens"], bounds["max_input_tokens"])
        outs = np.clip(np.rint(outs * means[1] / outs.mean()), bounds["min_tokens"], bounds["max_total_tokens"] - ins)
        label = "sharegpt*"
    return Workload(ins.astype(np.int64), outs.astype(np.int64), label, int(bounds["max_total_tokens"]))


def workload(row, n: int, sharegpt: dict) -> Workload | None:
    """The row's requests: fixed lengths, the ShareGPT sample, or None when the source gives neither."""
    if row["input_len"] and row["output_len"]:
        isl, osl = int(row["input_len"]), int(row["output_len"])
        return Workload(np.full(n, isl), np.full(n, osl), f"{isl}/{osl}", isl + osl)
    if row.get("dataset") == "sharegpt":
        return sharegpt_workload(row, n, sharegpt)
    return None


def requests_per_engine(row, max_requests: int) -> int:
    """Requests one simulated engine serves: a server of data_parallel engines sends each 1/dp of the prompts; all
    at once, the TTFT of the last is the whole queue ahead of it, so an offline row replays every prompt it sent,
    while under a rate or a concurrency the steady state needs only `max_requests`."""
    dp = row.get("data_parallel") or 1
    n = max(1, (row.get("num_prompts") or max_requests * dp) // dp)
    return n if row["mode"] == "offline" else min(n, max_requests)


def rank_step_time(sm, load: Workload, batch: float, budget: int):
    """One engine step's time; with attention DP the simulated rank also waits for the other ranks' busiest prefill
    (planner/steady.py other_ranks_prefill), at `batch` running requests per rank."""
    mean_in, mean_out = float(np.mean(load.input_lens)), float(np.mean(load.output_lens))
    others = steady.other_ranks_prefill(sm, batch, mean_in, mean_out, budget)
    busy = (None, None) if others is None else (others, others * mean_in / 2)

    def step_time(st) -> float:
        return float(sm.step_seconds(st.decode_seqs, st.decode_context, st.prefill_tokens, st.prefill_context, *busy))
    return step_time


def replay(row, specs, load: Workload | None):
    entry, gpu_name = catalog_model(row["model"]), GPUS.get(row["gpu"])
    if entry is None or gpu_name is None or load is None:
        return None, "model, GPU or lengths not replayable"
    quant = QUANT.get((row["quantization"] or "").lower() or None)
    if quant is None:
        return None, f"quantization {row['quantization']}"
    model, hw = specs["model"][entry], specs["hw"][gpu_name]
    tp, pp = row["tensor_parallel"] or 1, row["pipeline_parallel"] or 1
    dp = row.get("data_parallel") or 1  # attention-DP ranks in one server (or independent copies of a dense model)
    ep = bool(row.get("expert_parallel"))  # MoE experts spread over the tp x dp GPUs
    hw = replace(hw, gpus_per_node=max(tp * dp, 1), nodes=max(1, pp))
    gpu = hw.gpu
    kv = KvPrecision.fp8 if str(row.get("kv_cache_dtype") or "").startswith("fp8") else KvPrecision.bf16
    defaults, _ = search.batch_defaults(gpu)
    seqs = row.get("max_num_seqs") or defaults["max_num_seqs"]
    batched = row.get("max_num_batched_tokens") or defaults["max_num_batched_tokens"]
    def sized(util):
        return memory.breakdown(model, gpu, tp=tp, pp=pp, dtype=Dtype.bf16, quant=quant, kv_dtype=kv,
                                max_model_len=load.max_model_len, max_num_seqs=seqs, max_num_batched_tokens=batched,
                                gpu_memory_utilization=util, dp=dp if model.is_moe else 1, ep=ep)
    mem = sized(row.get("gpu_memory_utilization") or 0.9)
    if row["engine"] == "trtllm" and mem.fits:
        # TensorRT-LLM gives the KV cache a fraction of the memory *free after the weights* (KvCacheConfig
        # free_gpu_memory_fraction); its perf-overview runs used 0.95 (the rows' notes quote it), others say theirs
        # (kv_cache_free_gpu_mem_fraction). The same KV budget
        # as a vLLM-style fraction of the total: what is used before the KV cache, plus 0.95 of the rest.
        used = mem.weights_gib + mem.activations_gib + mem.runtime_overhead_gib
        free = row.get("kv_cache_free_gpu_mem_fraction") or 0.95
        mem = sized((used + free * (mem.total_gib - used)) / mem.total_gib)
        # Its default capacity scheduler, GUARANTEED_NO_EVICT (tensorrt_llm/llmapi/llm_args.py SchedulerConfig),
        # admits a request only when the KV blocks for its whole length are free: it never preempts, and runs at
        # most as many requests as the cache holds at full length (vLLM admits on the prompt and preempts).
        full = int(np.mean(load.input_lens) + np.mean(load.output_lens))
        seqs = max(1, min(seqs, mem.kv_cache_tokens // full))
    if not mem.fits:
        return None, "does not fit memory in the planner's model"
    if quant is Quantization.fp8:  # the checkpoint's FP8 scaling picks the GEMM kernel (planner/calibration.py)
        model = replace(model, fp8_scaling=FP8_SCALING.get(row["model"], "tensor"))
    sm = perf.StepModel(model, gpu, hw, tp, pp, Dtype.bf16, quant, kv, expert_parallel=ep,
                        dp=dp if model.is_moe else 1)
    if row["mode"] == "rate":
        arrivals = simulate.Arrivals(request_rate=row["request_rate"] / dp)
    elif row["mode"] == "concurrency":
        arrivals = simulate.Arrivals(request_rate=None, max_concurrency=max(1, row["concurrency"] // dp))
    else:
        arrivals = simulate.Arrivals(request_rate=None)

    step_time = rank_step_time(sm, load, min(seqs, (row.get("concurrency") or seqs * dp) / dp), batched)
    res = simulate.simulate(step_time, load.input_lens, load.output_lens, arrivals, max_num_seqs=seqs,
                            max_num_batched_tokens=batched, kv_blocks=mem.kv_cache_blocks, block_size=mem.block_size)
    out_tps = res.output_throughput() * dp
    tokens_per_output = (load.input_lens.sum() + load.output_lens.sum()) / load.output_lens.sum()
    return {
        "output_throughput_tok_s": out_tps,
        "total_throughput_tok_s": out_tps * float(tokens_per_output),
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
    sharegpt = yaml.safe_load(SHAREGPT_LENGTHS.read_text())
    with compose.Composer() as c:
        specs = {"model": {e: compose.to_request(c.compose([f"model={e}"])).model for e in set(MODELS.values())},
                 "hw": {g: compose.to_request(c.compose([f"gpu@hw.gpu={g}"])).hw for g in set(GPUS.values())}}
    table = Table(title="Performance model vs published serving benchmarks", title_justify="left")
    for col in ("row", "engine", "GPU", "TP", "quant", "ISL/OSL", "load", "metric", "published", "predicted", "error"):
        table.add_column(col, justify="right" if col in ("published", "predicted", "error", "TP") else "left")
    errors: dict[str, list] = {m: [] for m in METRICS}
    by_lengths: dict[tuple, list] = {}  # (metric, "fixed" | "sharegpt") -> |errors|
    skipped, replayed, own_totals = [], 0, []
    for row in rows:
        if row["engine"] not in ("vllm", "trtllm", "sglang"):
            skipped.append((row["id"], "engine"))
            continue
        load = workload(row, requests_per_engine(row, args.max_requests), sharegpt)
        pred, why = replay(row, specs, load)
        if pred is None:
            skipped.append((row["id"], why))
            continue
        replayed += 1
        if load.label == "sharegpt*":
            own_totals.append(row["id"])
        mode = {"offline": "all at once", "rate": f"{row['request_rate']} req/s",
                "concurrency": f"{row['concurrency']} conc"}[row["mode"]]
        for metric in METRICS:
            real = row["results"].get(metric)
            if real is None:
                continue
            err = (pred[metric] - real) / real * 100
            errors[metric].append(abs(err))
            by_lengths.setdefault((metric, "sharegpt" if load.label.startswith("sharegpt") else "fixed"),
                                  []).append(abs(err))
            table.add_row(row["id"], row["engine"], row["gpu"], str(row["tensor_parallel"]),
                          str(row["quantization"] or "bf16"), load.label, mode, metric,
                          f"{real:,.1f}", f"{pred[metric]:,.1f}", f"{err:+.0f}%")
    console = Console(width=220)
    console.print(table)
    summary = Table(title="Median |error| per metric", title_justify="left")
    for col in ("metric", "rows", "median |error|", "mean |error|", "fixed lengths: rows, median",
                "ShareGPT: rows, median"):
        summary.add_column(col)

    def part(metric, kind):
        errs = by_lengths.get((metric, kind))
        return f"{len(errs)}, {statistics.median(errs):.1f}%" if errs else "-"
    for metric, errs in errors.items():
        if errs:
            summary.add_row(metric, str(len(errs)), f"{statistics.median(errs):.1f}%", f"{statistics.mean(errs):.1f}%",
                            part(metric, "fixed"), part(metric, "sharegpt"))
    console.print(summary)
    console.print(f"sharegpt: request lengths from {SHAREGPT_LENGTHS.relative_to(ROOT)} (a published 320-request "
                  "sample, Llama-3 tokenizer); sharegpt*: that sample rescaled to the row's own printed totals "
                  f"({len(own_totals)} rows: {', '.join(own_totals) or 'none'}).")
    console.print(f"{replayed} rows replayed.")
    console.print(f"{len(skipped)} rows not replayed: " + "; ".join(f"{i} ({w})" for i, w in skipped[:12])
                  + (" ..." if len(skipped) > 12 else ""))


if __name__ == "__main__":
    main()

"""Memory model vs real vLLM servers: predicted weights, KV-cache GiB and tokens against what vLLM logged.

Reference rows: tests/data/reference/vllm_memory_logs.yaml (public vLLM startup logs, each with its URL). The rows
named in conf/calibration/vllm-memory.yaml `calibration_rows` supplied component constants and are held out; every
other row is predicted with the planner's own memory model from its model's real config.json
(tests/data/hf_configs/<repo>/, read as `model=hf` reads it, quantization included) or, failing that, the catalog
entry below, and printed with its errors; then the accuracy per source (the repository or thread the logs come from)
and over the quantized checkpoints. Run: python benchmarks/memory_fidelity.py
"""

import statistics
import sys
from dataclasses import replace
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import compose, memory, search  # noqa: E402
from planner.errors import InputError  # noqa: E402
from planner.specs import Dtype, KvPrecision, Quantization  # noqa: E402

HF_CONFIGS = ROOT / "tests" / "data" / "hf_configs"

# HF repo of the logged model → (catalog model, weight format). Qwen2-7B has Qwen2.5-7B's architecture exactly
# (hidden 3584, 28 layers, 28/4 heads, 18944, vocab 152064); Llama-3.3-70B is Llama-3.1-70B's.
MODELS = {
    "meta-llama/Llama-3.1-8B-Instruct": ("llama3.1-8b", Quantization.none),
    "meta-llama/Meta-Llama-3-8B": ("llama3-8b", Quantization.none),
    "meta-llama/Meta-Llama-3-8B-Instruct": ("llama3-8b", Quantization.none),
    "Qwen/Qwen2.5-7B-Instruct": ("qwen2.5-7b", Quantization.none),
    "Qwen/Qwen2-7B-Instruct": ("qwen2.5-7b", Quantization.none),
    "Qwen/Qwen2.5-72B-Instruct": ("qwen2.5-72b", Quantization.none),
    "Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4": ("qwen2.5-72b", Quantization.gptq),
    "Qwen/Qwen3-8B": ("qwen3-8b", Quantization.none),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": ("mixtral-8x7b", Quantization.none),
    "google/gemma-2-9b-it": ("gemma2-9b", Quantization.none),
    "google/gemma-2-27b-it": ("gemma2-27b", Quantization.none),
    "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic": ("llama3.1-70b", Quantization.fp8),
    "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w4a16": ("llama3.1-8b", Quantization.gptq),
    # compressed-tensors checkpoints of catalog models: the format's usual layout (planner/weights.py
    # FORMAT_DEFAULTS: FP8 and INT8 W8A8 with lm_head and embeddings in bf16)
    "RedHatAI/Qwen2.5-7B-Instruct-fp8-dynamic": ("qwen2.5-7b", Quantization.fp8),
    "RedHatAI/Qwen2.5-7B-Instruct-quantized.w8a8": ("qwen2.5-7b", Quantization.int8),
    "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8": ("llama3.1-8b", Quantization.int8),
    "RedHatAI/Llama-3.3-70B-Instruct-quantized.w8a8": ("llama3.1-70b", Quantization.int8),
    # a checkpoint of a model whose real config.json we hold (hf:<repo>): its architecture and vision tower from there
    "RedHatAI/Mistral-Small-3.1-24B-Instruct-2503-quantized.w8a8": ("hf:mistralai/Mistral-Small-3.1-24B-Instruct-2503",
                                                                    Quantization.int8),
}
# Rows whose log does not state the version: the era their notes give (the log format or the PR's date).
ERA = {"pr10511-llama3-8b-tp1": "0.6", "pr10511-llama3-8b-tp2": "0.6", "i10517-llama31-8b-rtx3090-20k": "0.6",
       "i10517-llama31-8b-rtx3090-29k": "0.6", "pr17122-llama31-8b-l40s-32k": "0.8"}
GPUS = {"h100-sxm", "h100-pcie", "h200", "a100-80g", "a100-40g", "l4", "l40s", "t4", "a10g", "v100", "b200"}


def version_tuple(v):
    try:
        return tuple(int(x) for x in str(v).split("+")[0].split(".")[:2])
    except ValueError:
        return None


def model_spec(repo: str, composer):
    """(ModelSpec, its Quantization) from the repo's real config.json when we have it, else the catalog entry."""
    if (HF_CONFIGS / repo / "config.json").is_file():
        m = compose.to_request(compose.resolve(composer, ["model=hf", f"model.path={HF_CONFIGS / repo}"])[0]).model
        return m, Quantization(m.quantization) if m.quantization else Quantization.none
    if repo in MODELS:
        name, quant = MODELS[repo]
        if name.startswith("hf:"):
            return model_spec(name[3:], composer)[0], quant
        try:
            return compose.to_request(composer.compose([f"model={name}"])).model, quant
        except InputError:  # a catalog entry another branch adds
            return None
    return None


def source_of(url: str) -> str:
    """The repository (or issue thread's repository) a row's log comes from."""
    parts = url.split("github.com/")[-1].split("/")
    return "/".join(parts[:2]) + ("#" + parts[3] if len(parts) > 3 and parts[2] in ("issues", "pull") else "")


def predict(row, specs):
    if row["model"] not in specs["model"]:
        return None
    model, quant = specs["model"][row["model"]]
    gpu_name = {"h100": "h100-sxm"}.get(row["gpu"], row["gpu"])
    if gpu_name in GPUS:
        gpu = specs["gpu"][gpu_name]
    elif row.get("gpu_memory_gib_reported"):
        gpu = replace(specs["gpu"]["h100-sxm"], name=str(row["gpu"]), memory_gib=row["gpu_memory_gib_reported"])
    else:
        return None
    version = version_tuple(row["vllm_version"] or ERA.get(row["id"]))
    if str(row["quantization"]).lower() == "fp8" and quant is Quantization.none:
        quant = Quantization.fp8  # --quantization fp8: dynamic FP8 of a bf16 checkpoint at load
    defaults, _ = search.batch_defaults(gpu)
    batched = row["max_num_batched_tokens"] or defaults["max_num_batched_tokens"]
    if version is not None and version < (0, 8) and not row["max_num_batched_tokens"]:
        # The V0 engine (< 0.8) had chunked prefill off up to 32K context and profiled one batch of
        # max(max_model_len, 2048) tokens (vllm/config.py SchedulerConfig of 0.6).
        batched = max(row["max_model_len"], 2048)
    kv = KvPrecision.fp8 if str(row["kv_cache_dtype"]).startswith("fp8") or (
        row["kv_cache_dtype"] in (None, "auto") and model.quant.kv_cache_dtype == "fp8") else KvPrecision.auto
    return memory.breakdown(
        model, gpu, tp=row["tensor_parallel"] or 1, pp=row["pipeline_parallel"] or 1,
        dtype=Dtype.fp16 if row["dtype"] in ("float16", "half") else Dtype.bf16, quant=quant, kv_dtype=kv,
        max_model_len=row["max_model_len"], max_num_seqs=row["max_num_seqs"] or defaults["max_num_seqs"],
        max_num_batched_tokens=batched,
        gpu_memory_utilization=row["gpu_memory_utilization"] or 0.9,
        cuda_graphs_in_budget=not row.get("enforce_eager") and (version is None or version >= (0, 21)),
        torch_compile=version is None or version >= (0, 8))


def logged_tokens(mem, model, row, version) -> int:
    """The "KV cache size" vLLM prints. 0.32 prints int(max concurrency x max_model_len) over the KV-cache groups
    (vllm/v1/core/kv_cache_utils.py:2300 get_kv_cache_capacity), which the planner predicts; older releases printed
    num_blocks x block_size / groups (vLLM 0.19's gpt-oss-20b row: 323,972 blocks x 16 / 2 = 2,591,776 tokens beside
    a group-aware 316.07x concurrency), which differs for sliding-window models."""
    if version is not None and version >= (0, 32):
        return mem.kv_cache_tokens
    stage = max(memory.pp_partition(model.num_hidden_layers, row["pipeline_parallel"] or 1))
    return mem.kv_cache_blocks * mem.block_size // len(memory.kv_groups(model, stage))


def err(pred, real):
    return None if real in (None, 0) else (pred - real) / real * 100


def errors(mem, tokens, log) -> dict:
    """Signed % errors of one row's predictions against its log (None where the log lacks the figure)."""
    weights = log["weights_gib"] or log["model_loading_gib"]
    return {"weights": err(mem.weights_gib, weights), "kv_gib": err(mem.kv_cache_gib, log["kv_cache_memory_gib"]),
            "tokens": err(tokens, log["gpu_kv_cache_tokens"])}


def summary(label: str, errs: list[dict]) -> list[str]:
    """One row of the accuracy table: |error| median (p90) per quantity over the rows that have it."""
    cells = [label, str(len(errs))]
    for key in ("weights", "kv_gib", "tokens"):
        vals = sorted(abs(e[key]) for e in errs if e[key] is not None)
        if not vals:
            cells.append("-")
            continue
        p90 = vals[min(len(vals) - 1, round(0.9 * (len(vals) - 1)))]
        cells.append(f"{statistics.median(vals):.2f} ({p90:.2f}) n={len(vals)}")
    signed = [e["tokens"] for e in errs if e["tokens"] is not None]
    cells.append(f"{statistics.median(signed):+.2f}" if signed else "-")  # bias: median signed tokens error
    return cells


def main():
    rows = yaml.safe_load((ROOT / "tests/data/reference/vllm_memory_logs.yaml").read_text())
    held_out = set(memory.engine_constants()["calibration_rows"])
    with compose.Composer() as c:
        models = {r["model"]: model_spec(r["model"], c) for r in rows}
        specs = {"model": {k: v for k, v in models.items() if v is not None},
                 "gpu": {g: compose.to_request(c.compose([f"gpu@hw.gpu={g}"])).hw.gpu for g in GPUS}}
    t = Table(title="vLLM memory: planner vs logged (held-out rows)", title_justify="left")
    for col in ("row", "vLLM", "GPU", "TP/PP", "weights GiB pred/log", "w err %", "act GiB pred/log",
                "KV GiB pred/log", "KV err %", "KV tokens pred/log", "tokens err %"):
        t.add_column(col, justify="left" if col in ("row", "GPU") else "right")
    by_source: dict[str, list[dict]] = {}
    quantized, refused, skipped = [], [], []
    for row in rows:
        log = row["log"]
        if row["id"] in held_out:
            continue
        if not row["max_model_len"] or (log["kv_cache_memory_gib"] is None and log["gpu_kv_cache_tokens"] is None):
            skipped.append(row["id"])
            continue
        mem = predict(row, specs)
        if mem is None:
            (refused if row["model"] in specs["model"] else skipped).append(row["id"])
            continue
        tokens = logged_tokens(mem, specs["model"][row["model"]][0], row,
                               version_tuple(row["vllm_version"] or ERA.get(row["id"])))
        e = errors(mem, tokens, log)
        by_source.setdefault(source_of(row["url"]), []).append(e)
        if row["quantization"]:
            quantized.append(e)
        w_log = log["weights_gib"] or log["model_loading_gib"]
        fmt = lambda v: "-" if v is None else f"{v:+.1f}"  # noqa: E731
        t.add_row(row["id"], str(row["vllm_version"]), str(row["gpu"]),
                  f"{row['tensor_parallel']}/{row['pipeline_parallel'] or 1}",
                  f"{mem.weights_gib:.2f}/{w_log if w_log is not None else '-'}", fmt(e["weights"]),
                  f"{mem.activations_gib:.2f}/{log['activation_peak_gib'] if log['activation_peak_gib'] else '-'}",
                  f"{mem.kv_cache_gib:.2f}/{log['kv_cache_memory_gib'] if log['kv_cache_memory_gib'] else '-'}",
                  fmt(e["kv_gib"]),
                  f"{tokens:,}/{log['gpu_kv_cache_tokens'] or '-':,}" if log["gpu_kv_cache_tokens"]
                  else f"{tokens:,}/-", fmt(e["tokens"]))
    console = Console(width=200)
    console.print(t)
    console.print(
        "Known misses, explained (not tuned away): dl-qwen2-7b-*-tp2: custom all-reduce was off on those pods (no "
        "P2P, per the log), so the 1.85 GiB TP>=2 buffer term (from vLLM 0.19 with it on) is absent; "
        "i11230 (A40 vGPU, 0.6.4): non_torch 4.09 GiB on a virtual GPU, a regression the issue itself reports; "
        "pr17122 (L40S): the command is not shown (utilization, batch limits unknown).")
    acc = Table(title="Accuracy per source: |error| %, median (p90)", title_justify="left")
    for col in ("source", "rows", "weights", "KV GiB", "KV tokens", "tokens bias"):
        acc.add_column(col, justify="left" if col == "source" else "right")
    siblings = {source_of(r["url"]) for r in rows if r["id"] in held_out}  # sources the calibration rows come from
    for source, errs in sorted(by_source.items()):
        acc.add_row(*summary(source + (" (calibration rows' siblings)" if source in siblings else ""), errs))
    acc.add_row(*summary("quantized checkpoints", quantized))
    acc.add_row(*summary("all held-out rows", [e for errs in by_source.values() for e in errs]))
    console.print(acc)
    console.print(f"calibration rows held out: {len(held_out)}; refused (model known, plan impossible): "
                  f"{len(refused)} {refused}; skipped (no config.json or catalog entry for the model, GPU unknown, "
                  f"or figures missing): {len(skipped)} {skipped}")


if __name__ == "__main__":
    main()

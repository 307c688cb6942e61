"""FP8 dense GEMMs and activation quantisation as the engines run them, for benchmarks/gpu/calibrate.py.

GEMM variants (y = x @ w.T, bf16 out, rotating weight copies, CUDA-graph replay; `Bench.timeit`):
- `tensor`: torch._scaled_mm, per-tensor scales, fast accumulation: cuBLASLt (TensorRT-LLM's and vLLM's
  PerTensorTorchFP8ScaledMMLinearKernel path; vLLM's own CUTLASS kernel, csrc/quantization/cutlass_w8a8/c3x/
  scaled_mm_sm90_fp8_dispatch.cuh, runs FP8FastAccum schedules for every M bucket).
- `rowwise`: torch._scaled_mm with per-row activation and per-column weight scales: PyTorch's CUTLASS 3 sm90 kernel
  (aten/src/ATen/native/cuda/RowwiseScaledMM.cu), the same design as vLLM's cutlass_scaled_mm with per-token /
  per-channel scales (compressed-tensors FP8-dynamic, channel-wise checkpoints).
- `block`: DeepSeek-style blocks, activations 1x128 and weights 128x128 (torch.nn.functional.scaled_mm
  BlockWise1x128 x BlockWise128x128: cuBLASLt's block scaling, CUDA >= 12.9); the CUTLASS/DeepGEMM class of kernel.
- `block_triton`: the same scales through a Triton kernel of vLLM's Triton fallback design (triton_gemm.py).

Activation quantisation before an FP8 GEMM (rows x hidden, bf16 in, fp8 out), eager torch (one kernel per op, what
benchmarks/gpu/roofline_calibration.py's layer timed) and torch.compile'd (Inductor fuses each into one or two
kernels, as vLLM's custom quant kernels and its RMSNorm+quant fusion pass do): static per-tensor, dynamic per-tensor
(amax reduction + cast), dynamic per-token, dynamic per 1x128 group, RMSNorm + static per-tensor, RMSNorm + dynamic
per-token.
"""

from __future__ import annotations

import math

FP8_MAX = 448.0  # float8_e4m3fn
GEMM_SHAPES = {  # per-rank (N, K) of Llama-3.1 linear layers (fused QKV, O, gate_up, down)
    "llama-3.1-8b.tp1.qkv": (6144, 4096), "llama-3.1-8b.tp1.o": (4096, 4096),
    "llama-3.1-8b.tp1.gate_up": (28672, 4096), "llama-3.1-8b.tp1.down": (4096, 14336),
    "llama-3.1-70b.tp4.qkv": (2560, 8192), "llama-3.1-70b.tp4.o": (8192, 2048),
    "llama-3.1-70b.tp4.gate_up": (14336, 8192), "llama-3.1-70b.tp4.down": (8192, 7168),
    "llama-3.1-70b.tp8.gate_up": (7168, 8192), "llama-3.1-70b.tp8.down": (8192, 3584),
}
TINY_SHAPES = {"tiny.qkv": (384, 256), "tiny.down": (256, 512)}
GEMM_M = [1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
VARIANTS = ("tensor", "rowwise", "block", "block_triton")
QUANT_ROWS = [1, 4, 16, 64, 256, 1024, 4096, 16384]
QUANT_WIDTHS = [4096, 8192]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class Fp8Operands:
    """Rotating fp8 weight copies of one (N, K) with their scales in each variant's layout."""

    def __init__(self, b, n: int, k: int):
        torch = b.torch
        self.b, self.n, self.k = b, n, k
        copies = 1 if b.dry else max(1, min(32, math.ceil(256 * 2**20 / (n * k))))
        dev = b.dev
        self.w = [torch.randn(n, k, device=dev, dtype=torch.bfloat16).to(b.fp8) for _ in range(copies)]
        self.sb_row = torch.rand(1, n, device=dev, dtype=torch.float32) + 0.5
        l4 = _ceil(_ceil(k, 128), 4) * 4  # 128x128 weight scales: K blocks padded to 4, K-major (torch's layout)
        sb = torch.rand(_ceil(n, 128), l4, device=dev, dtype=torch.float32) + 0.5
        self.sb_blk_cublas = sb.t()
        self.sb_blk = sb[:, :_ceil(k, 128)].contiguous()  # (N/128, K/128) for the Triton kernel
        self.one = torch.ones((), device=dev, dtype=torch.float32)

    def call(self, variant: str, m: int):
        """A callable running `copies` GEMMs of M = m rows in `variant`, and the rows it really multiplies."""
        torch, b = self.b.torch, self.b
        x = torch.randn(m, self.k, device=b.dev, dtype=torch.bfloat16).to(b.fp8)
        sa_row = torch.rand(m, 1, device=b.dev, dtype=torch.float32) + 0.5
        sa_blk = (torch.rand(_ceil(self.k, 128), m, device=b.dev, dtype=torch.float32) + 0.5).t()  # outer-dim-major
        out = torch.empty(m, self.n, device=b.dev, dtype=torch.bfloat16)
        w, one = self.w, self.one
        if variant == "tensor":
            def one_call(wi):
                return torch._scaled_mm(x, wi.t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=True)
        elif variant == "rowwise":
            def one_call(wi):
                return torch._scaled_mm(x, wi.t(), sa_row, self.sb_row, out_dtype=torch.bfloat16, use_fast_accum=True)
        elif variant == "block":
            one_call = self._cublas_block(x, sa_blk)
        elif variant == "block_triton":
            from triton_gemm import block_fp8_mm

            def one_call(wi):
                return block_fp8_mm(x, wi, sa_blk, self.sb_blk, out)
        else:
            raise ValueError(variant)

        def fn():
            for wi in w:
                one_call(wi)
        return fn, one_call, (x, sa_row, sa_blk)

    def _cublas_block(self, x, sa_blk):
        """cuBLASLt block scaling: torch.nn.functional.scaled_mm with explicit recipes where this torch has it,
        else torch._scaled_mm, which infers the recipe from the scales' shapes (torch >= 2.9, sm90)."""
        torch, F = self.b.torch, self.b.F
        st = getattr(F, "ScalingType", None)
        state = {"api": "F.scaled_mm" if st is not None and hasattr(F, "scaled_mm") else "_scaled_mm"}

        def legacy(wi):
            return torch._scaled_mm(x, wi.t(), sa_blk, self.sb_blk_cublas, out_dtype=torch.bfloat16)

        def one_call(wi):
            if state["api"] == "F.scaled_mm":
                try:
                    return F.scaled_mm(x, wi.t(), scale_a=sa_blk, scale_recipe_a=st.BlockWise1x128,
                                       scale_b=self.sb_blk_cublas, scale_recipe_b=st.BlockWise128x128,
                                       output_dtype=torch.bfloat16)
                except TypeError:  # an older signature: the private op takes the same operands
                    state["api"] = "_scaled_mm"
            return legacy(wi)
        return one_call

    def reference(self, variant: str, inputs, wi):
        """float32 result of the same fp8 operands and scales (dequantised), for ||out - ref|| / ||ref||."""
        x, sa_row, sa_blk = inputs
        xf, wf = x.float(), wi.float()
        if variant == "rowwise":
            return (xf * sa_row) @ (wf * self.sb_row.t()).t()
        if variant.startswith("block"):
            kb = _ceil(self.k, 128)
            xs = xf * sa_blk.repeat_interleave(128, 1)[:, :self.k]
            ws = wf * self.sb_blk[:, :kb].repeat_interleave(128, 0)[:self.n].repeat_interleave(128, 1)[:, :self.k]
            return xs @ ws.t()
        return xf @ wf.t()


def measure_gemm(b, ops: Fp8Operands, variant: str, m: int, check: bool) -> dict:
    row = {"variant": variant, "m": m, "n": ops.n, "k": ops.k}
    fn, one_call, inputs = ops.call(variant, m)
    try:
        one_call(ops.w[0])
    except Exception as e:  # noqa: BLE001  (some kernels want M % 16 == 0: pad as an engine would)
        pad = (-m) % 16
        if pad == 0:
            raise
        row["padded_m_to"], row["unpadded_error"] = m + pad, f"{type(e).__name__}: {str(e)[:160]}"
        fn, one_call, inputs = ops.call(variant, m + pad)
    if check and b.cuda:
        got = one_call(ops.w[0]).float()
        ref = ops.reference(variant, inputs, ops.w[0])
        row["rel_err"] = float((got - ref).norm() / ref.norm())
    t = b.timeit(fn, n_inner=len(ops.w))
    ms = t["median_ms"]
    flops, nbytes = 2.0 * m * ops.n * ops.k, ops.n * ops.k + m * ops.k + 2 * m * ops.n
    row.update({"median_ms": ms, "tflops": flops / ms / 1e9, "total_gb_s": nbytes / ms / 1e6, "timing": t})
    return row


def run_fp8_gemm(b) -> dict:
    """Every variant at every shape and M; one correctness check per variant and shape (M = 64)."""
    if b.fp8 is None:
        return {"error": "this torch has no float8_e4m3fn"}
    shapes = TINY_SHAPES if b.dry else GEMM_SHAPES
    ms = [1, 16, 64] if b.dry else GEMM_M
    variants = [v for v in VARIANTS if b.cuda or v == "tensor"]  # CPU dry run: only what CPU torch has
    rows, skipped = [], []
    for family, (n, k) in shapes.items():
        if b.time_left() < 30:
            skipped.append(family)
            continue
        ops = Fp8Operands(b, n, k)
        for variant in variants:
            for m in ms:
                try:
                    r = measure_gemm(b, ops, variant, m, check=(m == 64))
                except Exception as e:  # noqa: BLE001
                    r = {"variant": variant, "m": m, "n": n, "k": k, "error": f"{type(e).__name__}: {str(e)[:200]}"}
                rows.append({**r, "family": family})
        del ops
        if b.cuda:
            b.torch.cuda.empty_cache()
        got = {v: [r for r in rows if r["family"] == family and r["variant"] == v and "tflops" in r] for v in variants}
        print(f"  fp8 {family}: " + " ".join(f"{v}@{r['m']}:{r['tflops']:.0f}" for v, rs in got.items() for r in rs
                                               if r["m"] in (16, 8192)) + f" ({b.time_left():.0f}s left)", flush=True)
    return {"m_values": ms, "variants": variants, "rows": rows, "skipped": skipped}


# ---- activation quantisation -------------------------------------------------------------------------------------


def quant_ops(torch, F, fp8, width: int) -> dict:
    """The quantisation an engine runs before an FP8 GEMM, as plain torch functions of (x, residual, weight)."""
    inv = 1.0 / 0.05  # a static scale: a Python constant, baked into the kernel as an engine's scale tensor is read

    def cast(y):
        return y.clamp(-FP8_MAX, FP8_MAX).to(fp8)

    def rms(x, w):
        xf = x.float()
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()

    def static_tensor(x, r, w):
        return cast(x.float() * inv)

    def dynamic_tensor(x, r, w):
        s = x.abs().amax().float().clamp(min=1e-12) / FP8_MAX
        return cast(x.float() / s), s

    def dynamic_token(x, r, w):
        s = x.abs().amax(-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
        return cast(x.float() / s), s

    def dynamic_group128(x, r, w):
        g = x.float().view(x.shape[0], -1, 128)
        s = g.abs().amax(-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
        return cast(g / s).view(x.shape), s

    def rmsnorm_static_tensor(x, r, w):
        h = x + r
        return cast(rms(h, w) * inv), h

    def rmsnorm_dynamic_token(x, r, w):
        h = x + r
        y = rms(h, w)
        s = y.abs().amax(-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
        return cast(y / s), s, h

    return {"static_tensor": static_tensor, "dynamic_tensor": dynamic_tensor, "dynamic_token": dynamic_token,
            "dynamic_group128": dynamic_group128, "rmsnorm_static_tensor": rmsnorm_static_tensor,
            "rmsnorm_dynamic_token": rmsnorm_dynamic_token}


QUANT_BYTES = {  # bytes a fused kernel must move per element of x: bf16 in, fp8 out (+ residual in/out, norms)
    "static_tensor": 3, "dynamic_tensor": 3, "dynamic_token": 3, "dynamic_group128": 3,
    "rmsnorm_static_tensor": 7, "rmsnorm_dynamic_token": 7,
}


def run_quant(b) -> dict:
    """Each quantisation op eager and compiled (dynamic shapes: one compile per op), rows x width."""
    torch, F = b.torch, b.F
    if b.fp8 is None:
        return {"error": "this torch has no float8_e4m3fn"}
    rows_list = [1, 4, 64] if b.dry else QUANT_ROWS
    widths = [256] if b.dry else QUANT_WIDTHS
    out_rows, errors = [], {}
    for mode in ("eager", "compiled"):
        for name, op in quant_ops(torch, F, b.fp8, widths[0]).items():
            if b.time_left() < 25:
                errors[f"{mode}.{name}"] = "skipped: time"
                continue
            fn_op = op
            if mode == "compiled":
                try:
                    fn_op = torch.compile(op, dynamic=True, fullgraph=True)
                except Exception as e:  # noqa: BLE001
                    errors[f"{mode}.{name}"] = f"{type(e).__name__}: {str(e)[:160]}"
                    continue
            for width in widths:
                for rows in rows_list:
                    dt = {"device": b.dev, "dtype": torch.bfloat16}
                    copies = 1 if b.dry else max(1, min(64, math.ceil(256 * 2**20 / (rows * width * 2))))
                    xs = [torch.randn(rows, width, **dt) for _ in range(copies)]
                    rs = [torch.randn(rows, width, **dt) for _ in range(copies)]
                    wgt = torch.ones(width, **dt)

                    def fn(fn_op=fn_op, xs=xs, rs=rs, wgt=wgt):
                        for x, r in zip(xs, rs):
                            fn_op(x, r, wgt)
                    key = f"{mode}.{name}.{width}.{rows}"
                    try:
                        t = b.timeit(fn, n_inner=copies)
                    except Exception as e:  # noqa: BLE001
                        errors[key] = f"{type(e).__name__}: {str(e)[:160]}"
                        continue
                    moved = QUANT_BYTES[name] * rows * width
                    out_rows.append({"mode": mode, "op": name, "width": width, "rows": rows, "us": t["median_ms"] * 1e3,
                                     "gb_s": moved / t["median_ms"] / 1e6, "timing": t})
            got = [r for r in out_rows if r["mode"] == mode and r["op"] == name]
            if got:
                print(f"  quant {mode} {name}: " + " ".join(f"{r['width']}x{r['rows']}:{r['us']:.1f}us"
                                                            for r in got if r["rows"] in (1, rows_list[-1])),
                      flush=True)
    return {"rows": out_rows, "errors": errors, "bytes_per_element": QUANT_BYTES}

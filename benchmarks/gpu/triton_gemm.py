"""Triton GEMM kernels of the shape the engines' own Triton paths have, for benchmarks/gpu/calibrate.py.

- `block_fp8_mm`: C = A @ B.T with DeepSeek-style block scales (A: one fp32 scale per row and 128-wide K group,
  "1x128"; B: one per 128x128 block), the scales applied per K block inside the main loop. This is the design of
  vLLM's Triton fallback for block FP8 (`w8a8_block_fp8_matmul`, vllm/model_executor/layers/quantization/utils/
  fp8_utils.py, used when neither DeepGEMM nor the CUTLASS block kernel applies) and SGLang's
  (python/sglang/srt/layers/quantization/fp8_kernel.py).
- `moe_mm`: the grouped expert GEMM of a fused MoE layer: rows sorted by expert and padded to the row block, each
  program multiplies one row block of one expert, gathering its token rows, as vLLM's `fused_moe_kernel`
  (vllm/model_executor/layers/fused_moe/fused_moe.py) and SGLang's copy of it do; bf16, or fp8 with block scales.

The kernels are written here (facts carried over, not code). Block sizes are fixed per M bucket (no autotuning): an
engine without a tuned config file for the shape runs defaults of this kind.
Interpreter check on a CPU: TRITON_INTERPRET=1 python benchmarks/gpu/triton_gemm.py
"""

from __future__ import annotations

import triton
import triton.language as tl

GROUP_K = 128  # the K width of one scale group (DeepSeek-V3 weight_block_size [128, 128])


@triton.jit
def _scaled_k_loop(a_ptrs, b_ptrs, sa_ptrs, sb_ptrs, mask_m, mask_n, K, stride_sak, stride_sbk,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SCALED: tl.constexpr):
    """acc[BM, BN] = sum over K blocks of A_blk @ B_blk (times the blocks' scales when SCALED)."""
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    offs_k = tl.arange(0, BK)
    for kb in range(0, tl.cdiv(K, BK)):
        kmask = offs_k < K - kb * BK
        a = tl.load(a_ptrs, mask=mask_m[:, None] & kmask[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=kmask[:, None] & mask_n[None, :], other=0.0)
        if SCALED:
            sa = tl.load(sa_ptrs + kb * stride_sak, mask=mask_m, other=0.0)
            sb = tl.load(sb_ptrs + kb * stride_sbk, mask=mask_n, other=0.0)
            acc += tl.dot(a, b) * sa[:, None] * sb[None, :]
        else:
            acc = tl.dot(a, b, acc)
        a_ptrs += BK
        b_ptrs += BK
    return acc


@triton.jit
def _block_fp8_mm_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, M, N, K, stride_am, stride_bn, stride_cm,
                         stride_sam, stride_sak, stride_sbn, stride_sbk,
                         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    grid_m, grid_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    width = GROUP_M * grid_n  # grouped launch order: neighbouring programs share B tiles in L2
    group = pid // width
    first_m = group * GROUP_M
    size_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    mask_m, mask_n = offs_m < M, offs_n < N
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + offs_n[None, :] * stride_bn + offs_k[:, None]
    sa_ptrs = sa_ptr + offs_m * stride_sam
    sb_ptrs = sb_ptr + (offs_n // 128) * stride_sbn
    acc = _scaled_k_loop(a_ptrs, b_ptrs, sa_ptrs, sb_ptrs, mask_m, mask_n, K, stride_sak, stride_sbk,
                         BM, BN, BK, True)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _moe_mm_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, sorted_ids_ptr, expert_ids_ptr, num_rows, N, K, topk,
                   stride_am, stride_be, stride_bn, stride_cm, stride_sam, stride_sak, stride_sbe, stride_sbn,
                   stride_sbk, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SCALED: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = tl.load(sorted_ids_ptr + pid_m * BM + tl.arange(0, BM))  # routed (token, slot) ids; padding = num_rows
    mask_m = rows < num_rows
    expert = tl.load(expert_ids_ptr + pid_m)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    mask_n = offs_n < N
    tokens = rows // topk  # each token's input row is shared by its top-k slots
    a_ptrs = a_ptr + tokens[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :] * stride_bn + offs_k[:, None]
    sa_ptrs = sa_ptr + tokens * stride_sam
    sb_ptrs = sb_ptr + expert * stride_sbe + (offs_n // 128) * stride_sbn
    acc = _scaled_k_loop(a_ptrs, b_ptrs, sa_ptrs, sb_ptrs, mask_m, mask_n, K, stride_sak, stride_sbk,
                         BM, BN, BK, SCALED)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def _config(m: int) -> dict:
    """Block sizes by rows per program (no autotuning): small tiles for decode-sized M, 64x128 beyond."""
    if m <= 16:
        return {"BM": 16, "BN": 64, "num_warps": 4, "num_stages": 4}
    if m <= 32:
        return {"BM": 32, "BN": 64, "num_warps": 4, "num_stages": 4}
    return {"BM": 64, "BN": 128, "num_warps": 4, "num_stages": 3}


def block_fp8_mm(a, b, sa, sb, out):
    """out[M, N] = (A * sa) @ (B * sb).T: A (M, K) fp8 with sa (M, K/128) fp32; B (N, K) fp8 with sb (N/128, K/128)."""
    M, K = a.shape
    N = b.shape[0]
    cfg = _config(M)
    grid = (triton.cdiv(M, cfg["BM"]) * triton.cdiv(N, cfg["BN"]),)
    _block_fp8_mm_kernel[grid](a, b, out, sa, sb, M, N, K, a.stride(0), b.stride(0), out.stride(0),
                               sa.stride(0), sa.stride(1), sb.stride(0), sb.stride(1),
                               BM=cfg["BM"], BN=cfg["BN"], BK=GROUP_K, GROUP_M=8,
                               num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out


def moe_align(torch, tokens_per_expert: list, topk: int, bm: int, device):
    """Routed rows sorted by expert, each expert's run padded to a multiple of `bm` with the padding id
    (num_rows), and the expert of each row block: what vLLM's moe_align_block_size produces. Slot r of the
    routing is row r of the output (token r // topk)."""
    num_rows = sum(tokens_per_expert)
    ids, experts, start = [], [], 0
    for e, n in enumerate(tokens_per_expert):
        if n == 0:
            continue
        padded = -(-n // bm) * bm
        ids.extend(range(start, start + n))
        ids.extend([num_rows] * (padded - n))
        experts.extend([e] * (padded // bm))
        start += n
    return (torch.tensor(ids, dtype=torch.int32, device=device),
            torch.tensor(experts, dtype=torch.int32, device=device))


def moe_mm(a, b, out, sorted_ids, expert_ids, topk: int, bm: int, sa=None, sb=None, cfg: dict | None = None):
    """out[rows, N] = A[row // topk] @ B[expert].T per routed row: A (tokens, K); B (E, N, K). With sa
    (tokens, K/128) and sb (E, N/128, K/128): fp8 with block scales."""
    num_rows, N = out.shape
    K = a.shape[1]
    cfg = cfg or _config(bm)
    scaled = sa is not None
    sa_ = sa if scaled else a
    sb_ = sb if scaled else b
    grid = (expert_ids.shape[0], triton.cdiv(N, cfg["BN"]))
    _moe_mm_kernel[grid](a, b, out, sa_, sb_, sorted_ids, expert_ids, num_rows, N, K, topk,
                         a.stride(0), b.stride(0), b.stride(1), out.stride(0),
                         sa_.stride(0), sa_.stride(1) if scaled else 0, sb_.stride(0),
                         sb_.stride(1) if scaled else 0, sb_.stride(2) if scaled else 0,
                         BM=bm, BN=cfg["BN"], BK=GROUP_K, SCALED=scaled,
                         num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out


def _self_check() -> None:
    """Both kernels against float64 references on random data (runs under TRITON_INTERPRET=1 on a CPU)."""
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    M, N, K = 40, 256, 384
    if dev == "cuda" and hasattr(torch, "float8_e4m3fn"):
        a = torch.randn(M, K, generator=g).to(dev, torch.float8_e4m3fn)
        b = torch.randn(N, K, generator=g).to(dev, torch.float8_e4m3fn)
        sa = torch.rand(M, K // 128, generator=g).to(dev) + 0.5
        sb = torch.rand(N // 128, K // 128, generator=g).to(dev) + 0.5
        out = block_fp8_mm(a, b, sa, sb, torch.empty(M, N, device=dev, dtype=torch.bfloat16))
        ref = (a.double() * sa.double().repeat_interleave(128, 1)) @ (
            b.double() * sb.double().repeat_interleave(128, 0).repeat_interleave(128, 1)).t()
        err = float((out.double() - ref).norm() / ref.norm())
        print(f"block_fp8_mm rel_err {err:.2e}")
        assert err < 2e-2, err
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    E, topk, tokens = 4, 2, 24
    x = torch.randn(tokens, K, generator=g).to(dev, dt)
    w = torch.randn(E, N, K, generator=g).to(dev, dt)
    counts = [10, 0, 25, 13]  # 48 routed rows = 24 tokens x top-2
    sorted_ids, expert_ids = moe_align(torch, counts, topk, 16, dev)
    out = torch.full((tokens * topk, N), float("nan"), device=dev, dtype=dt)
    moe_mm(x, w, out, sorted_ids, expert_ids, topk, 16)
    ref = torch.empty(tokens * topk, N, dtype=torch.float64)
    start = 0
    for e, n in enumerate(counts):
        r = torch.arange(start, start + n)
        ref[r] = x.double().cpu()[r // topk] @ w.double().cpu()[e].t()
        start += n
    err = float((out.double().cpu() - ref).norm() / ref.norm())
    print(f"moe_mm rel_err {err:.2e}")
    assert not torch.isnan(out).any() and err < 2e-2, err


if __name__ == "__main__":
    _self_check()

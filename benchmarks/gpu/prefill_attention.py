"""Causal prefill attention (flash-style kernels), for benchmarks/gpu/calibrate.py: achieved TFLOP/s by prompt length.

torch's F.scaled_dot_product_attention through each backend that takes the call: FLASH_ATTENTION (FlashAttention-2
kernels vendored in PyTorch), CUDNN_ATTENTION (cuDNN's fused attention, which has Hopper wgmma/TMA kernels),
EFFICIENT_ATTENTION, and whatever the default dispatch picks. The engines run FlashAttention-3 on Hopper (vLLM's
FLASH_ATTN backend through vllm-flash-attn, SGLang's default `fa3`), TensorRT-LLM its own FMHA kernels; none of them
can be installed on the lent machine (no registry there, wheels over the size the call can carry), so the measured
curve is the best of torch's backends and docs/perf-model.md cites the FlashAttention-3 paper's figures beside it.
A batch of `tokens // length` sequences of one length (at least one): FLOPs = 4 x heads x head_dim x L(L+1)/2 per
sequence (QK^T and PV, causal half).
"""

from __future__ import annotations

import math

PREFILL_CONFIGS = {  # q heads, kv heads, head_dim per GPU
    "llama-3.1-8b.tp1": (32, 8, 128),
    "llama-3.1-70b.tp8": (8, 1, 128),
    "gpt-oss-120b.tp1": (64, 8, 64),  # HF config.json: 64 attention heads, 8 KV heads, head_dim 64
}
LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384]
TOKENS = 16384  # tokens per timed call (a batch of TOKENS // L sequences)


def run_prefill_attention(b) -> dict:
    torch, F = b.torch, b.F
    from torch.nn.attention import sdpa_kernel

    cfgs = {"tiny": (4, 2, 64)} if b.dry else PREFILL_CONFIGS
    lengths = [64, 128] if b.dry else LENGTHS
    tokens = 256 if b.dry else TOKENS
    from torch.nn.attention import SDPBackend

    backends = [("default", None)] + ([(n.lower(), getattr(SDPBackend, n)) for n in
                                       ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")
                                       if hasattr(SDPBackend, n)] if b.cuda else [])
    rows = []
    for cname, (hq, hkv, d) in cfgs.items():
        for L in lengths:
            if b.time_left() < 20:
                rows.append({"config": cname, "length": L, "skipped": "time"})
                continue
            bs = max(1, tokens // L)
            dt = {"device": b.dev, "dtype": torch.bfloat16}
            q = torch.randn(bs, hq, L, d, **dt)
            k = torch.randn(bs, hkv, L, d, **dt)
            v = torch.randn(bs, hkv, L, d, **dt)
            flops = 4.0 * bs * hq * d * L * (L + 1) / 2
            row = {"config": cname, "length": L, "batch": bs, "q_heads": hq, "kv_heads": hkv, "head_dim": d,
                   "flops": flops, "backends": {}}
            for bname, be in backends:
                def call(be=be):
                    if be is None:
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                    with sdpa_kernel([be]):
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                try:
                    if bname == "default" and L <= 1024 and b.cuda:  # correctness: fp32 reference, first sequence
                        rep = hq // hkv
                        kk, vv = k[:1].float().repeat_interleave(rep, 1), v[:1].float().repeat_interleave(rep, 1)
                        s = (q[:1].float() @ kk.transpose(-1, -2)) / math.sqrt(d)
                        s = s.masked_fill(torch.triu(torch.ones(L, L, dtype=torch.bool, device=b.dev), 1), -math.inf)
                        ref = torch.softmax(s, -1) @ vv
                        row["rel_err"] = float((call()[:1].float() - ref).norm() / ref.norm())
                    t = b.timeit(call)
                    row["backends"][bname] = {"median_ms": t["median_ms"], "tflops": flops / t["median_ms"] / 1e9,
                                              "timing": t}
                except Exception as e:  # noqa: BLE001
                    row["backends"][bname] = {"error": f"{type(e).__name__}: {str(e)[:160]}"}
            q = k = v = None
            if b.cuda:
                torch.cuda.empty_cache()
            ok = {kb: vb["tflops"] for kb, vb in row["backends"].items() if "tflops" in vb}
            row["best_backend"] = max(ok, key=ok.get) if ok else None
            rows.append(row)
            print(f"  prefill {cname} L={L} x{bs}: " + " ".join(f"{kb}={vb:.0f}T" for kb, vb in ok.items()), flush=True)
    return {"lengths": lengths, "tokens_per_call": tokens, "rows": rows}

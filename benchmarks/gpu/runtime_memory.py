"""Measure, on one CUDA GPU, the memory terms the planner's vLLM memory model uses (planner/memory.py):

1. the CUDA context (device memory gone before any tensor exists),
2. non-torch memory that appears with the first cuBLAS GEMM and the first SDPA call (workspaces),
3. the transient activation peak of a vLLM-shaped Llama decoder layer (fused QKV, fused gate_up, SiLU-and-mul)
   over T tokens, the shape vLLM's profile_run uses, against the planner's per-token count,
4. the sampler's logits peak for S sequences (bf16 logits → fp32 → softmax), against the planner's count.

Prints a table and writes JSON (argument: output path). Pure PyTorch; run: python benchmarks/gpu/runtime_memory.py out.json
"""

import json
import platform
import sys
import time

import torch
import torch.nn.functional as F

GIB = 2**30
dev = torch.device("cuda")


def free_bytes():
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0]


def context_and_workspaces():
    torch.cuda.init()
    torch.zeros(1, device=dev)
    free0, total = torch.cuda.mem_get_info()
    res0 = torch.cuda.memory_reserved()
    a = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
    (a @ a).sum().item()
    free1 = free_bytes()
    res1 = torch.cuda.memory_reserved()
    q = torch.randn(1, 32, 1024, 128, device=dev, dtype=torch.bfloat16)
    F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().item()
    free2 = free_bytes()
    res2 = torch.cuda.memory_reserved()
    del a, q
    return {
        "total_gib": total / GIB,
        "context_gib": (total - free0 - res0) / GIB,
        "cublas_non_torch_gib": ((free0 - free1) - (res1 - res0)) / GIB,
        "sdpa_non_torch_gib": ((free1 - free2) - (res2 - res1)) / GIB,
    }


class Layer(torch.nn.Module):
    """A Llama decoder layer shaped like vLLM's (QKVParallelLinear, MergedColumnParallelLinear, SiluAndMul)."""

    def __init__(self, h, heads, kv_heads, head_dim, inter):
        super().__init__()
        self.h, self.heads, self.kv, self.hd, self.inter = h, heads, kv_heads, head_dim, inter
        dt = dict(device=dev, dtype=torch.bfloat16)
        self.qkv = torch.randn((heads + 2 * kv_heads) * head_dim, h, **dt) * 0.01
        self.o = torch.randn(h, heads * head_dim, **dt) * 0.01
        self.gate_up = torch.randn(2 * inter, h, **dt) * 0.01
        self.down = torch.randn(h, inter, **dt) * 0.01
        self.n1 = torch.ones(h, **dt)
        self.n2 = torch.ones(h, **dt)

    def forward(self, x, residual):
        residual = x + residual
        x = F.rms_norm(residual, (self.h,), self.n1)
        qkv = x @ self.qkv.t()
        q, k, v = qkv.split([self.heads * self.hd, self.kv * self.hd, self.kv * self.hd], dim=-1)
        t = x.shape[0]
        q = q.view(t, self.heads, self.hd).transpose(0, 1).unsqueeze(0)
        k = k.view(t, self.kv, self.hd).transpose(0, 1).unsqueeze(0)
        v = v.view(t, self.kv, self.hd).transpose(0, 1).unsqueeze(0)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        attn = attn.squeeze(0).transpose(0, 1).reshape(t, self.heads * self.hd)
        del q, k, v, qkv
        x = attn @ self.o.t()
        del attn
        residual = x + residual
        x = F.rms_norm(residual, (self.h,), self.n2)
        gu = x @ self.gate_up.t()
        g, u = gu.chunk(2, dim=-1)
        act = F.silu(g) * u
        del gu, g, u
        x = act @ self.down.t()
        return x, residual


def planner_per_token_bytes(h, heads, kv, hd, inter):
    # planner/memory.py activation_peak_bytes: (2·hidden + qkv/tp + 3·inter/tp) × 2 bytes (already per-rank shapes)
    return (2 * h + (heads + 2 * kv) * hd + 3 * inter) * 2


def activation_peak(name, h, heads, kv, hd, inter, tokens):
    rows = []
    layers = [Layer(h, heads, kv, hd, inter) for _ in range(2)]
    for t in tokens:
        x = torch.randn(t, h, device=dev, dtype=torch.bfloat16)
        res = torch.zeros_like(x)
        torch.cuda.synchronize()
        with torch.no_grad():
            for layer in layers:  # warm-up (workspaces, autotuning) outside the measurement
                layer(x, res)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            y, r = x, res
            for layer in layers:
                y, r = layer(y, r)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        del x, res, y, r
        torch.cuda.empty_cache()
        predicted = planner_per_token_bytes(h, heads, kv, hd, inter) * t
        rows.append({"shape": name, "tokens": t, "measured_gib": peak / GIB, "planner_gib": predicted / GIB,
                     "ratio": peak / predicted})
    return rows


def sampler_peak(h, vocab, seqs):
    rows = []
    lm_head = torch.randn(vocab, h, device=dev, dtype=torch.bfloat16) * 0.01
    for s in seqs:
        hidden = torch.randn(s, h, device=dev, dtype=torch.bfloat16)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            logits = (hidden @ lm_head.t()).float()
            probs = torch.softmax(logits, dim=-1)
            torch.argmax(probs, dim=-1).sum().item()
            torch.multinomial(probs, 1).sum().item()
        peak = torch.cuda.max_memory_allocated() - base
        del logits, probs, hidden
        predicted = s * vocab * 4 * 2  # planner: fp32 logits, 2 copies
        rows.append({"seqs": s, "vocab": vocab, "measured_gib": peak / GIB, "planner_gib": predicted / GIB,
                     "ratio": peak / predicted})
    del lm_head
    torch.cuda.empty_cache()
    return rows


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "runtime_memory.json"
    result = {
        "provenance": {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "cuda": torch.version.cuda, "driver_note": "see nvidia-smi in the run log",
                       "date": time.strftime("%Y-%m-%d"), "host": platform.node(),
                       "command": "python benchmarks/gpu/runtime_memory.py"},
        "context": context_and_workspaces(),
    }
    shapes = [("llama3.1-8b tp1", 4096, 32, 8, 128, 14336), ("llama3.1-70b tp4", 8192, 16, 2, 128, 7168),
              ("llama3.1-70b tp8", 8192, 8, 1, 128, 3584)]
    result["activation"] = [r for s in shapes for r in activation_peak(*s, tokens=[2048, 8192, 16384])]
    result["sampler"] = sampler_peak(4096, 128256, [256, 1024])
    print(json.dumps(result["context"], indent=1))
    print(f"{'shape':20} {'tokens':>7} {'measured GiB':>13} {'planner GiB':>12} {'ratio':>6}")
    for r in result["activation"]:
        print(f"{r['shape']:20} {r['tokens']:7d} {r['measured_gib']:13.3f} {r['planner_gib']:12.3f} {r['ratio']:6.2f}")
    for r in result["sampler"]:
        print(f"sampler seqs={r['seqs']:5d} vocab={r['vocab']} measured {r['measured_gib']:.3f} GiB "
              f"planner {r['planner_gib']:.3f} ratio {r['ratio']:.2f}")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

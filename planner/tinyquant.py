"""Quantized copies of the tiny model (planner/tinymodel.py), offline: the checkpoint formats real quantizers write,
so tests can serve them on vLLM's CPU build and check the planner's import, weight layout and KV capacity.

Formats (tensor names, dtypes and shapes as the engines load them):
- ct-fp8: compressed-tensors "float-quantized" W8A8 FP8 (llm-compressor FP8_DYNAMIC): weight float8_e4m3fn [N, K],
  weight_scale fp32 [N, 1]; activations dynamic per token.
- ct-int8: compressed-tensors "int-quantized" W8A8 INT8: weight int8 [N, K], weight_scale fp32 [N, 1].
- ct-w4a16: compressed-tensors "pack-quantized" W4A16, symmetric, group 128: weight_packed int32 [N, K/8],
  weight_scale bf16 [N, K/128], weight_shape int64 [2] (compressed_tensors pack_to_int32).
- gptq: AutoGPTQ int4, sym, group 128, desc_act false: qweight int32 [K/8, N], qzeros int32 [K/128, N/8],
  scales fp16 [K/128, N], g_idx int32 [K].
- awq: AutoAWQ GEMM int4, zero point, group 128: qweight int32 [K, N/8], qzeros int32 [K/128, N/8],
  scales fp16 [K/128, N] (nibbles in AWQ's order 0 2 4 6 1 3 5 7).
Each may also declare an FP8 KV cache (compressed-tensors kv_cache_scheme), which vLLM then uses at
--kv-cache-dtype auto. lm_head and the embedding stay bf16, as the quantizers leave them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from planner.tinymodel import COMPLETE_MARKER, build_once, default_cache_root, ensure_tiny_model, params_hash

FORMATS = ("ct-fp8", "ct-int8", "ct-w4a16", "gptq", "awq")
LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
          "mlp.up_proj", "mlp.down_proj")
GROUP = 128
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ's nibble order within an int32
GENERATOR_VERSION = 1


# precision.weights → the tiny checkpoint in that format, for a CPU plan of model=tiny-llama: vLLM's CPU build loads
# each of these (tests/test_vllm_cpu_kv.py serves them) but quantizes nothing at load, so `precision=int8` on the
# CPU means serving a checkpoint already in that format, and the unquantized tiny model is its twin (the baseline).
CPU_CHECKPOINTS = {"int8": "ct-int8", "fp8": "ct-fp8", "gptq": "gptq", "awq": "awq"}


def cpu_overrides(weights: str, kv_cache: str, generate: bool) -> list[str]:
    """Model overrides that make a CPU plan of the tiny model serve its checkpoint in format `weights` (with the
    FP8 KV-cache scheme when `kv_cache` is fp8): the quantization its config.json declares, and with `generate` the
    checkpoint's path (built here once). [] when the format has no tiny checkpoint."""
    from planner.catalog import quantization_overrides

    fmt = CPU_CHECKPOINTS.get(weights)
    if fmt is None:
        return []
    kv_fp8 = kv_cache == "fp8"
    out = quantization_overrides(CONFIGS[fmt](kv_fp8))
    return out + ([f"model.path={ensure_tiny_quantized(fmt, kv_fp8=kv_fp8)}"] if generate else [])


def ensure_tiny_quantized(fmt: str, kv_fp8: bool = False, cache_dir: Path | None = None) -> Path:
    """A directory holding the tiny model in format `fmt` (FORMATS), built once from the tiny model and cached."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    base = ensure_tiny_model(cache_dir)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    target = root / f"tiny-llama-{params_hash()}-{fmt}{'-kvfp8' if kv_fp8 else ''}-q{GENERATOR_VERSION}"
    return build_once(target, lambda tmp: _build(base, tmp, fmt, kv_fp8), fmt)


def _build(base: Path, out: Path, fmt: str, kv_fp8: bool) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(base / "model.safetensors"))
    quantized = {}
    for name, w in tensors.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module is None or not module.endswith(LINEAR):
            quantized[name] = w
            continue
        for suffix, t in QUANTIZERS[fmt](w).items():
            quantized[f"{module}.{suffix}"] = t.contiguous()
    save_file(quantized, str(out / "model.safetensors"), metadata={"format": "pt"})
    for f in base.iterdir():
        if f.name not in ("model.safetensors", "config.json", COMPLETE_MARKER):
            shutil.copy(f, out / f.name)
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization_config"] = CONFIGS[fmt](kv_fp8)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for f in out.iterdir():
        os.chmod(f, 0o644)


def _per_channel(w, qmax: float):
    scale = w.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / qmax
    return scale, w.float() / scale


def _ct_fp8(w) -> dict:
    import torch

    scale, q = _per_channel(w, torch.finfo(torch.float8_e4m3fn).max)
    return {"weight": q.to(torch.float8_e4m3fn), "weight_scale": scale}


def _ct_int8(w) -> dict:
    import torch

    scale, q = _per_channel(w, 127.0)
    return {"weight": q.round().clamp(-128, 127).to(torch.int8), "weight_scale": scale}


def _int4_groups(w):
    """Symmetric int4 per group of GROUP inputs: (values in [-8, 7] as int8 [N, K], scales [N, K/GROUP])."""
    import torch

    n, k = w.shape
    g = w.float().reshape(n, k // GROUP, GROUP)
    scale = g.abs().amax(dim=2, keepdim=True).clamp(min=1e-8) / 7.0
    q = (g / scale).round().clamp(-8, 7).to(torch.int8).reshape(n, k)
    return q, scale.squeeze(2)


def _ct_w4a16(w) -> dict:
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    q, scale = _int4_groups(w)
    return {"weight_packed": pack_to_int32(q, 4), "weight_scale": scale.to(torch.bfloat16),
            "weight_shape": torch.tensor(list(w.shape), dtype=torch.int64)}


def _pack_nibbles(u, dim: int, order=tuple(range(8))):
    """Pack unsigned 4-bit values (int32 tensor) eight to an int32 along `dim`, nibble j from position order[j]."""
    import torch

    u = u.movedim(dim, -1)
    u = u.reshape(*u.shape[:-1], u.shape[-1] // 8, 8)
    packed = torch.zeros(u.shape[:-1], dtype=torch.int64)
    for j, src in enumerate(order):
        packed |= (u[..., src].to(torch.int64) & 0xF) << (4 * j)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)
    return packed.movedim(-1, dim)


def _gptq(w) -> dict:
    import torch

    q, scale = _int4_groups(w)  # [N, K], [N, K/G]
    n, k = w.shape
    u = (q.to(torch.int32) + 8).t()  # [K, N], unsigned around zero point 8
    zeros = torch.full((k // GROUP, n), 8 - 1, dtype=torch.int32)  # GPTQ v1 stores zero - 1
    return {"qweight": _pack_nibbles(u, 0), "qzeros": _pack_nibbles(zeros, 1),
            "scales": scale.t().to(torch.float16), "g_idx": torch.arange(k, dtype=torch.int32) // GROUP}


def _awq(w) -> dict:
    import torch

    q, scale = _int4_groups(w)
    n, k = w.shape
    u = (q.to(torch.int32) + 8).t()  # [K, N]
    zeros = torch.full((k // GROUP, n), 8, dtype=torch.int32)
    return {"qweight": _pack_nibbles(u, 1, AWQ_ORDER), "qzeros": _pack_nibbles(zeros, 1, AWQ_ORDER),
            "scales": scale.t().to(torch.float16)}


QUANTIZERS = {"ct-fp8": _ct_fp8, "ct-int8": _ct_int8, "ct-w4a16": _ct_w4a16, "gptq": _gptq, "awq": _awq}


def _ct_config(weights: dict, activations, fmt: str, kv_fp8: bool) -> dict:
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                          "input_activations": activations, "output_activations": None}},
            "ignore": ["lm_head"],
            "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False,
                                "symmetric": True} if kv_fp8 else None}


def _args(bits: int, kind: str, strategy: str, dynamic: bool = False, group_size=None) -> dict:
    return {"num_bits": bits, "type": kind, "strategy": strategy, "symmetric": True, "dynamic": dynamic,
            "group_size": group_size, "block_structure": None, "actorder": None}


CONFIGS = {
    "ct-fp8": lambda kv: _ct_config(_args(8, "float", "channel"), _args(8, "float", "token", True),
                                    "float-quantized", kv),
    "ct-int8": lambda kv: _ct_config(_args(8, "int", "channel"), _args(8, "int", "token", True), "int-quantized",
                                     kv),
    "ct-w4a16": lambda kv: _ct_config(_args(4, "int", "group", group_size=GROUP), None, "pack-quantized", kv),
    "gptq": lambda kv: {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": False, "sym": True,
                        "lm_head": False, "checkpoint_format": "gptq"},
    "awq": lambda kv: {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True,
                       "version": "gemm"},
}


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or FORMATS:
        print(ensure_tiny_quantized(name.removesuffix("+kv"), kv_fp8=name.endswith("+kv")))

"""The values a rule's `when` can read: the typed request, flattened into namespaces, plus a few derived numbers.

Namespaces: model, checkpoint (the model's quantized layout, specs.CheckpointQuant), gpu, hw, target, workload,
precision, backend, pins, derived. Their field names come from the spec dataclasses, so a rule that names a field
that does not exist fails when the rules load.
"""

import dataclasses
import enum
import math

from planner import memory
from planner.specs import BackendSpec, CheckpointQuant, GpuSpec, HwSpec, ModelSpec, Pins, PrecisionSpec, Request, TargetSpec, \
    WorkloadSpec

# Derived values: name → what it is (the docs table lists them).
DERIVED = {
    "weights_gib_bf16": "GiB of the whole model's weights in bf16 (all experts)",
    "weights_gib_checkpoint": "GiB of the whole model's weights in the checkpoint's own format (bf16, or its "
                              "quantization: FP8, INT4 ...), as the engine loads them on one GPU",
    "usable_gib_per_gpu": "GiB vLLM may use per GPU at its default utilization (0.92)",
    "gpus_needed_bf16": "GPUs whose usable memory the bf16 weights need, at the least",
    "context_len": "tokens of context the plan will serve (pins.max_model_len, workload.max_model_len, or the "
                   "longest request)",
    "mean_request_len": "workload input_len + output_len",
    "kv_gib_per_request": "GiB of bf16 KV cache one request of context_len takes (whole model)",
    "active_params_b": "billions of parameters touched per token (MoE: the routed experts only)",
}

_SPECS = {"model": ModelSpec, "checkpoint": CheckpointQuant, "gpu": GpuSpec, "hw": HwSpec, "target": TargetSpec, "workload": WorkloadSpec,
          "precision": PrecisionSpec, "backend": BackendSpec, "pins": Pins}
_EXTRA = {
    "model": ("is_moe", "is_mla", "head_dim_eff"),
    "gpu": ("supports_bf16", "supports_fp8", "supports_int8", "supports_fp4"),
    "hw": ("total_gpus",),
}


def fields() -> dict[str, set[str]]:
    """Every name a rule may read, by namespace."""
    out = {ns: {f.name for f in dataclasses.fields(cls)} | set(_EXTRA.get(ns, ())) for ns, cls in _SPECS.items()}
    out["hw"].discard("gpu")
    out["derived"] = set(DERIVED)
    return out


def _plain(v):
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


def _flat(obj) -> dict:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            if not dataclasses.is_dataclass(getattr(obj, f.name))}


def _checkpoint_gib(m: ModelSpec, bf16_gib: float) -> float:
    """The whole model's weights in its checkpoint's format (a quantized checkpoint loads quantized)."""
    from planner.specs import Dtype, Quantization

    try:
        quant = Quantization(m.quantization) if m.quantization else Quantization.none
    except ValueError:
        return bf16_gib
    if quant is Quantization.none:
        return bf16_gib
    return memory.weight_bytes_per_gpu(m, 1, 1, Dtype.bf16, quant) / memory.GIB


def build(req: Request) -> dict:
    """The context a rule is evaluated against."""
    m, gpu, wl, pins = req.model, req.hw.gpu, req.workload, req.pins
    model = _flat(m) | {"is_moe": m.is_moe, "is_mla": m.is_mla, "head_dim_eff": float(m.head_dim_eff)}
    g = _flat(gpu) | {f"supports_{fmt}": gpu.supports(fmt) for fmt in ("bf16", "fp8", "int8", "fp4")}
    hw = _flat(req.hw) | {"total_gpus": float(req.hw.total_gpus)}
    weights = memory.param_counts(m).total * 2 / memory.GIB
    usable = gpu.memory_gib * 0.92
    context_len = pins.max_model_len or wl.max_model_len or (wl.max_input_len + wl.max_output_len)
    kv_bytes = memory.kv_bytes_per_token(m, "bf16")
    derived = {
        "weights_gib_bf16": weights,
        "weights_gib_checkpoint": _checkpoint_gib(m, weights),
        "usable_gib_per_gpu": usable,
        "gpus_needed_bf16": float(math.ceil(weights / usable)) if usable > 0 else 0.0,
        "context_len": float(context_len),
        "mean_request_len": float(wl.input_len + wl.output_len),
        "kv_gib_per_request": kv_bytes * context_len / memory.GIB,
        "active_params_b": memory.active_params(m) / 1e9,
    }
    return {"model": model, "checkpoint": _flat(m.quant), "gpu": g, "hw": hw, "target": _flat(req.target), "workload": _flat(wl),
            "precision": _flat(req.precision), "backend": _flat(req.backend), "pins": _flat(pins),
            "derived": derived}

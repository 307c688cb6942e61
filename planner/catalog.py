"""Import a local Hugging Face model directory (`model=hf model.path=DIR`) as model overrides, offline.

Reads DIR/config.json (a VLM's `text_config` when present) and its `quantization_config`; maps HF's names onto
ModelSpec's (they are mostly the same) and counts the parameters from the architecture.
"""

import json
import re
from dataclasses import fields
from pathlib import Path

from planner.errors import InputError
from planner.specs import ModelSpec

# HF config.json key (any of several spellings) → ModelSpec field.
_ALIASES = {
    "num_key_value_heads": ("num_key_value_heads", "num_kv_heads", "multi_query_group_num"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
    "num_shared_experts": ("n_shared_experts", "num_shared_experts"),
    "first_dense_layers": ("first_k_dense_replace",),
    "torch_dtype": ("torch_dtype", "dtype"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "seq_length"),
}
_QUANT_METHODS = {"fp8": "fp8", "awq": "awq", "gptq": "gptq", "modelopt_fp4": "nvfp4", "nvfp4": "nvfp4"}


def _quote(value) -> str:
    """A Hydra override value: plain where the grammar allows, else single-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][\w./:+-]*", text) and text.lower() not in ("true", "false", "null"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_config(path: str) -> dict:
    """The text model's config.json of a local HF directory, or InputError saying what is missing."""
    d = Path(path).expanduser()
    cfg_file = d / "config.json"
    if not cfg_file.is_file():
        raise InputError(
            f"model.path={path}: no config.json there{'' if d.is_dir() else ' (no such directory)'}. Fix: point "
            "model.path at a local Hugging Face model directory (the one holding config.json and the weights); "
            "nothing is downloaded.")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"model.path={path}: config.json is not valid JSON ({exc}). Fix: repair or re-export "
                         "it.") from None
    text = cfg.get("text_config")
    if isinstance(text, dict):
        merged = dict(cfg)
        merged.update(text)
        cfg = merged
    return cfg


def model_fields(path: str) -> dict:
    """ModelSpec field values for the HF model directory at `path`."""
    from planner.memory import param_counts

    cfg = read_config(path)
    names = {f.name for f in fields(ModelSpec)}
    out = {k: cfg[k] for k in names if k in cfg and not isinstance(cfg[k], (dict, list))}
    for field, keys in _ALIASES.items():
        for key in keys:
            if cfg.get(key) is not None:
                out[field] = cfg[key]
                break
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    missing = [k for k in required if k not in out]
    if missing:
        raise InputError(
            f"model.path={path}: config.json lacks {', '.join(missing)}, so this is not a decoder-only transformer "
            "the planner can size. Fix: give those as overrides (model.<field>=...), or import a supported model.")
    out.setdefault("num_key_value_heads", out["num_attention_heads"])
    out.setdefault("max_position_embeddings", 4096)
    out["torch_dtype"] = str(out.get("torch_dtype", "bfloat16")).replace("torch.", "")
    if cfg.get("model_type", "").startswith("qwen2") and "attention_bias" not in cfg:
        out["attention_bias"] = True  # Qwen2 always has q/k/v biases (transformers Qwen2Attention)
    if cfg.get("sliding_window") and cfg.get("use_sliding_window", True):
        types = cfg.get("layer_types") or []
        out["sliding_window_layers"] = (sum(1 for t in types if t == "sliding_attention") if types
                                        else out["num_hidden_layers"])
    else:
        out.pop("sliding_window", None)
    q = cfg.get("quantization_config") or {}
    if q:
        method = str(q.get("quant_method", "")).lower()
        if method == "compressed-tensors":
            raise InputError(
                f"model.path={path}: quantization_config uses compressed-tensors, which the planner does not "
                "size yet. Fix: set model.quantization=fp8|int8|awq|gptq to the format its weights use.")
        out["quantization"] = _QUANT_METHODS.get(method, method)
        if method == "fp8":  # vLLM's Fp8Config: weight_block_size means block scales, else one per tensor
            out["fp8_scaling"] = "block" if q.get("weight_block_size") else "tensor"
        bits = q.get("bits") or q.get("w_bit") or (8 if method == "fp8" else None)
        if bits:
            out["quantization_bits"] = int(bits)
    d = Path(path).expanduser().resolve()
    out["name"] = re.sub(r"[^\w.-]+", "-", d.name).strip("-").lower() or "hf-model"
    out["hf_repo"] = cfg.get("_name_or_path") or d.name
    out["source"] = f"{d.name}/config.json (local)"
    out["model_type"] = cfg.get("model_type", "unknown")
    out["architecture"] = (cfg.get("architectures") or ["unknown"])[0]
    out["path"] = str(d)
    probe = ModelSpec(**{**out, "num_params_b": 0.0})
    out["num_params_b"] = round(param_counts(probe).total / 1e9, 4)
    return out


def model_overrides(path: str) -> list[str]:
    """Hydra overrides that describe the model at `path` (the user's own overrides are applied after)."""
    return [f"model.{k}={_quote(v)}" for k, v in sorted(model_fields(path).items())]

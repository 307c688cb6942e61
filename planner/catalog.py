"""Import a local Hugging Face model directory (`model=hf model.path=DIR`) as model overrides, offline.

Reads DIR/config.json (a VLM's `text_config` when present) and its `quantization_config`; maps HF's names onto
ModelSpec's (they are mostly the same) and counts the parameters from the architecture.
"""

import json
import re
import typing
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
    """The text model's config.json of a local HF directory, or InputError saying what is missing or malformed."""
    d = Path(path).expanduser()
    cfg_file = d / "config.json"
    if not cfg_file.is_file():
        raise InputError(
            f"model.path={path}: no config.json there{'' if d.is_dir() else ' (no such directory)'}. Fix: point "
            "model.path at a local Hugging Face model directory (the one holding config.json and the weights); "
            "nothing is downloaded.")
    try:
        cfg = json.loads(cfg_file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"model.path={path}: config.json is not UTF-8 text ({exc.reason} at byte {exc.start}). "
                         "Fix: point model.path at the model's own directory, whose config.json is JSON text.") \
            from None
    except json.JSONDecodeError as exc:
        raise InputError(f"model.path={path}: config.json is not valid JSON ({exc}). Fix: repair or re-export "
                         "it.") from None
    _need(path, "config.json", cfg, dict)
    text = cfg.get("text_config")
    if text is not None:
        _need(path, "text_config", text, dict)
        cfg = {**cfg, **text}
    return cfg


_KINDS = {dict: "a JSON object", list: "a JSON list", str: "text", int: "an integer", float: "a number",
          bool: "true or false"}


def _kind_of(value) -> str:
    return "null" if value is None else next((_KINDS[t] for t in (bool, dict, list, str, int, float)
                                              if isinstance(value, t)), type(value).__name__)


def _need(path: str, key: str, value, kind: type) -> None:
    """InputError unless config.json's `key` holds a value of `kind` (a bool is not a number here)."""
    ok = isinstance(value, (int, float) if kind is float else kind)
    if not ok or (kind in (int, float) and isinstance(value, bool)):
        found = _kind_of(value)
        shown = "" if isinstance(value, (dict, list)) or value is None else f"={value!r}"
        where = "config.json" if key == "config.json" else f"config.json's {key}{shown}"
        raise InputError(f"model.path={path}: {where} is {found}, not {_KINDS[kind]}, so this is not a Hugging Face "
                         "config the planner can read. Fix: repair config.json (or give the value as an override, "
                         "model.<field>=...), or point model.path at the model's own directory.")


def _typed(path: str, cfg: dict) -> dict:
    """ModelSpec field values found in config.json, each checked against the field's type."""
    hints = typing.get_type_hints(ModelSpec)
    out = {}
    for f in fields(ModelSpec):
        keys = _ALIASES.get(f.name, (f.name,))
        key = next((k for k in keys if cfg.get(k) is not None), None)
        if key is None or (key == f.name and isinstance(cfg[key], (dict, list))):
            continue
        kind = next(t for t in (bool, int, float, str) if t in (hints[f.name], *typing.get_args(hints[f.name])))
        _need(path, key, cfg[key], kind)
        out[f.name] = cfg[key]
    return out


def model_fields(path: str) -> dict:
    """ModelSpec field values for the HF model directory at `path`."""
    from planner.memory import param_counts

    cfg = read_config(path)
    out = _typed(path, cfg)
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    missing = [k for k in required if k not in out]
    if missing:
        raise InputError(
            f"model.path={path}: config.json lacks {', '.join(missing)}, so this is not a decoder-only transformer "
            "the planner can size. Fix: give those as overrides (model.<field>=...), or import a supported model.")
    out.setdefault("num_key_value_heads", out["num_attention_heads"])
    out.setdefault("max_position_embeddings", 4096)
    out["torch_dtype"] = str(out.get("torch_dtype", "bfloat16")).replace("torch.", "")
    if out.get("model_type", "").startswith("qwen2") and "attention_bias" not in cfg:
        out["attention_bias"] = True  # Qwen2 always has q/k/v biases (transformers Qwen2Attention)
    if cfg.get("sliding_window") and cfg.get("use_sliding_window", True):
        types = cfg.get("layer_types") or []
        _need(path, "layer_types", types, list)
        out["sliding_window_layers"] = (sum(1 for t in types if t == "sliding_attention") if types
                                        else out["num_hidden_layers"])
    else:
        out.pop("sliding_window", None)
    out.update(_quantization(path, cfg.get("quantization_config") or {}))
    d = Path(path).expanduser().resolve()
    out["name"] = re.sub(r"[^\w.-]+", "-", d.name).strip("-").lower() or "hf-model"
    out["hf_repo"] = _text(path, cfg, "_name_or_path") or d.name
    out["source"] = f"{d.name}/config.json (local)"
    out.setdefault("model_type", "unknown")
    architectures = cfg.get("architectures") or ["unknown"]
    _need(path, "architectures", architectures, list)
    out["architecture"] = _text(path, {"architectures[0]": architectures[0]}, "architectures[0]")
    out["path"] = str(d)
    probe = ModelSpec(**{**out, "num_params_b": 0.0})
    out["num_params_b"] = round(param_counts(probe).total / 1e9, 4)
    return out


def _text(path: str, cfg: dict, key: str) -> str:
    value = cfg.get(key) or ""
    _need(path, key, value, str)
    return value


def _quantization(path: str, q) -> dict:
    """quantization / quantization_bits (and FP8's scaling) from config.json's quantization_config ({} when
    unquantized)."""
    if not q:
        return {}
    _need(path, "quantization_config", q, dict)
    method = _text(path, {"quantization_config.quant_method": q.get("quant_method")},
                   "quantization_config.quant_method").lower()
    if method == "compressed-tensors":
        raise InputError(
            f"model.path={path}: quantization_config uses compressed-tensors, which the planner does not "
            "size yet. Fix: set model.quantization=fp8|int8|awq|gptq to the format its weights use.")
    found = {"quantization": _QUANT_METHODS.get(method, method)}
    if method == "fp8":  # vLLM's Fp8Config: weight_block_size means block scales, else one per tensor
        found["fp8_scaling"] = "block" if q.get("weight_block_size") else "tensor"
    key = "bits" if q.get("bits") is not None else "w_bit"
    bits = q.get(key) or (8 if method == "fp8" else None)
    if bits:
        _need(path, f"quantization_config.{key}", bits, int)
        found["quantization_bits"] = bits
    return found


def model_overrides(path: str) -> list[str]:
    """Hydra overrides that describe the model at `path` (the user's own overrides are applied after)."""
    return [f"model.{k}={_quote(v)}" for k, v in sorted(model_fields(path).items())]

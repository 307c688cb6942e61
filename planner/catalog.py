"""Import a local Hugging Face model directory (`model=hf model.path=DIR`) as model overrides, offline.

Reads DIR/config.json (a VLM's `text_config` when present, its `vision_config` sized into vision_params_b) and its
`quantization_config`; maps HF's names onto ModelSpec's (they are mostly the same) and counts the parameters from the
architecture.
"""

import json
import re
import typing
from dataclasses import fields
from pathlib import Path

from planner import layout, quantconfig
from planner.errors import InputError
from planner.specs import CheckpointQuant, ModelSpec, Quantization

# HF config.json key (any of several spellings) → ModelSpec field.
_ALIASES = {
    "num_key_value_heads": ("num_key_value_heads", "num_kv_heads", "multi_query_group_num"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
    "num_shared_experts": ("n_shared_experts", "num_shared_experts"),
    "first_dense_layers": ("first_k_dense_replace",),
    "torch_dtype": ("torch_dtype", "dtype"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "seq_length"),
}
# model_type -> architecture traits config.json does not spell out, as transformers 5.19's configuration_*.py
# defaults and vLLM 0.32's model files build them (vllm/model_executor/models/<type>.py).
TIED_BY_DEFAULT = {"gemma", "gemma2", "gemma3", "gemma3_text", "starcoder2", "falcon", "gpt2", "cohere"}
QKV_BIAS = {"qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl"}  # Qwen2Attention: q/k/v biases, no o_proj bias
O_BIAS_WITH_QKV = {"llama", "gpt_oss", "phi"}  # o_proj takes the same bias flag as q/k/v (llama.py, gpt_oss.py)
QK_NORM = {"qwen3", "qwen3_moe", "gemma3", "gemma3_text"}  # q_norm / k_norm RMSNorm weights of head_dim
# ... where config.json's use_qk_norm says so (GLM-4.5: glm4_moe.py RMSNorm(head_dim) when config.use_qk_norm); Llama
# 4's use_qk_norm is a weightless L2 norm (llama4.py RMSNorm(..., has_weight=False)), so it adds no weights.
USE_QK_NORM_WEIGHTS = {"glm4_moe"}
FOUR_NORMS = {"gemma2", "gemma3", "gemma3_text"}  # pre/post attention and pre/post feed-forward norms
# Values transformers' config class fills in when config.json leaves the key out (Gemma 3's config.json names few
# keys): transformers 5.19 models/gemma3/configuration_gemma3.py Gemma3TextConfig.
DEFAULTS = {"gemma3_text": {"vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216,
                            "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                            "head_dim": 256, "max_position_embeddings": 131_072, "sliding_window": 4096}}
# Every n-th layer attends globally, the others in the sliding window, where config.json has no layer_types
# (transformers: Gemma2Config alternates, (i + 1) % 2; Gemma3TextConfig sliding_window_pattern, default 6).
SLIDING_PATTERN = {"gemma2": 2, "gemma3_text": 6}


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
    if cfg.get("model_type") == "gemma3" and text is not None:  # Gemma3Config's text_config is a Gemma3TextConfig
        cfg["model_type"] = "gemma3_text"
    return {**DEFAULTS.get(str(cfg.get("model_type")), {}), **cfg}


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
        kind = next((t for t in (bool, int, float, str) if t in (hints[f.name], *typing.get_args(hints[f.name]))),
                    None)
        if kind is None:  # a structured field (quant) comes from its own section, never from a top-level key
            continue
        _need(path, key, cfg[key], kind)
        out[f.name] = cfg[key]
    return out


def model_fields(path: str) -> dict:
    """ModelSpec field values for the HF model directory at `path`."""
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
    out.update(_architecture(cfg, out))
    vision = _vision_params(path, cfg, out["hidden_size"])
    if vision:
        out["vision_params_b"] = vision / 1e9
    if cfg.get("sliding_window") and cfg.get("use_sliding_window", True):
        out["sliding_window_layers"] = _sliding_layers(path, cfg, out["num_hidden_layers"])
    else:
        out.pop("sliding_window", None)
    if _rope_cache(cfg, out) != out["max_position_embeddings"]:
        out["rope_cache_positions"] = _rope_cache(cfg, out)
    _check_quantization(path, cfg.get("quantization_config"))
    d = Path(path).expanduser().resolve()
    out.update(_quantization_fields(quantconfig.read(cfg, d)))
    out["name"] = re.sub(r"[^\w.-]+", "-", d.name).strip("-").lower() or "hf-model"
    out["hf_repo"] = _text(path, cfg, "_name_or_path") or d.name
    out["source"] = f"{d.name}/config.json (local)"
    out.setdefault("model_type", "unknown")
    architectures = cfg.get("architectures") or ["unknown"]
    _need(path, "architectures", architectures, list)
    out["architecture"] = _text(path, {"architectures[0]": architectures[0]}, "architectures[0]")
    out["path"] = str(d)
    probe = ModelSpec(**{**out, "num_params_b": 0.0})
    out["num_params_b"] = round(layout.param_total(probe) / 1e9, 4)
    return out


def _sliding_layers(path: str, cfg: dict, layers: int) -> int:
    """Layers attending in the sliding window: config.json's layer_types, else the pattern transformers builds them
    from (SLIDING_PATTERN, sliding_window_pattern), else every layer (Mistral-style sliding window)."""
    types = cfg.get("layer_types") or []
    _need(path, "layer_types", types, list)
    if types:
        return sum(1 for t in types if t == "sliding_attention")
    pattern = cfg.get("sliding_window_pattern") or SLIDING_PATTERN.get(str(cfg.get("model_type")))
    return layers - layers // int(pattern) if pattern else layers


def _rope_cache(cfg: dict, fields_: dict) -> int:
    """Rows of the rotary caches vLLM builds (ModelSpec.rope_cache_positions): linear scaling caches
    max_position_embeddings x factor (linear_scaling_rope.py max_len); Gemma 3's sliding layers use an unscaled
    cache of their own (gemma3.py: get_rope with the layer type's rope parameters)."""
    positions = fields_["max_position_embeddings"]
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        return positions
    rope = rope.get("full_attention", rope)  # transformers 5 keys Gemma 3's rope parameters by layer type
    scaled = positions
    if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) == "linear":
        scaled = int(positions * float(rope.get("factor", 1.0)))
    local = positions if scaled != positions and fields_.get("sliding_window_layers") and \
        str(cfg.get("model_type")) == "gemma3_text" else 0
    return scaled + local


def _quantization_fields(quant) -> dict:
    """ModelSpec fields of a checkpoint's quantization (CheckpointQuant, or None: unquantized)."""
    if quant is None:
        return {}
    out: dict = {"quant": quant}
    fmt = quantconfig.format_of(quant)
    if fmt is not Quantization.none:
        out["quantization"] = fmt.value
        out["quantization_bits"] = quant.weight_bits
    if fmt is Quantization.fp8:  # the FP8 GEMM kernel the perf model picks (specs.ModelSpec.fp8_scaling)
        out["fp8_scaling"] = quant.strategy if quant.strategy in ("tensor", "channel", "block") else "tensor"
    return out


def quantization_overrides(quantization_config: dict) -> list[str]:
    """The model overrides a checkpoint's `quantization_config` alone implies (quantization, its bits, FP8 scaling
    and the model.quant.* layout), as model=hf imports them from config.json."""
    return _as_overrides(_quantization_fields(quantconfig.read({"quantization_config": quantization_config})))


def _architecture(cfg: dict, fields_: dict) -> dict:
    """The traits of the model's architecture that change its weights, by model_type (see the tables above)."""
    mt = str(cfg.get("model_type", ""))
    out: dict = {}
    if "tie_word_embeddings" not in cfg:
        out["tie_word_embeddings"] = mt in TIED_BY_DEFAULT
    if mt in QKV_BIAS:
        out["attention_bias"] = cfg.get("attention_bias", True)
    out["o_proj_bias"] = bool(cfg.get("attention_bias")) and mt in O_BIAS_WITH_QKV
    out["qk_norm"] = mt in QK_NORM or (mt in USE_QK_NORM_WEIGHTS and bool(cfg.get("use_qk_norm")))
    rope = cfg.get("rope_parameters") or {}
    out["partial_rotary_factor"] = float(cfg.get("partial_rotary_factor") or rope.get("partial_rotary_factor") or 1.0)
    out["norms_per_layer"] = 4 if mt in FOUR_NORMS else 2
    if mt == "phi":  # Phi-2: biased q/k/v/dense, fc1/fc2 (GELU, no gate), LayerNorm with bias, biased lm_head
        out.update(attention_bias=True, o_proj_bias=True, mlp_gated=False, mlp_bias=True, norms_per_layer=1,
                   norm_bias=True, lm_head_bias=True)
    if mt == "gpt_oss":  # attention sinks; biased experts and router (gpt_oss.py MLPBlock)
        out.update(attention_sinks=True, expert_bias=True,
                   num_experts_per_tok=cfg.get("num_experts_per_tok") or cfg.get("experts_per_token", 0))
    if cfg.get("attention_chunk_size"):  # Llama 4: RoPE layers attend in chunks, every fourth (NoPE) layer globally
        nope = cfg.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(fields_["num_hidden_layers"])]
        out.update(attention_chunk_size=int(cfg["attention_chunk_size"]), chunked_attention_layers=sum(nope))
    if mt in ("llama4", "llama4_text"):  # experts of intermediate_size, dense layers of intermediate_size_mlp
        out.update(moe_intermediate_size=fields_["intermediate_size"], num_shared_experts=1,
                   intermediate_size=cfg.get("intermediate_size_mlp", fields_["intermediate_size"]),
                   moe_layer_step=int(cfg.get("interleave_moe_layer_step") or 1))
    return out


def _vision_params(path: str, cfg: dict, text_hidden: int) -> int:
    """Parameters of the vision encoder and projector config.json's vision_config describes (0: a text model)."""
    v = cfg.get("vision_config")
    if not v:
        return 0
    _need(path, "vision_config", v, dict)
    try:
        return _vision_count(cfg, text_hidden)
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as exc:
        raise InputError(f"model.path={path}: config.json's vision_config is not one the planner can size ({exc!r} "
                         "missing or not a number). Fix: repair vision_config, or set model.vision_params_b to the "
                         "encoder's parameters in billions.") from None


def _vision_count(cfg: dict, text_hidden: int) -> int:
    """Parameters of a VLM's vision encoder and projector, from config.json's vision_config (0 for a text model), as
    transformers 5.19 and vLLM 0.32 build them (each formula equals transformers' meta-device parameter count for the
    model's vision_config: Llama-4 871,932,416; Gemma-3 SigLIP 423,060,336; Pixtral 438,958,080; Qwen2.5-VL-7B
    676,550,144)."""
    v = cfg["vision_config"]
    kind = str(v.get("model_type") or ("qwen2_5_vl" if "fullatt_block_indexes" in v else ""))
    h = int(v.get("hidden_size", 0))
    i = int(v.get("intermediate_size", 0))
    layers = int(v.get("num_hidden_layers") or v.get("depth") or 0)
    c = int(v.get("num_channels") or v.get("in_chans") or v.get("in_channels") or 3)
    p = int(v.get("patch_size", 14))
    if kind == "llama4_vision_model":  # mllama4.py: biased ViT with LayerNorms, pixel-shuffle MLP, projector
        side = int(v["image_size"]) // p
        shuffled = round(h / v["pixel_shuffle_ratio"] ** 2)
        block = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
        return (h + (side * side + 1) * h + c * p * p * h + 4 * h + layers * block
                + shuffled * v["projector_input_dim"] + v["projector_input_dim"] * v["projector_output_dim"]
                + v["vision_output_dim"] * text_hidden)
    if kind == "siglip_vision_model":  # Gemma 3 (siglip.py, gemma3_mm.py): conv patch, learned positions, no head
        side = int(v["image_size"]) // p
        block = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
        return c * p * p * h + h + side * side * h + layers * block + 2 * h + h * text_hidden + h
    if kind == "pixtral":  # Mistral 3 (pixtral.py, mistral3.py): bias-free, RMSNorm, gated MLP, 2D RoPE
        merge = int(cfg.get("spatial_merge_size", 2))
        bias = text_hidden * 2 if cfg.get("multimodal_projector_bias") else 0
        block = 4 * h * h + 3 * h * i + 2 * h
        return (c * p * p * h + h + layers * block + h + h * merge * merge * h + h * text_hidden
                + text_hidden * text_hidden + bias)
    if kind in ("qwen2_5_vl", "qwen2_5_vl_vision"):  # qwen2_5_vl.py: Conv3d patches, RMSNorm, gated MLP, merger
        tp = int(v.get("temporal_patch_size", 2))
        merged = h * int(v.get("spatial_merge_size", 2)) ** 2
        out = int(v.get("out_hidden_size", text_hidden))
        block = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * (h * i + i) + (i * h + h)
        return c * tp * p * p * h + layers * block + h + merged * merged + merged + merged * out + out
    # Another tower: a plain ViT estimate (attention and a two-matrix MLP per layer).
    return layers * (4 * h * h + 2 * h * i)


def _text(path: str, cfg: dict, key: str) -> str:
    value = cfg.get(key) or ""
    _need(path, key, value, str)
    return value


def _check_quantization(path: str, q) -> None:
    """InputError unless quantization_config (when there) is an object whose method is text and bits a number."""
    if not q:
        return
    _need(path, "quantization_config", q, dict)
    method = _text(path, {"quantization_config.quant_method": q.get("quant_method")},
                   "quantization_config.quant_method").lower()
    if quantconfig.ALIASES.get(method, method) not in quantconfig.READERS:
        return  # quantconfig names what no engine loads
    for key in ("bits", "w_bit"):
        if q.get(key) is not None:
            _need(path, f"quantization_config.{key}", q[key], int)


def model_overrides(path: str) -> list[str]:
    """Hydra overrides that describe the model at `path` (the user's own overrides are applied after)."""
    return _as_overrides(model_fields(path))


def _as_overrides(values: dict) -> list[str]:
    out = []
    for k, v in sorted(values.items()):
        if isinstance(v, CheckpointQuant):
            out += [f"model.quant.{f.name}={_value(getattr(v, f.name))}" for f in fields(v)]
        else:
            out.append(f"model.{k}={_quote(v)}")
    return out


def _value(v) -> str:
    """A Hydra override value, lists included."""
    return "[" + ",".join(_quote(x) for x in v) + "]" if isinstance(v, (tuple, list)) else _quote(v)

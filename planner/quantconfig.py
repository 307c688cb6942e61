"""Read a checkpoint's quantization: config.json's `quantization_config` (or ModelOpt's hf_quant_config.json) as a
CheckpointQuant (its storage layout) and the plan's Quantization format, or one clear error for what no engine loads.

Keys follow each producer's format as vLLM 0.32 reads it (vllm/model_executor/layers/quantization/, installed wheel):
compressed-tensors (compressed_tensors/compressed_tensors.py from_config: config_groups, format, ignore,
kv_cache_scheme, sparsity_config), fp8 (fp8.py Fp8Config.from_config: activation_scheme, weight_block_size,
ignored_layers / modules_to_not_convert), gptq (auto_gptq.py: bits, group_size, desc_act, sym, lm_head), awq
(auto_awq.py: bits / w_bit, group_size / q_group_size, zero_point, modules_to_not_convert), modelopt
(modelopt.py:320-375: quant_algo, kv_cache_quant_algo, exclude_modules, group_size), mxfp4 (mxfp4.py), and
bitsandbytes (transformers BitsAndBytesConfig: load_in_4bit, bnb_4bit_quant_type, llm_int8_skip_modules).
"""

import json
from pathlib import Path
from typing import Optional

from planner.errors import InputError
from planner.specs import CheckpointQuant, Quantization

# vLLM resolves a compressed-tensors kv_cache_scheme to an FP8 KV cache when --kv-cache-dtype is auto
# (model_executor/layers/attention/attention.py:287-291; utils/torch_utils.py:457-493 for ModelOpt).
KV_FROM_SCHEME = {8: "fp8"}


def _bits(v) -> int:
    return int(v) if v is not None else 16


def _group_args(weights: dict, activations: Optional[dict]) -> dict:
    """CheckpointQuant fields of one compressed-tensors QuantizationArgs pair (weights, input_activations)."""
    strategy = str(weights.get("strategy") or "tensor")
    out = dict(weight_bits=_bits(weights.get("num_bits")), weight_type=str(weights.get("type") or "int"),
               strategy=strategy,
               zero_point=not weights.get("symmetric", True),
               act_order=str(weights.get("actorder") or "").lower() == "group",
               activation_bits=_bits(activations.get("num_bits")) if activations else 16)
    if strategy in ("group", "tensor_group"):
        out.update(group_size=int(weights.get("group_size") or 128))
    if strategy == "block":
        bn, bk = weights.get("block_structure") or [128, 128]
        out.update(block_n=int(bn), block_k=int(bk))
    # Scale dtypes as vLLM allocates them: fp32 for FP8/INT8 (tensor, channel, block); the compute dtype for
    # integer weight-only groups (compressed_tensors_wNa16.py:176); fp8 per 16 for NVFP4, e8m0 per 32 for MXFP4.
    fp4 = out["weight_bits"] == 4 and out["weight_type"] == "float"
    if fp4:
        out.update(scale_bytes=1)
    elif out["strategy"] == "group" and out["weight_type"] == "int":
        out.update(scale_bytes=2)
    return out


def _compressed_tensors(q: dict) -> CheckpointQuant:
    groups = [g for g in (q.get("config_groups") or {}).values() if g.get("weights")]
    sparsity = q.get("sparsity_config") or {}
    if not groups:
        base = CheckpointQuant(method="compressed-tensors", targets=())  # e.g. a KV-cache-only scheme
    else:
        # The group that names Linear (or the first): other groups (mixed precision) are rare; see weights.py.
        g = next((g for g in groups if "Linear" in (g.get("targets") or [])), groups[0])
        base = CheckpointQuant(method="compressed-tensors", targets=tuple(g.get("targets") or ("Linear",)),
                               **_group_args(g["weights"], g.get("input_activations")))
    kv = q.get("kv_cache_scheme") or {}
    return CheckpointQuant(**{**base.__dict__,
                              "ignore": tuple(q.get("ignore") or ()),
                              "sparsity": "2:4" if sparsity.get("sparsity_structure") == "2:4" else "",
                              "kv_cache_dtype": KV_FROM_SCHEME.get(kv.get("num_bits"), "") if kv else ""})


def _fp8(q: dict) -> CheckpointQuant:
    block = q.get("weight_block_size")
    ignore = tuple(q.get("ignored_layers") or q.get("modules_to_not_convert") or ())
    common = dict(method="fp8", weight_bits=8, activation_bits=8, ignore=("lm_head",) + ignore)
    if block:
        return CheckpointQuant(strategy="block", block_n=int(block[0]), block_k=int(block[1]), **common)
    return CheckpointQuant(strategy="tensor", **common)


def _gptq(q: dict) -> CheckpointQuant:
    group = int(q.get("group_size", 128))
    return CheckpointQuant(method="gptq", weight_bits=int(q.get("bits", 4)), weight_type="int",
                           strategy="group" if group > 0 else "channel", group_size=max(group, 0), scale_bytes=2,
                           zero_point=not q.get("sym", True), act_order=bool(q.get("desc_act")) and group > 0,
                           ignore=() if q.get("lm_head") else ("lm_head",))


def _awq(q: dict) -> CheckpointQuant:
    group = int(q.get("group_size") or q.get("q_group_size") or 128)
    ignore = tuple(q.get("modules_to_not_convert") or ())
    return CheckpointQuant(method="awq", weight_bits=int(q.get("bits") or q.get("w_bit") or 4), weight_type="int",
                           strategy="group" if group > 0 else "channel", group_size=max(group, 0), scale_bytes=2,
                           zero_point=bool(q.get("zero_point", True)), ignore=("lm_head",) + ignore,
                           ignore_match="substring")


def _modelopt(q: dict) -> CheckpointQuant:
    inner = q.get("quantization") if isinstance(q.get("quantization"), dict) else q
    algo = str(inner.get("quant_algo") or "").upper()
    exclude = tuple(inner.get("exclude_modules") or inner.get("ignore") or ())
    kv_algo = str(inner.get("kv_cache_quant_algo") or "").upper()
    kv_scheme = inner.get("kv_cache_scheme") or {}
    # vLLM takes ModelOpt's KV format only from config.json's quantization_config (quant_method modelopt*),
    # not from a legacy hf_quant_config.json without quant_method (utils/torch_utils.py:466-493).
    kv = "fp8" if "quant_method" in q and (kv_algo == "FP8" or kv_scheme.get("num_bits") == 8) else ""
    common = dict(ignore=exclude, ignore_match="glob", kv_cache_dtype=kv)
    if algo == "FP8":
        return CheckpointQuant(method="modelopt", weight_bits=8, activation_bits=8, **common)
    if algo == "NVFP4":
        return CheckpointQuant(method="modelopt_fp4", weight_bits=4, strategy="tensor_group",
                               group_size=int(inner.get("group_size") or 16), scale_bytes=1, activation_bits=4,
                               **common)
    raise _unloadable("quant_algo", algo or "(none)", "modelopt", "FP8 or NVFP4 (ModelOpt's other algorithms, "
                      "e.g. W4A8_AWQ or INT8_SQ, are TensorRT-LLM engine-build formats no serving engine here loads)")


def _mxfp4(q: dict) -> CheckpointQuant:
    return CheckpointQuant(method="mxfp4", weight_bits=4, strategy="group", group_size=32, scale_bytes=1,
                           targets=("experts",), ignore=tuple(q.get("modules_to_not_convert") or ()),
                           ignore_match="substring")


def _bitsandbytes(q: dict) -> CheckpointQuant:
    skip = tuple(q.get("llm_int8_skip_modules") or ())
    if q.get("load_in_4bit"):
        # NF4/FP4: 4-bit values and one absmax per 64; double quantization stores that absmax as 8 bits with an
        # fp32 scale per 256 blocks (bitsandbytes functional.quantize_4bit, blocksize 64).
        double = bool(q.get("bnb_4bit_use_double_quant"))
        return CheckpointQuant(method="bitsandbytes", weight_bits=4, weight_type=str(q.get("bnb_4bit_quant_type") or
                                                                                    "nf4"),
                               strategy="group", group_size=64, scale_bytes=1 if double else 4,
                               ignore=("lm_head",) + skip, ignore_match="substring")
    return CheckpointQuant(method="bitsandbytes", weight_bits=8, weight_type="int", strategy="channel",
                           ignore=("lm_head",) + skip, ignore_match="substring")


# Names vLLM also accepts for the same reader (quantization/__init__.py method_to_config).
ALIASES = {"compressed_tensors": "compressed-tensors", "gptq_marlin": "gptq", "auto_gptq": "gptq",
           "awq_marlin": "awq", "auto_awq": "awq", "gpt_oss_mxfp4": "mxfp4"}
READERS = {"compressed-tensors": _compressed_tensors, "fp8": _fp8, "gptq": _gptq, "awq": _awq,
           "modelopt": _modelopt, "modelopt_fp4": _modelopt, "mxfp4": _mxfp4, "bitsandbytes": _bitsandbytes}


def _unloadable(field: str, value: str, method: str, fix: str) -> InputError:
    return InputError(f"quantization_config.{field}={value} (quant_method {method}): no engine this planner drives "
                      f"(vLLM 0.32, SGLang, TensorRT-LLM, TGI) loads that layout. Fix: use a checkpoint quantized as "
                      f"{fix}, or the unquantized checkpoint with precision=fp8.")


def read(cfg: dict, directory: Optional[Path] = None) -> Optional[CheckpointQuant]:
    """The checkpoint's quantization from its config.json dict (and hf_quant_config.json beside it), or None."""
    q = cfg.get("quantization_config") or cfg.get("compression_config")
    if not q and directory is not None and (directory / "hf_quant_config.json").is_file():
        q = json.loads((directory / "hf_quant_config.json").read_text())
    if not q:
        return None
    raw = str(q.get("quant_method") or "").lower()
    if not raw and (q.get("producer") or {}).get("name") == "modelopt":
        raw = "modelopt"  # ModelOpt <= 0.29's hf_quant_config.json has no quant_method (vLLM maps it the same way)
    method = ALIASES.get(raw, raw)
    reader = READERS.get(method)
    if reader is None:
        raise InputError(
            f"quantization_config.quant_method={method or '(none)'}: no engine this planner drives loads it "
            f"(known: {', '.join(sorted(READERS))}). Fix: use a checkpoint in one of those formats, or the "
            "unquantized checkpoint with precision=fp8 or precision=int4-awq.")
    quant = reader(q)
    if quant.sparsity:
        raise InputError(
            f"quantization_config.sparsity_config (2:4 sparse, quant_method {method}): vLLM 0.32 refuses it "
            "(compressed_tensors.py:295 'Sparsity support has been removed from compressed-tensors'), and SGLang, "
            "TensorRT-LLM and TGI do not load 2:4 compressed-tensors checkpoints either. Fix: serve the dense "
            "(non-sparse) variant of this checkpoint.")
    return quant


def format_of(q: CheckpointQuant) -> Quantization:
    """The plan's Quantization for a checkpoint layout (specs.Quantization says what each value covers)."""
    if q.method == "mxfp4":
        return Quantization.mxfp4
    if q.method == "bitsandbytes":
        return Quantization.bitsandbytes
    if q.weight_bits == 4 and q.weight_type == "float":  # FP4 e2m1: NVFP4 (fp8 scale per 16) or MXFP4 (e8m0 per 32)
        return Quantization.mxfp4 if q.group_size == 32 else Quantization.nvfp4
    if q.weight_type == "float" and q.weight_bits == 8:
        return Quantization.fp8
    if q.weight_type == "int" and q.weight_bits == 8 and q.activation_bits == 8:
        return Quantization.int8
    if q.weight_type == "int" and q.activation_bits == 16:
        return Quantization.awq if q.zero_point else Quantization.gptq
    if not q.targets:
        return Quantization.none  # only the KV cache is quantized
    raise InputError(f"quantization_config (quant_method {q.method}): weights {q.weight_type}{q.weight_bits} with "
                     f"{q.activation_bits}-bit activations is a layout no engine here serves. Fix: use an FP8, "
                     "INT8 W8A8, INT4/INT8 weight-only, NVFP4 or MXFP4 checkpoint.")

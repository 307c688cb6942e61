"""Weight bytes per GPU as the engine lays them out: each module of planner/layout.py in the compute dtype, or in its
checkpoint's quantized format (packed weights, scales, zero points), sharded over TP and placed on PP stages.

Layouts are vLLM 0.32's (vllm/model_executor/layers/quantization/, file:line of the installed wheel):
- FP8 (fp8.py, compressed_tensors_w8a8_fp8.py, modelopt.py ModelOptFp8): 1-byte weights; fp32 scales per tensor,
  per output channel, or per block (weight_scale_inv [ceil(N/bn), ceil(K/bk)]).
- INT8 W8A8 (compressed_tensors_w8a8_int8.py): 1-byte weights, fp32 scale per channel (or tensor).
- Integer weight-only, GPTQ/AWQ/compressed-tensors wNa16 (compressed_tensors_wNa16.py:106-224, auto_gptq.py,
  auto_awq.py; kernels/linear/mixed_precision/marlin.py:74-176): weights packed into int32, one scale per group in
  the compute dtype, packed zero points only when asymmetric (Marlin drops GPTQ's symmetric qzeros:
  marlin.py:172 marlin_make_empty). Channelwise scales of a row-parallel layer repeat on every rank
  (marlin_utils.py:503 marlin_repeat_scales_on_all_ranks).
- NVFP4 (modelopt.py ModelOptNvFp4, compressed_tensors_w4a4_nvfp4.py): 4-bit weights, one fp8 scale per 16.
- MXFP4 (mxfp4.py, gpt-oss): routed experts only, 4-bit weights and one e8m0 scale per 32; the rest bf16.
Embeddings stay in the compute dtype, padded to a multiple of 64 rows and split over TP
(vocab_parallel_embedding.py:95 pad_vocab_size, :304 num_embeddings_per_partition).
"""

import dataclasses
import functools
import math
import re
from fnmatch import fnmatchcase
from typing import Optional

from planner.layout import FP32_ROUTER, QUANTIZED_ROUTER, Kind, Module, Split, modules, pp_partition
from planner.moe import routed_experts_per_gpu
from planner.specs import CheckpointQuant, Dtype, ModelSpec, Quantization

VOCAB_PADDING = 64  # vllm/model_executor/layers/vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE
DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "float32": 4.0, "fp8": 1.0, "int8": 1.0}

# The layout a format gets when the planner (not the checkpoint) chooses it: vLLM's online FP8 (fp8.py with
# is_checkpoint_fp8_serialized=False: per-tensor scales), and the usual checkpoint layouts of the other formats
# (AutoAWQ / GPTQ group 128 with fp16 scales, llm-compressor W8A8 per channel, ModelOpt NVFP4, OCP MXFP4).
FORMAT_DEFAULTS = {
    Quantization.fp8: CheckpointQuant(method="fp8", weight_bits=8, strategy="tensor", activation_bits=8,
                                      ignore=("lm_head",)),
    Quantization.int8: CheckpointQuant(method="compressed-tensors", weight_bits=8, weight_type="int",
                                       strategy="channel", activation_bits=8, ignore=("lm_head",)),
    Quantization.awq: CheckpointQuant(method="awq", weight_bits=4, weight_type="int", strategy="group",
                                      group_size=128, scale_bytes=2, zero_point=True, ignore=("lm_head",)),
    Quantization.gptq: CheckpointQuant(method="gptq", weight_bits=4, weight_type="int", strategy="group",
                                       group_size=128, scale_bytes=2, ignore=("lm_head",)),
    Quantization.nvfp4: CheckpointQuant(method="modelopt_fp4", weight_bits=4, strategy="tensor_group", group_size=16,
                                        scale_bytes=1, activation_bits=4, ignore=("lm_head",), ignore_match="glob"),
    Quantization.mxfp4: CheckpointQuant(method="mxfp4", weight_bits=4, strategy="group", group_size=32,
                                        scale_bytes=1, targets=("experts",)),
    Quantization.bitsandbytes: CheckpointQuant(method="bitsandbytes", weight_bits=4, weight_type="nf4",
                                               strategy="group", group_size=64, scale_bytes=4,
                                               ignore=("lm_head",)),
}


def scheme_for(m: ModelSpec, quant: Quantization) -> CheckpointQuant:
    """The layout of `quant` for model `m`: the checkpoint's own when it is quantized that way, else the format's
    usual layout; an unquantized plan has none (method "")."""
    if quant is Quantization.none:
        return CheckpointQuant()
    if m.quant.quantized and m.quantization == quant.value:
        return m.quant
    return FORMAT_DEFAULTS[quant]


def checkpoint_method(m: ModelSpec, quant: Quantization) -> Optional[str]:
    """The checkpoint's quant_method when `quant` is the format it is stored in (the engine reads it from the
    checkpoint); None when the plan is unquantized or the engine would quantize at load."""
    if quant is Quantization.none or m.quantization != quant.value:
        return None
    return scheme_for(m, quant).method


def _matches(name: str, kind: Kind, pattern: str, how: str) -> bool:
    """One target/ignore entry against a module: class names (Linear, Embedding, experts), `re:` regexes (matched
    from the start, as compressed-tensors' is_match), `*` wildcards (ModelOpt exclude_modules), substrings (AWQ
    modules_to_not_convert, mxfp4), or the exact name (with a VLM's language_model prefix dropped)."""
    if pattern == "Linear":
        return kind in (Kind.linear, Kind.experts, Kind.lm_head, Kind.router)
    if pattern == "Embedding":
        return kind is Kind.embedding
    if pattern == "experts":
        return kind is Kind.experts
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    if how == "glob" or "*" in pattern:
        return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")
    if how == "substring":
        return pattern in name
    plain = pattern.replace("model.language_model.", "model.").replace("language_model.model.", "model.")
    return name == plain or name.startswith(plain + ".")


def quantized(x: Module, q: CheckpointQuant, m: ModelSpec) -> bool:
    """Whether the engine stores module `x` of `m` quantized under layout `q`: a target, not ignored; norms, sinks,
    the vision encoder's own weights and the MoE gates of most models are never quantized here."""
    if not q.quantized or x.kind in (Kind.norm, Kind.derived, Kind.vision):
        return False
    if x.kind is Kind.router and m.model_type not in QUANTIZED_ROUTER:
        return False
    if not any(_matches(x.name, x.kind, t, q.ignore_match) for t in q.targets):
        return False
    return not any(_matches(x.name, x.kind, i, q.ignore_match) for i in q.ignore)


def _shard(x: Module, m: ModelSpec, tp: int) -> tuple[int, int]:
    """(input, output) features of one copy on one rank."""
    if x.split is Split.column:
        out = x.out_features
        if x.kv:  # K/V heads split while there are at least TP of them, else each rank keeps one
            out = max(1, m.num_key_value_heads // tp) * m.head_dim_eff
            return x.in_features, out
        return x.in_features, math.ceil(out / tp)
    if x.split is Split.row:
        return math.ceil(x.in_features / tp), x.out_features
    if x.split is Split.vocab:
        return x.in_features, math.ceil(math.ceil(x.out_features / VOCAB_PADDING) * VOCAB_PADDING / tp)
    if x.split is Split.experts:
        return x.in_features, math.ceil(x.out_features / tp)
    return x.in_features, x.out_features


def _matrix_bytes(k: int, n: int, q: CheckpointQuant) -> float:
    """One quantized weight matrix of n outputs x k inputs on one rank: packed weights, scales, zero points, g_idx."""
    body = n * math.ceil(k * q.weight_bits / 32) * 4 if q.weight_bits < 8 else n * k * q.weight_bits / 8
    if q.strategy == "tensor":
        groups = 0.0
        scales = q.scale_bytes  # one per tensor (a few per fused module; bytes, not GiB)
    elif q.strategy == "channel":
        groups = 1.0
        scales = n * q.scale_bytes
    elif q.strategy == "block":
        groups = 0.0
        scales = math.ceil(n / q.block_n) * math.ceil(k / q.block_k) * q.scale_bytes
    else:  # group; tensor_group (NVFP4) adds one fp32 global scale per tensor (weight_scale_2)
        groups = math.ceil(k / q.group_size)
        scales = n * groups * q.scale_bytes + (4 if q.strategy == "tensor_group" else 0)
    zeros = n * groups * q.weight_bits / 8 if q.zero_point else 0.0
    g_idx = k * 4 if q.act_order and q.strategy == "group" else 0.0  # int32 per input row
    if q.sparsity == "2:4":
        body, zeros = body / 2 + n * k / 8, zeros  # half the values plus a bitmask (sparse-24-bitmask)
    return body + scales + zeros + g_idx


def module_bytes(x: Module, m: ModelSpec, tp: int, act: float, q: CheckpointQuant) -> float:
    """Bytes of module `x` on one rank of a TP group: weights (quantized when the layout says so) and biases."""
    k, n = _shard(x, m, tp)
    bias = x.bias * (n / max(1, x.out_features) if x.split in (Split.column, Split.vocab) else 1.0)
    if x.kind is Kind.experts:
        width, hidden = n, m.hidden_size  # the experts' intermediate size on this rank
        if quantized(x, q, m) and q.method == "mxfp4":
            # vLLM pads MXFP4 experts to its kernels' tiles: intermediate (per rank) to 128 and hidden to 256 for
            # Marlin and TRT-LLM (fused_moe/oracle/mxfp4.py:816-850 mxfp4_round_up_hidden_size_and_intermediate_size);
            # it matches vLLM 0.19's 7.01 GiB for gpt-oss-20b at TP 2 on H100 within 0.6% (vllm_memory_logs.yaml).
            width, hidden = math.ceil(width / 128) * 128, math.ceil(hidden / 256) * 256
        mats = [(hidden, width)] * (x.matrices - 1) + [(width, hidden)]
        # gpt-oss: w13_bias [E, 2·I] split like the weights, w2_bias [E, H] whole on every rank (gpt_oss.py)
        bias = (x.matrices - 1) * width + hidden if x.bias else 0
        if quantized(x, q, m):
            body = sum(_matrix_bytes(kk, nn, q) for kk, nn in mats)
        else:
            body = sum(kk * nn for kk, nn in mats) * act
        return x.count * (body + bias * act)
    if x.kind is Kind.vision:
        return x.out_features * act / tp
    if x.kind in (Kind.norm, Kind.derived):
        return (x.out_features / tp if x.split is Split.column else x.out_features) * act
    if quantized(x, q, m):
        return _matrix_bytes(k, n, q) + bias * act
    if x.kind is Kind.router and m.model_type in FP32_ROUTER:
        act = 4.0
    return k * n * act + bias * act


@functools.lru_cache(maxsize=1024)
def stage_bytes(m: ModelSpec, tp: int, pp: int, dtype: Dtype, quant: Quantization, dp: int = 1,
                ep: bool = False) -> tuple[float, ...]:
    """Weight bytes on one GPU of each pipeline stage of a TP x PP replica. The first stage holds the embedding, every
    stage the vision encoder and the rotary cache, the last the final norm and lm_head; a tied lm_head is the
    embedding itself on one stage, and its own copy on the last stage under PP (vLLM loads the embedding's weights
    into it). With attention DP (dp > 1) the routed experts span the tp x dp GPUs: sliced over all of them, or whole
    experts under expert parallel, ceil(E / (tp x dp)) on the busiest GPU (moe.routed_experts_per_gpu)."""
    act = DTYPE_BYTES[dtype.value]
    q = scheme_for(m, quant)
    layers = pp_partition(m.num_hidden_layers, pp)
    bounds = [sum(layers[:s]) for s in range(pp + 1)]
    stages = [0.0] * pp
    for x in modules(m):
        if x.kind is Kind.lm_head and m.tie_word_embeddings and pp == 1:
            continue
        if x.every_stage:
            stages = [b + module_bytes(x, m, tp, act, q) for b in stages]
            continue
        if x.layer is None:
            stage = pp - 1 if x.kind in (Kind.lm_head, Kind.norm) else 0
        else:
            stage = next(s for s in range(pp) if bounds[s] <= x.layer < bounds[s + 1])
        if x.kind is Kind.lm_head and m.tie_word_embeddings:  # tied under PP: a copy of the (unquantized) embedding
            stages[stage] += module_bytes(x, m, tp, act, CheckpointQuant())
            continue
        if x.kind is Kind.experts and ep:
            local = dataclasses.replace(x, count=math.ceil(routed_experts_per_gpu(x.count, tp, dp, ep)))
            stages[stage] += module_bytes(local, m, 1, act, q)
            continue
        stages[stage] += module_bytes(x, m, tp * dp if x.kind is Kind.experts else tp, act, q)
    return tuple(stages)

"""Memory model: per-GPU weights, activations and overhead, and the KV cache that is left, as vLLM accounts it.

Models vLLM 0.32 (docs/vllm-memory.md cites the code): KV budget = total × gpu_memory_utilization − weights −
peak activation of a max_num_batched_tokens forward − non-torch memory; KV tokens are whole blocks of
`block_size` tokens, the same number on every rank (the smallest rank wins). On CPU the budget is
VLLM_CPU_KVCACHE_SPACE GiB per worker.
"""

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import yaml

from planner.specs import DeviceKind, Dtype, GpuSpec, KvPrecision, ModelSpec, Quantization

GIB = 2**30

# Bytes per element of each storage format (IEEE/OCP definitions).
DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "float32": 4.0, "fp8": 1.0, "int8": 1.0}

# Bytes per weight of the quantized linear layers, scales included:
# - fp8 (per-tensor or per-channel scale) and int8 W8A8 (per-channel scale): 1 byte, scales negligible.
# - AWQ/GPTQ int4, group size 128: 4 bits + one fp16 scale and one packed 4-bit zero point per 128 weights
#   = 4 + 20/128 bits (AutoAWQ/GPTQ checkpoint layout: qweight, qzeros int32-packed, scales fp16).
# - NVFP4: 4 bits + one fp8 (E4M3) scale per 16 weights = 4.5 bits (NVIDIA ModelOpt NVFP4 format).
QUANT_BYTES_PER_WEIGHT = {
    Quantization.fp8: 1.0,
    Quantization.int8: 1.0,
    Quantization.awq: (4 + 20 / 128) / 8,
    Quantization.gptq: (4 + 20 / 128) / 8,
    Quantization.nvfp4: 4.5 / 8,
}

VOCAB_PADDING = 64  # vllm/model_executor/layers/vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE


@functools.lru_cache(maxsize=None)
def engine_constants(engine: str = "vllm") -> dict:
    """conf/calibration/<engine>-memory.yaml: block sizes, overheads and their sources."""
    text = resources.files("conf").joinpath("calibration", f"{engine}-memory.yaml").read_text()
    return yaml.safe_load(text)


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by where they live, for sharding: embeddings, per-layer attention, MLP, experts."""

    embed: int  # vocab × hidden (unpadded)
    lm_head: int  # 0 when tied to the embeddings
    attn_per_layer: int  # linear weights of one attention block
    kv_proj_per_layer: int  # of attn_per_layer: the K and V projections (replicated when KV heads < TP)
    dense_mlp_per_layer: int
    moe_per_layer: int  # routed + shared experts of one MoE layer (router excluded)
    router_per_layer: int
    norms_per_layer: int
    dense_layers: int
    moe_layers: int

    @property
    def total(self) -> int:
        layers = self.dense_layers + self.moe_layers
        per_layer = self.attn_per_layer + self.norms_per_layer
        return (self.embed + self.lm_head + layers * per_layer + self.dense_layers * self.dense_mlp_per_layer
                + self.moe_layers * (self.moe_per_layer + self.router_per_layer))


def param_counts(m: ModelSpec) -> ParamCounts:
    h, hd = m.hidden_size, m.head_dim_eff
    if m.is_mla:
        qk = (m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0)
        if m.q_lora_rank:
            q = h * m.q_lora_rank + m.q_lora_rank * m.num_attention_heads * qk + m.q_lora_rank
        else:
            q = h * m.num_attention_heads * qk
        kv_a = h * (m.kv_lora_rank + (m.qk_rope_head_dim or 0)) + m.kv_lora_rank
        kv_b = m.kv_lora_rank * m.num_attention_heads * ((m.qk_nope_head_dim or 0) + (m.v_head_dim or 0))
        o = m.num_attention_heads * (m.v_head_dim or 0) * h
        attn, kv_proj = q + kv_a + kv_b + o, 0
    else:
        q = h * m.num_attention_heads * hd
        kv_proj = 2 * h * m.num_key_value_heads * hd
        o = m.num_attention_heads * hd * h
        bias = (m.num_attention_heads + 2 * m.num_key_value_heads) * hd if m.attention_bias else 0
        attn = q + kv_proj + o + bias
    dense_mlp = 3 * h * m.intermediate_size  # gated MLP: gate, up, down
    if m.is_moe:
        moe_inter = m.moe_intermediate_size or m.intermediate_size
        moe = 3 * h * moe_inter * (m.num_experts + m.num_shared_experts)
        if m.shared_expert_intermediate_size:
            moe += 3 * h * m.shared_expert_intermediate_size
        router = h * m.num_experts
        moe_layers, dense_layers = m.num_hidden_layers - m.first_dense_layers, m.first_dense_layers
    else:
        moe = router = moe_layers = 0
        dense_layers = m.num_hidden_layers
    return ParamCounts(
        embed=m.vocab_size * h,
        lm_head=0 if m.tie_word_embeddings else m.vocab_size * h,
        attn_per_layer=attn,
        kv_proj_per_layer=kv_proj,
        dense_mlp_per_layer=dense_mlp,
        moe_per_layer=moe,
        router_per_layer=router,
        norms_per_layer=2 * h,
        dense_layers=dense_layers,
        moe_layers=moe_layers,
    )


def active_params(m: ModelSpec) -> int:
    """Parameters read per token: MoE layers count only num_experts_per_tok routed experts (plus shared)."""
    c = param_counts(m)
    if not m.is_moe:
        return c.total
    moe_inter = m.moe_intermediate_size or m.intermediate_size
    active_moe = 3 * m.hidden_size * moe_inter * (m.num_experts_per_tok + m.num_shared_experts)
    if m.shared_expert_intermediate_size:
        active_moe += 3 * m.hidden_size * m.shared_expert_intermediate_size
    return c.total - c.moe_layers * (c.moe_per_layer - active_moe)


def pp_partition(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage as vLLM splits them (vllm/distributed/utils.py get_pp_indices): the
    remainder goes to the stages before the last, which also holds the final norm and lm_head."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


def kv_heads_per_rank(m: ModelSpec, tp: int) -> int:
    """KV heads each TP rank stores: split when there are at least TP of them, else replicated (one each)."""
    return max(1, m.num_key_value_heads // tp)


def kv_bytes_per_token_layer(m: ModelSpec, tp: int, kv_dtype: str) -> float:
    """KV-cache bytes one token takes in one attention layer on one TP rank.

    GQA/MHA: K and V, kv_heads_per_rank × head_dim each. MLA (DeepSeek): one latent of kv_lora_rank +
    qk_rope_head_dim per token, replicated on every TP rank (vLLM's MLA cache has a single 'head').
    """
    elt = DTYPE_BYTES[kv_dtype]
    if m.is_mla:
        return (m.kv_lora_rank + (m.qk_rope_head_dim or 0)) * elt
    return 2 * kv_heads_per_rank(m, tp) * m.head_dim_eff * elt


def kv_bytes_per_token(m: ModelSpec, kv_dtype: str, tp: int = 1, pp: int = 1) -> float:
    """KV bytes per token on the most loaded rank (the stage with the most layers)."""
    return kv_bytes_per_token_layer(m, tp, kv_dtype) * max(pp_partition(m.num_hidden_layers, pp))


def weight_bytes_per_gpu(m: ModelSpec, tp: int, pp: int, dtype: Dtype, quant: Quantization) -> float:
    """Weight bytes on the most loaded GPU of a TP × PP replica.

    Linear layers are split over TP and stored in the quantized format; embeddings and lm_head stay in the
    compute dtype (vLLM's fp8/AWQ/GPTQ paths leave them unquantized), vocab-parallel over TP after padding the
    vocabulary to a multiple of 64; norms and routers are replicated. MoE experts are split over TP (or EP:
    the same bytes per GPU). K/V projections are replicated when KV heads < TP.
    """
    c = param_counts(m)
    act = DTYPE_BYTES[dtype.value]
    lin = act if quant is Quantization.none else QUANT_BYTES_PER_WEIGHT[quant]
    padded_vocab = math.ceil(m.vocab_size / VOCAB_PADDING) * VOCAB_PADDING
    vocab_rows = math.ceil(padded_vocab / tp)
    embed = vocab_rows * m.hidden_size * act
    lm_head = embed  # a tied lm_head is the same tensor on a single stage, a copy on the last stage otherwise

    kv_rep = c.kv_proj_per_layer * (kv_heads_per_rank(m, tp) * tp / m.num_key_value_heads) if c.kv_proj_per_layer else 0
    attn = (c.attn_per_layer - c.kv_proj_per_layer + kv_rep) / tp * lin
    dense = c.dense_mlp_per_layer / tp * lin
    moe = c.moe_per_layer / tp * lin
    small = (c.norms_per_layer + c.router_per_layer) * act

    parts = pp_partition(m.num_hidden_layers, pp)
    worst = 0.0
    start = 0
    for stage, n in enumerate(parts):
        layers = range(start, start + n)
        start += n
        n_dense = sum(1 for i in layers if not m.is_moe or i < m.first_dense_layers)
        n_moe = n - n_dense
        b = n * (attn + small) + n_dense * dense + n_moe * moe
        if stage == 0:
            b += embed
        if stage == pp - 1 and (not m.tie_word_embeddings or pp > 1):
            b += lm_head
        b += m.hidden_size * act  # final norm (last stage); negligible elsewhere
        worst = max(worst, b)
    return worst


def activation_peak_bytes(m: ModelSpec, tp: int, dtype: Dtype, max_num_batched_tokens: int,
                          max_num_seqs: int) -> float:
    """Peak activation memory of vLLM's profiling forward (max_num_batched_tokens tokens) on one rank.

    One layer's live tensors at the MLP, the widest point: residual and normed hidden states, the fused QKV
    output, gate+up output and the activated half (MoE: for each of the top-k routed copies of the token);
    then the sampler's float32 logits for max_num_seqs sequences over the full (gathered) vocabulary, twice
    (logits and their softmax). Constants and their sources: conf/calibration/vllm-memory.yaml.
    """
    k = engine_constants()["activation"]
    act = DTYPE_BYTES[dtype.value]
    h = m.hidden_size
    if m.is_moe:
        inter = (m.moe_intermediate_size or m.intermediate_size) * max(1, m.num_experts_per_tok)
        inter = max(inter, m.intermediate_size if m.first_dense_layers else 0)
    else:
        inter = m.intermediate_size
    if m.is_mla:
        qkv = m.num_attention_heads * ((m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0)) * 2
    else:
        qkv = (m.num_attention_heads + 2 * m.num_key_value_heads) * m.head_dim_eff
    per_token = (2 * h + qkv / tp + 3 * inter / tp) * act
    forward = max_num_batched_tokens * per_token * k["forward_factor"]
    logits = max_num_seqs * m.vocab_size * 4 * k["logits_copies"]
    return forward + logits


@dataclass(frozen=True)
class MemoryBreakdown:
    """Memory of one GPU (the most loaded rank) and the KV capacity of the whole replica."""

    total_gib: float
    usable_gib: float  # total × gpu_memory_utilization (CPU: weights + KV space)
    weights_gib: float
    kv_cache_gib: float
    activations_gib: float
    runtime_overhead_gib: float  # CUDA context, cuBLAS/NCCL workspaces, CUDA graphs
    kv_bytes_per_token: float  # on the most loaded rank
    block_size: int
    kv_cache_tokens: int  # whole replica, whole blocks
    max_model_len: int
    max_concurrency_at_max_len: float

    @property
    def fits(self) -> bool:
        return self.kv_cache_gib > 0 and self.kv_cache_tokens >= self.max_model_len


def runtime_overhead_bytes(gpu: GpuSpec, tp: int, pp: int) -> float:
    """Non-torch and CUDA-graph memory per GPU (constants measured or cited in vllm-memory.yaml)."""
    if gpu.kind is DeviceKind.cpu:
        return 0.0
    k = engine_constants()["overhead"]
    b = k["cuda_context_gib"] + k["cuda_graphs_gib"]
    if tp * pp > 1:
        b += k["nccl_buffers_gib"]
    return b * GIB


def kv_tokens(kv_budget_bytes: float, bytes_per_token: float, block_size: int) -> int:
    """Whole blocks that fit the budget, in tokens (vLLM: num_blocks = budget // page size)."""
    if kv_budget_bytes <= 0:
        return 0
    blocks = int(kv_budget_bytes // (block_size * bytes_per_token))
    return blocks * block_size


def breakdown(m: ModelSpec, gpu: GpuSpec, *, tp: int, pp: int, dtype: Dtype, quant: Quantization,
              kv_dtype: KvPrecision, max_model_len: int, max_num_seqs: int, max_num_batched_tokens: int,
              gpu_memory_utilization: Optional[float], cpu_kv_space_gib: Optional[int] = None) -> MemoryBreakdown:
    """The memory of one candidate: what each GPU holds and how many KV tokens the replica gets."""
    consts = engine_constants()
    kv_dt = dtype.value if kv_dtype is KvPrecision.auto else kv_dtype.value
    weights = weight_bytes_per_gpu(m, tp, pp, dtype, quant)
    per_token = kv_bytes_per_token(m, kv_dt, tp, pp)
    total = gpu.memory_gib * GIB
    if gpu.kind is DeviceKind.cpu:
        # Weights and every worker's KV space share the machine's memory with the OS and the server process.
        block = consts["block_size"]["cpu"]
        usable = total * consts["cpu_memory_fraction"]
        world = tp * pp
        kv_budget = (cpu_kv_space_gib or 0) * GIB
        if (weights + kv_budget) * world > usable:
            kv_budget = 0.0
        act = overhead = 0.0
    else:
        block = consts["block_size"]["gpu"]
        usable = total * (gpu_memory_utilization or 0.0)
        act = activation_peak_bytes(m, tp, dtype, max_num_batched_tokens, max_num_seqs)
        overhead = runtime_overhead_bytes(gpu, tp, pp)
        kv_budget = usable - weights - act - overhead
    tokens = kv_tokens(kv_budget, per_token, block)
    return MemoryBreakdown(
        total_gib=total / GIB,
        usable_gib=usable / GIB,
        weights_gib=weights / GIB,
        kv_cache_gib=kv_budget / GIB,
        activations_gib=act / GIB,
        runtime_overhead_gib=overhead / GIB,
        kv_bytes_per_token=per_token,
        block_size=block,
        kv_cache_tokens=tokens,
        max_model_len=max_model_len,
        max_concurrency_at_max_len=tokens / max_model_len if max_model_len else 0.0,
    )

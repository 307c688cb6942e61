"""Memory model: per-GPU weights, activations and overhead, and the KV cache that is left, as the engine accounts it.

vLLM 0.32 (docs/vllm-memory.md cites the code): KV budget = total × gpu_memory_utilization − weights − peak
activation of a max_num_batched_tokens forward − non-torch memory; TensorRT-LLM and SGLang turn their own memory
fraction into a budget their way (planner/engines.py). KV tokens are whole blocks of the engine's block size, the
same number on every rank (the smallest rank wins). On CPU the budget is VLLM_CPU_KVCACHE_SPACE GiB per worker.
"""

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import yaml

from planner import layout, weights
from planner.fastyaml import FAST_LOADER

from planner.specs import DeviceKind, Dtype, GpuSpec, KvPrecision, ModelSpec, Quantization
from planner.plan import MemoryBreakdown

GIB = 2**30

DTYPE_BYTES = weights.DTYPE_BYTES  # bytes per element of each storage format (IEEE/OCP definitions)

# Mean bytes per weight of a format's quantized linear layers, for the performance model's bytes-read-per-step (the
# memory model counts each module exactly: planner/weights.py). Scales included:
# - fp8 (per-tensor or per-channel scale) and int8 W8A8 (per-channel scale): 1 byte, scales negligible.
# - AWQ/GPTQ int4, group size 128: 4 bits + one fp16 scale and one packed 4-bit zero point per 128 weights
#   = 4 + 20/128 bits (AutoAWQ/GPTQ checkpoint layout: qweight, qzeros int32-packed, scales fp16).
# - NVFP4: 4 bits + one fp8 (E4M3) scale per 16 weights = 4.5 bits (NVIDIA ModelOpt NVFP4 format).
# - MXFP4: 4 bits + one E8M0 scale per 32 weights = 4.25 bits (OCP MX spec; gpt-oss experts).
# - bitsandbytes NF4: 4 bits + one fp32 absmax per 64 weights = 4.5 bits (bitsandbytes quantize_4bit, blocksize 64).
QUANT_BYTES_PER_WEIGHT = {
    Quantization.fp8: 1.0,
    Quantization.int8: 1.0,
    Quantization.awq: (4 + 20 / 128) / 8,
    Quantization.gptq: (4 + 20 / 128) / 8,
    Quantization.nvfp4: 4.5 / 8,
    Quantization.mxfp4: 4.25 / 8,
    Quantization.bitsandbytes: 4.5 / 8,
}



@functools.lru_cache(maxsize=None)
def engine_constants(engine: str = "vllm") -> dict:
    """conf/calibration/<engine>-memory.yaml: block sizes, overheads and their sources."""
    text = resources.files("conf").joinpath("calibration", f"{engine}-memory.yaml").read_text()
    return yaml.load(text, Loader=FAST_LOADER)


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
        # leading dense layers (DeepSeek) and Llama 4's interleaving: the layers layout.is_moe_layer names
        moe_layers = sum(layout.is_moe_layer(m, i) for i in range(m.num_hidden_layers))
        dense_layers = m.num_hidden_layers - moe_layers
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


pp_partition = layout.pp_partition  # re-exported: callers size stages through memory


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


def weight_bytes_per_stage(m: ModelSpec, tp: int, pp: int, dtype: Dtype, quant: Quantization, dp: int = 1,
                           ep: bool = False) -> list[float]:
    """Weight bytes on one GPU of each pipeline stage of a TP x PP (x attention DP) replica, module by module as the
    engine lays them out (planner/weights.py: quantized formats with their scales, embeddings padded and split, K/V
    replicated when KV heads < TP, a VLM's vision encoder on every stage). With attention data parallel (dp > 1)
    each DP rank holds its own attention, dense MLP, shared experts and vocabulary, split over its TP group; the
    routed experts span all tp x dp GPUs (moe.routed_experts_per_gpu)."""
    return list(weights.stage_bytes(m, tp, pp, dtype, quant, dp, ep))


def lora_bytes_per_gpu(m: ModelSpec, tp: int, pp: int, dtype: Dtype, max_loras: int, rank: int) -> float:
    """vLLM's preallocated LoRA buffers on one GPU: for each layer's q/k/v, o, gate/up and down projections,
    max_loras slots of A (rank x in) and B (out x rank) in the model dtype; column-parallel layers shard B over TP,
    row-parallel layers shard A (vllm/lora/layers: ColumnParallelLinearWithLoRA, RowParallelLinearWithLoRA).
    vLLM's profiling run includes them (it runs with dummy LoRAs), so they come out of the KV budget."""
    if not max_loras:
        return 0.0
    h, hd = m.hidden_size, m.head_dim_eff
    q, kv = m.num_attention_heads * hd, m.num_key_value_heads * hd
    inter = m.intermediate_size if not m.is_moe else 0  # MoE experts take no LoRA here
    column = rank * (h + (q + 2 * kv) / tp) + rank * (h + 2 * inter / tp)  # qkv, gate_up
    row = rank * (q / tp + h) + rank * (inter / tp + h)  # o, down
    layers = max(pp_partition(m.num_hidden_layers, pp))
    return layers * (column + row) * max_loras * DTYPE_BYTES[dtype.value]


def weight_bytes_per_gpu(m: ModelSpec, tp: int, pp: int, dtype: Dtype, quant: Quantization, dp: int = 1,
                         ep: bool = False) -> float:
    """Weight bytes on the most loaded GPU of a TP x PP (x attention DP) replica."""
    return max(weight_bytes_per_stage(m, tp, pp, dtype, quant, dp, ep))


def forward_peak_bytes(m: ModelSpec, tp: int, dtype: Dtype, num_tokens: int, compiled: bool = True, dp: int = 1,
                       ep: bool = False) -> float:
    """Transient peak of one decoder layer's forward over `num_tokens` tokens on one rank.

    Counts the tensors alive at once in vLLM's Llama-style layer (fused add-RMSNorm in place, fused QKV,
    fused gate_up, SiluAndMul writing one output): in the MLP, the residual, the normed input, gate_up (2 ×
    inter), the activation (inter) and the down output (hidden): 3 hidden + 3 inter per token; in attention,
    2 hidden + QKV + attention output. MoE: each token's top-k expert copies (fused_moe's intermediate caches).
    This live-tensor count reproduced PyTorch's eager peak on an H100 within 0.1% for the same op sequence
    (benchmarks/gpu/runtime_memory.py); vLLM's torch.compile'd forward keeps more (forward_factor,
    vllm-memory.yaml). `compiled=False`: an eager forward (vLLM's V0 engine), the count itself.
    Attention data parallel (dp > 1) gathers every DP rank's tokens before the MoE layer (vLLM's default
    all-gather dispatch, distributed/device_communicators/all2all.py AgRsAll2AllManager.dispatch), and the fused
    experts' workspace is sized for that whole gathered batch at each expert's full width under expert parallel
    (model_executor/layers/fused_moe/modular_kernel.py:1288-1300 allocates for M_full, no chunking).
    """
    act = DTYPE_BYTES[dtype.value]
    h = m.hidden_size
    if m.is_mla:
        q = m.num_attention_heads * ((m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0))
        qkv = q + m.kv_lora_rank + (m.qk_rope_head_dim or 0)
        attn_out = m.num_attention_heads * (m.v_head_dim or 0)
    else:
        q = m.num_attention_heads * m.head_dim_eff
        qkv = (m.num_attention_heads + 2 * m.num_key_value_heads) * m.head_dim_eff
        attn_out = q
    attention = 2 * h + (qkv + attn_out) / tp
    mlp = 3 * h + 3 * m.intermediate_size / tp if (not m.is_moe or m.first_dense_layers) else 0.0
    if m.is_moe:
        moe_inter = m.moe_intermediate_size or m.intermediate_size
        topk = max(1, m.num_experts_per_tok)
        moe_tp = 1 if ep else tp * dp
        mlp = max(mlp, dp * (3 * h + topk * (3 * moe_inter / moe_tp + h)))
    factor = engine_constants()["activation"]["forward_factor"] if compiled else 1.0
    return num_tokens * max(attention, mlp) * act * factor


def sampler_peak_bytes(m: ModelSpec, max_num_seqs: int) -> float:
    """The sampler's dummy run: one row of logits per sequence over the full vocabulary (gathered), as bf16
    logits, fp32 logits and fp32 probabilities (bytes per logit measured: vllm-memory.yaml)."""
    k = engine_constants()["activation"]
    return max_num_seqs * m.vocab_size * k["sampler_bytes_per_logit"]


def activation_peak_bytes(m: ModelSpec, tp: int, dtype: Dtype, max_num_batched_tokens: int,
                          max_num_seqs: int, last_stage: bool = True, compiled: bool = True, dp: int = 1,
                          ep: bool = False) -> float:
    """vLLM's transient_peak_headroom: the profiling forward of max_num_batched_tokens tokens, and on the last
    pipeline stage the sampler over max_num_seqs sequences, whichever is larger (they run one after the other)."""
    forward = forward_peak_bytes(m, tp, dtype, max_num_batched_tokens, compiled, dp, ep)
    return max(forward, sampler_peak_bytes(m, max_num_seqs)) if last_stage else forward


def runtime_overhead_bytes(m: ModelSpec, gpu: GpuSpec, tp: int, pp: int, cuda_graphs: bool = True,
                           dp: int = 1) -> float:
    """What vLLM subtracts besides weights and activations: non-torch workspaces, communication buffers when the
    GPU talks to others (TP >= 2, or the MoE group of attention DP), and the CUDA-graph estimate of the stage's
    layers (vllm-memory.yaml says where each figure comes from)."""
    if gpu.kind is DeviceKind.cpu:
        return 0.0
    k = engine_constants()["overhead"]
    b = k["non_torch_gib"] + (k["comm_buffers_gib"] if tp * dp > 1 else 0.0)
    if cuda_graphs:
        b += k["cuda_graphs_gib_per_layer"] * max(pp_partition(m.num_hidden_layers, pp))
    return b * GIB


def kv_groups(m: ModelSpec, n_layers: int) -> list[tuple[str, int]]:
    """vLLM's KV-cache groups for a stage of `n_layers` layers, as (attention kind, layers in the group); kinds are
    full, sliding (a sliding window: Gemma 2/3, gpt-oss) and chunked (Llama 4's chunked local attention).

    One group when all layers attend alike; else layers are bucketed by kind and each bucket cut into groups of
    `group_size` layers, the smallest bucket's size (the largest if max < 1.5 x min)
    (vllm/v1/core/kv_cache_utils.py:1362 _get_kv_cache_groups_uniform_page_size, vLLM 0.32; chunked local attention
    keeps the hybrid manager by default, VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1, config/vllm.py:2150).
    """
    sliding = round(n_layers * m.sliding_window_layers / m.num_hidden_layers) if m.sliding_window else 0
    chunked = round(n_layers * m.chunked_attention_layers / m.num_hidden_layers) if m.attention_chunk_size else 0
    buckets = [(k, c) for k, c in (("full", n_layers - sliding - chunked), ("sliding", sliding),
                                   ("chunked", chunked)) if c > 0]
    if len(buckets) == 1:
        return [(buckets[0][0], n_layers)]
    small, big = min(c for _, c in buckets), max(c for _, c in buckets)
    size = big if big < 1.5 * small else small
    return [(kind, size) for kind, count in buckets for _ in range(math.ceil(count / size))]


def blocks_per_request(m: ModelSpec, kind: str, max_model_len: int, block_size: int, in_flight_tokens: int) -> int:
    """Blocks one request of max_model_len tokens needs in one group (vllm/v1/kv_cache_interface.py
    max_admission_blocks_per_request): full attention ceil(L / bs); sliding window ceil(min(W - 1 + in-flight, L) /
    bs) + 1 (:859); chunked local attention ceil(min(chunk + in-flight, L) / bs) (:813)."""
    if kind == "sliding":
        return math.ceil(min(m.sliding_window - 1 + in_flight_tokens, max_model_len) / block_size) + 1
    if kind == "chunked":
        return math.ceil(min(m.attention_chunk_size + in_flight_tokens, max_model_len) / block_size)
    return math.ceil(max_model_len / block_size)


def kv_tokens(kv_budget_bytes: float, bytes_per_token: float, block_size: int) -> int:
    """Whole blocks that fit the budget, in tokens (vLLM: num_blocks = budget // page size)."""
    if kv_budget_bytes <= 0:
        return 0
    return int(kv_budget_bytes // (block_size * bytes_per_token)) * block_size


def _cpu_budgets(total: float, weights: list[float], world: int, pp: int, cpu_kv_space_gib: Optional[int]):
    """vLLM CPU: each worker gets VLLM_CPU_KVCACHE_SPACE for KV, if every worker's weights and space fit the
    planner's share of the machine's memory; no activation or CUDA-graph terms. (usable, budgets, acts, overhead,
    headroom_ok) as breakdown uses them."""
    usable = total * engine_constants()["cpu_memory_fraction"]
    space = (cpu_kv_space_gib or 0) * GIB
    fits_ram = (max(weights) + space) * world <= usable
    return usable, [space if fits_ram else 0.0] * pp, [0.0] * pp, 0.0, True


def _stage_blocks(m: ModelSpec, budget: float, n_layers: int, page_per_layer: float) -> int:
    """KV blocks a stage's budget holds: a block spans the largest KV-cache group's layers (vLLM's page size)."""
    bytes_per_block = max(size for _, size in kv_groups(m, n_layers)) * page_per_layer
    return max(0, int(budget // bytes_per_block)) if budget > 0 else 0


def breakdown(m: ModelSpec, gpu: GpuSpec, *, tp: int, pp: int, dtype: Dtype, quant: Quantization,
              kv_dtype: KvPrecision, max_model_len: int, max_num_seqs: int, max_num_batched_tokens: int,
              gpu_memory_utilization: Optional[float], cpu_kv_space_gib: Optional[int] = None,
              cuda_graphs_in_budget: bool = True, torch_compile: bool = True, max_loras: int = 0,
              max_lora_rank: int = 16, engine=None, dp: int = 1, ep: bool = False) -> MemoryBreakdown:
    """The memory of one candidate: what each GPU holds and how many KV tokens the replica gets (with attention
    data parallel, dp > 1: each DP rank's engine, its own scheduler and KV cache, as each logs it).

    Per pipeline stage: budget = ceil(total × utilization) − weights − activation peak − overhead (CPU:
    VLLM_CPU_KVCACHE_SPACE); blocks = budget // bytes per block; the replica gets the smallest stage's blocks.
    Reported capacity = int(blocks / blocks per request × max_model_len), as vLLM logs it.
    `cuda_graphs_in_budget=False` models vLLM < 0.21 (or --enforce-eager), which did not subtract CUDA graphs;
    `torch_compile=False` the eager V0 engine (< 0.8). Both exist to check the model against older servers' logs.
    `engine` (planner/engines.py; None: vLLM) decides how `gpu_memory_utilization`, the engine's own memory
    fraction, becomes the KV budget, and the block size (TensorRT-LLM 32 tokens, SGLang 1).
    """
    from planner import engines

    engine = engine or engines.VLLM
    consts = engine_constants()
    kv_dt = dtype.value if kv_dtype is KvPrecision.auto else kv_dtype.value
    on_cpu = gpu.kind is DeviceKind.cpu
    total = gpu.memory_gib * GIB
    world = tp * pp
    block = consts["block_size"]["cpu"] if on_cpu else engine.block_size
    # Tokens the scheduler may have in flight: async scheduling keeps pp + 1 batches on GPU, pp on CPU
    # (vllm/config/vllm.py max_concurrent_batches; CPU forces async scheduling off).
    in_flight = (pp if on_cpu else pp + 1) * max_num_batched_tokens
    page_per_layer = block * kv_bytes_per_token_layer(m, tp, kv_dt)
    lora = lora_bytes_per_gpu(m, tp, pp, dtype, max_loras, max_lora_rank)
    weights = [w + lora for w in weight_bytes_per_stage(m, tp, pp, dtype, quant, dp, ep)]
    layers = pp_partition(m.num_hidden_layers, pp)
    if on_cpu:
        usable, budgets, acts, overhead, headroom_ok = _cpu_budgets(total, weights, world, pp, cpu_kv_space_gib)
    else:
        usable, budgets, acts, overhead, headroom_ok = engines.stage_budgets(
            m, gpu, engine, weights, tp, pp, dtype, max_num_batched_tokens, max_num_seqs,
            gpu_memory_utilization or 0.0, cuda_graphs_in_budget, torch_compile, dp=dp, ep=ep)
    per_stage_blocks = [_stage_blocks(m, budget, n, page_per_layer) for budget, n in zip(budgets, layers)]
    worst = min(range(pp), key=lambda s: (per_stage_blocks[s], -weights[s]))
    blocks = per_stage_blocks[worst]
    need = sum(blocks_per_request(m, kind, max_model_len, block, in_flight)
               for kind, _ in kv_groups(m, layers[worst]))
    concurrency = blocks / need if need else 0.0
    return MemoryBreakdown(
        total_gib=total / GIB,
        usable_gib=usable / GIB,
        weights_gib=weights[worst] / GIB,
        kv_cache_gib=budgets[worst] / GIB,
        activations_gib=acts[worst] / GIB,
        runtime_overhead_gib=overhead / GIB,
        kv_bytes_per_token=kv_bytes_per_token_layer(m, tp, kv_dt) * layers[worst],
        block_size=block,
        kv_cache_blocks=blocks,
        kv_cache_tokens=int(concurrency * max_model_len),
        max_model_len=max_model_len,
        max_concurrency_at_max_len=concurrency,
        startup_headroom_ok=headroom_ok,
    )

"""The model's weights as vLLM builds them: every module with its Hugging Face name, shape and tensor-parallel split,
layer by layer, so that weights can be counted, sharded over TP, placed on pipeline stages and matched against a
quantized checkpoint's ignore list (planner/weights.py turns them into bytes).

Shapes follow vLLM 0.32's model files (vllm/model_executor/models/: llama.py, qwen2.py, qwen3.py, gemma2.py,
gemma3.py, phi.py, mixtral.py, qwen3_moe.py, deepseek_v2.py, gpt_oss.py, llama4.py); names follow the checkpoint
(model.layers.N.self_attn.q_proj ...), which is what quantization_config ignore lists name.
"""

import enum
import functools
from dataclasses import dataclass
from typing import Optional

from planner.specs import ModelSpec


class Split(str, enum.Enum):
    """How tensor parallelism shards a module (vllm/model_executor/layers/linear.py, vocab_parallel_embedding.py)."""

    column = "column"  # output rows split (QKV, gate/up): ColumnParallelLinear
    row = "row"  # input columns split (o_proj, down_proj): RowParallelLinear
    replicated = "replicated"  # whole on every rank (norms, routers)
    vocab = "vocab"  # vocabulary rows split after padding to 64 (embedding, lm_head)
    experts = "experts"  # the experts' intermediate dimension split over TP (or whole experts over EP: same bytes)


class Kind(str, enum.Enum):
    """What a module is, for quantization targets ("Linear", "Embedding") and for the weight breakdown."""

    linear = "linear"
    experts = "experts"  # a FusedMoE layer: all routed experts of one decoder layer (w13 and w2)
    router = "router"  # an MoE gate: quantized only where the model file hands it the quant config
    embedding = "embedding"
    lm_head = "lm_head"
    norm = "norm"  # norms, attention sinks: never quantized
    derived = "derived"  # tensors the engine derives at load in the compute dtype (MLA's W_UK_T and W_UV)
    vision = "vision"  # a VLM's vision encoder and projector (sized as a whole from the catalog's parameters)


@dataclass(frozen=True)
class Module:
    """One weight-holding module. Experts: `count` copies of a gated (or plain) MLP whose in/out are hidden and
    intermediate; the FusedMoE layer holds them as w13 [E, 2·I, H] and w2 [E, H, I]."""

    name: str
    kind: Kind
    in_features: int
    out_features: int
    split: Split
    layer: Optional[int]  # decoder layer index; None: embedding, final norm, lm_head, vision encoder
    count: int = 1  # routed experts in a FusedMoE module
    bias: int = 0  # bias elements of one copy
    kv: bool = False  # a K or V projection: replicated over ranks when KV heads < TP
    matrices: int = 1  # weight matrices per copy: 3 for a gated expert MLP (gate, up, down), 2 plain
    every_stage: bool = False  # held by every pipeline stage (the rotary cos/sin cache, a VLM's vision tower)

    @property
    def params(self) -> int:
        return self.count * (self.matrices * self.in_features * self.out_features + self.bias)


O_PROJ = {"phi": "dense"}  # Phi-2 names its attention output projection "dense" (models/phi.py)
# MoE gates vLLM builds with the checkpoint's quant config (GateLinear(..., quant_config=quant_config)): Qwen3-MoE
# (models/qwen3_moe.py:170); DeepSeek, Mixtral, gpt-oss, Llama 4, Qwen2-MoE and GLM-4.5 pass none, so their gates stay
# unquantized, GLM-4.5's in fp32 (models/glm4_moe.py:141-145 params_dtype=torch.float32).
QUANTIZED_ROUTER = {"qwen3_moe"}
FP32_ROUTER = {"glm4_moe"}
MOE_BLOCK = {"mixtral": "block_sparse_moe", "llama4": "feed_forward", "llama4_text": "feed_forward"}


def is_moe_layer(m: ModelSpec, i: int) -> bool:
    """MoE or dense MLP in layer i: DeepSeek's first_k_dense_replace leading dense layers, Llama 4's
    interleave_moe_layer_step ((i + 1) % step == 0 is MoE; vllm/model_executor/models/llama4.py)."""
    if not m.is_moe or i < m.first_dense_layers:
        return False
    return (i + 1) % max(1, m.moe_layer_step) == 0


def _attention(m: ModelSpec, p: str, i: int) -> list[Module]:
    h, hd, heads, kv = m.hidden_size, m.head_dim_eff, m.num_attention_heads, m.num_key_value_heads
    L = Kind.linear
    if m.is_mla:
        qk = (m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0)
        rope, lora = m.qk_rope_head_dim or 0, m.kv_lora_rank
        q = ([Module(f"{p}.q_a_proj", L, h, m.q_lora_rank, Split.replicated, i),
              Module(f"{p}.q_a_layernorm", Kind.norm, 1, m.q_lora_rank, Split.replicated, i),
              Module(f"{p}.q_b_proj", L, m.q_lora_rank, heads * qk, Split.column, i)] if m.q_lora_rank else
             [Module(f"{p}.q_proj", L, h, heads * qk, Split.column, i)])
        return q + [Module(f"{p}.kv_a_proj_with_mqa", L, h, lora + rope, Split.replicated, i),
                    Module(f"{p}.kv_a_layernorm", Kind.norm, 1, lora, Split.replicated, i),
                    Module(f"{p}.kv_b_proj", L, lora, heads * ((m.qk_nope_head_dim or 0) + (m.v_head_dim or 0)),
                           Split.column, i),
                    Module(f"{p}.o_proj", L, heads * (m.v_head_dim or 0), h, Split.row, i),
                    # vLLM splits kv_b_proj into W_UK_T and W_UV per head at load, dequantized to the compute dtype,
                    # and keeps kv_b_proj for prefill (layers/attention/mla_attention.py:1248 split_kv_b_proj, :1325)
                    Module(f"{p}.mla_attn.W_UK_T+W_UV", Kind.derived, 1,
                           lora * heads * ((m.qk_nope_head_dim or 0) + (m.v_head_dim or 0)), Split.column, i)]
    qkv_b = 1 if m.attention_bias else 0
    out = [Module(f"{p}.q_proj", L, h, heads * hd, Split.column, i, bias=qkv_b * heads * hd),
           Module(f"{p}.k_proj", L, h, kv * hd, Split.column, i, bias=qkv_b * kv * hd, kv=True),
           Module(f"{p}.v_proj", L, h, kv * hd, Split.column, i, bias=qkv_b * kv * hd, kv=True),
           Module(f"{p}.{O_PROJ.get(m.model_type, 'o_proj')}", L, heads * hd, h, Split.row, i,
                  bias=h if m.o_proj_bias else 0)]
    if m.qk_norm:
        out.append(Module(f"{p}.qk_norm", Kind.norm, 1, 2 * hd, Split.replicated, i))
    if m.attention_sinks:
        out.append(Module(f"{p}.sinks", Kind.norm, 1, heads, Split.column, i))
    return out


def _mlp(m: ModelSpec, p: str, i: int, width: int, split: Split = Split.column) -> list[Module]:
    h = m.hidden_size
    b = 1 if m.mlp_bias else 0
    if not m.mlp_gated:
        return [Module(f"{p}.fc1", Kind.linear, h, width, split, i, bias=b * width),
                Module(f"{p}.fc2", Kind.linear, width, h, Split.row, i, bias=b * h)]
    return [Module(f"{p}.gate_proj", Kind.linear, h, width, split, i, bias=b * width),
            Module(f"{p}.up_proj", Kind.linear, h, width, split, i, bias=b * width),
            Module(f"{p}.down_proj", Kind.linear, width, h, Split.row, i, bias=b * h)]


def _moe(m: ModelSpec, p: str, i: int) -> list[Module]:
    h, width = m.hidden_size, m.moe_intermediate_size or m.intermediate_size
    bias = 2 * width + h if m.expert_bias else 0  # gpt-oss: gate_up_proj_bias [E, 2I] and down_proj_bias [E, H]
    out = [Module(f"{p}.{'router' if m.model_type in ('gpt_oss', 'llama4', 'llama4_text') else 'gate'}",
                  Kind.router, h, m.num_experts, Split.replicated, i, bias=m.num_experts if m.expert_bias else 0),
           Module(f"{p}.experts", Kind.experts, h, width, Split.experts, i, count=m.num_experts, bias=bias,
                  matrices=3 if m.mlp_gated else 2)]
    if m.num_shared_experts:
        shared = "shared_expert" if m.model_type in ("llama4", "llama4_text") else "shared_experts"
        out += _mlp(m, f"{p}.{shared}", i, width * m.num_shared_experts)
    if m.shared_expert_intermediate_size:  # Qwen2-MoE: one shared expert and its sigmoid gate
        out += _mlp(m, f"{p}.shared_expert", i, m.shared_expert_intermediate_size)
        out.append(Module(f"{p}.shared_expert_gate", Kind.linear, h, 1, Split.replicated, i))
    return out


def _layer(m: ModelSpec, i: int) -> list[Module]:
    p = f"model.layers.{i}"
    norm_bias = 2 if m.norm_bias else 1
    out = [Module(f"{p}.norms", Kind.norm, 1, m.norms_per_layer * m.hidden_size * norm_bias, Split.replicated, i)]
    out += _attention(m, f"{p}.self_attn", i)
    if is_moe_layer(m, i):
        return out + _moe(m, f"{p}.{MOE_BLOCK.get(m.model_type, 'mlp')}", i)
    dense = "feed_forward" if m.model_type in ("llama4", "llama4_text") else "mlp"
    return out + _mlp(m, f"{p}.{dense}", i, m.intermediate_size)


def pp_partition(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage as vLLM splits them (vllm/distributed/utils.py get_pp_indices): the
    remainder goes to the stages before the last, which also holds the final norm and lm_head."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


@functools.lru_cache(maxsize=256)
def modules(m: ModelSpec) -> tuple[Module, ...]:
    """Every weight-holding module of `m`, decoder layers in order, then the final norm and the lm_head (absent when
    tied: the embedding serves as lm_head on a single stage), with the vision encoder (if any) first."""
    h, v = m.hidden_size, m.vocab_size
    out: list[Module] = []
    if m.vision_params_b:
        # vLLM builds a VLM's towers on every pipeline stage (models/interfaces.py _mark_tower_model; mllama4.py,
        # gemma3_mm.py, mistral3.py, qwen2_5_vl.py construct them unconditionally) and shards them by TP
        # (mm_encoder_tp_mode "weights"), unquantized (quant_config=None for the Llama 4 tower).
        out.append(Module("vision_tower", Kind.vision, 1, round(m.vision_params_b * 1e9), Split.column, None,
                          every_stage=True))
    out.append(Module("model.embed_tokens", Kind.embedding, h, v, Split.vocab, None))
    # vLLM's rotary embedding keeps cos/sin for every position up to max_position_embeddings, rotary_dim wide, in
    # the model dtype (layers/rotary_embedding/base.py:59-63 register_buffer cos_sin_cache); get_rope shares one per
    # process, so each rank holds one (Llama 4 Scout's 10M positions make it 2.5 GiB).
    rotary = m.qk_rope_head_dim if m.is_mla else round(m.head_dim_eff * m.partial_rotary_factor)
    out.append(Module("model.rotary_emb.cos_sin_cache", Kind.derived, 1, m.max_position_embeddings * rotary,
                      Split.replicated, None, every_stage=True))
    for i in range(m.num_hidden_layers):
        out += _layer(m, i)
    out.append(Module("model.norm", Kind.norm, 1, h * (2 if m.norm_bias else 1), Split.replicated, None))
    out.append(Module("lm_head", Kind.lm_head, h, v, Split.vocab, None, bias=v if m.lm_head_bias else 0))
    return tuple(out)


def param_total(m: ModelSpec) -> int:
    """Parameters of the checkpoint: every module once (a tied lm_head is the embedding, not counted twice; tensors
    the engine derives at load are not in the checkpoint)."""
    return sum(x.params for x in modules(m)
               if not (x.kind is Kind.lm_head and m.tie_word_embeddings) and x.kind is not Kind.derived)

"""2025 architectures read from their config.json (tests/data/hf_configs/<org>/<repo>/, each with its SOURCE): weight
bytes per GPU derived here by hand from the config's numbers (literals, not the planner's tables) as vLLM 0.32 lays them
out, and Gemma 3's interleaved sliding-window KV cache as vLLM's KV-cache groups hold it.

Gemma 3: every sixth layer global, the rest in a 1,024-token window; the SigLIP tower built and held in bf16 on every
GPU of the replica (split by TP); two RoPE caches (vLLM get_rope per layer type): the global layers' linear-scaled one
of 131,072 x 8 positions (layers/rotary_embedding/linear_scaling_rope.py max_len) and the sliding layers' own.
"""

from pathlib import Path

import pytest

from planner import catalog, memory, weights
from planner.specs import Dtype, KvPrecision, Quantization

from conftest import plan_or_closest, request_for

CONFIGS = Path(__file__).parent / "data" / "hf_configs"


def model(repo: str):
    return request_for("model=hf", f"model.path={CONFIGS / repo}").model


def stage_bytes(repo: str, tp: int = 1, pp: int = 1) -> list:
    return list(weights.stage_bytes(model(repo), tp, pp, Dtype.bf16, Quantization.none))


# SigLIP-So400m as Gemma 3 builds it (siglip.py without the pooling head, gemma3_mm.py projector): conv patch embedding
# 3 x 14 x 14 -> 1152 with bias, 64 x 64 learned positions, 27 blocks (LayerNorms with bias, biased q/k/v/o, a biased
# 1152 -> 4304 -> 1152 MLP), a post LayerNorm, then the projector's RMSNorm (1152) and its 1152 -> text-hidden matrix.
def siglip_params(text_hidden: int) -> int:
    h, i = 1152, 4304
    block = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    return 3 * 14 * 14 * h + h + 64 * 64 * h + 27 * block + 2 * h + h + h * text_hidden


def test_gemma3_reads_transformers_defaults_and_the_layer_pattern():
    """config.json names few keys: vocab_size, heads, head_dim and the layer pattern are Gemma3TextConfig's defaults."""
    m = model("google/gemma-3-4b-it")
    assert (m.model_type, m.vocab_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim) == (
        "gemma3_text", 262208, 8, 4, 256)
    assert (m.sliding_window, m.sliding_window_layers, m.tie_word_embeddings, m.max_position_embeddings) == (
        1024, 34 - 5, True, 131072)  # layers 5, 11, 17, 23, 29 global
    assert model("google/gemma-3-27b-it").sliding_window_layers == 62 - 10
    assert model("google/gemma-3-12b-it").sliding_window_layers == 48 - 8


def test_gemma3_27b_bytes_by_hand_at_tp2():
    h, heads, kv, hd, inter, tp = 5376, 32, 16, 128, 21504, 2
    q, kv_rank = heads * hd // tp, kv * hd // tp
    attention = (h * q + 2 * h * kv_rank + q * h) * 2 + 2 * hd * 2  # q, k, v, o; q_norm + k_norm
    mlp = 3 * h * (inter // tp) * 2  # gate, up, down (GeGLU)
    norms = 4 * h * 2  # input, post-attention, pre- and post-feed-forward RMSNorm
    vocab_rank = 262208 // tp * h * 2  # 262,208 = 64 x 4,097: no padding; tied, so stored once
    rope = (131072 * 8 + 131072) * hd * 2  # linear x8 global cache + the sliding layers' own
    vision = siglip_params(h) * 2 / tp
    expected = 62 * (attention + mlp + norms) + vocab_rank + h * 2 + rope + vision
    assert siglip_params(h) == 423_060_336  # transformers' meta-device count (planner/catalog.py _vision_count)
    assert stage_bytes("google/gemma-3-27b-it", tp=2) == [pytest.approx(expected, rel=1e-9)]


def test_gemma3_4b_kv_groups_and_capacity_by_hand():
    """29 sliding and 5 global layers: vLLM cuts the buckets into groups of the smallest one's size (5): one full
    group and ceil(29 / 5) = 6 sliding ones; a block spans 5 layers; a 32K request needs ceil(32768 / 16) blocks in the
    full group and, in each sliding group, the window plus the tokens in flight (2 x 2,048 with async scheduling)."""
    m = model("google/gemma-3-4b-it")
    assert memory.kv_groups(m, 34) == [("full", 5)] + [("sliding", 5)] * 6
    page = 5 * 16 * 2 * 4 * 256 * 2  # 5 layers x 16 tokens x (K, V) x 4 KV heads x 256 x bf16
    need = 32768 // 16 + 6 * (-(-(1024 - 1 + 2 * 2048) // 16) + 1)  # 2,048 + 6 x 321 blocks
    assert memory.kv_bytes_per_token_layer(m, 1, "bf16") == 2 * 4 * 256 * 2
    mem = memory.breakdown(m, request_for("hw=l4x1").hw.gpu, tp=1, pp=1, dtype=Dtype.bf16, quant=Quantization.none,
                           kv_dtype=KvPrecision.auto, max_model_len=32768, max_num_seqs=256,
                           max_num_batched_tokens=2048, gpu_memory_utilization=0.9)
    got_blocks = int(mem.kv_cache_gib * 2**30 // page)
    assert mem.kv_cache_blocks == got_blocks
    assert mem.kv_cache_tokens == int(got_blocks / need * 32768)


def test_phi4_bytes_by_hand_at_tp2():
    """microsoft/phi-4 (Phi3ForCausalLM): Llama's shapes with fused qkv/gate_up; 10 KV heads, 5 per rank."""
    h, inter, tp = 5120, 17920, 2
    q, kv = 40 * 128 // tp, 10 * 128 // tp
    layer = (h * q + 2 * h * kv + q * h + 3 * h * (inter // tp)) * 2 + 2 * h * 2
    vocab_rank = 100352 // tp * h * 2  # 100,352 = 64 x 1,568; untied: embedding and lm_head
    expected = 40 * layer + 2 * vocab_rank + h * 2 + 16384 * 128 * 2
    assert stage_bytes("microsoft/phi-4", tp=2) == [pytest.approx(expected, rel=1e-9)]
    # vLLM 0.19 logged 27.39 GiB at TP 1 on an H100 (vllm_memory_logs.yaml llmd-phi4-tp1-8k)
    assert stage_bytes("microsoft/phi-4")[0] / 2**30 == pytest.approx(27.39, rel=0.005)


def test_glm45_bytes_by_hand_at_tp8():
    """zai-org/GLM-4.5: q/k/v biases, q/k norms, half-width RoPE; 3 dense layers then 89 MoE layers (160 experts of
    1536 split over TP, one shared expert), the router and its correction bias in fp32; 8 KV heads, one per rank."""
    m = model("zai-org/GLM-4.5")
    assert (m.qk_norm, m.attention_bias, m.o_proj_bias, m.partial_rotary_factor) == (True, True, False, 0.5)
    h, tp, hd = 5120, 8, 128
    q, kv = 96 * hd // tp, 8 * hd // tp
    attention = (h * q + 2 * h * kv + q * h) * 2 + (q + 2 * kv) * 2 + 2 * hd * 2  # weights, q/k/v biases, norms
    norms = 2 * h * 2
    dense = 3 * h * (12288 // tp) * 2
    expert = 3 * h * (1536 // tp) * 2
    moe = 160 * expert + expert + (h * 160 + 160) * 4  # routed, shared, fp32 router + e_score_correction_bias
    vocab_rank = 151552 // tp * h * 2  # 151,552 = 64 x 2,368
    rope = 131072 * 64 * 2  # rotary_dim = 128 x 0.5
    expected = 3 * (attention + norms + dense) + 89 * (attention + norms + moe) + 2 * vocab_rank + h * 2 + rope
    assert stage_bytes("zai-org/GLM-4.5", tp=8) == [pytest.approx(expected, rel=1e-9)]


@pytest.mark.parametrize("repo,hw", [
    pytest.param("google/gemma-3-4b-it", "l4x1", id="gemma3-4b-l4"),
    pytest.param("google/gemma-3-27b-it", "h100x1", id="gemma3-27b-h100"),
    pytest.param("microsoft/phi-4", "h100x1", id="phi4-h100"),
    pytest.param("zai-org/GLM-4.5", "h200x8", id="glm45-h200x8"),
])
def test_model_hf_plans_without_a_catalog_entry(repo, hw):
    fields = catalog.model_fields(str(CONFIGS / repo))
    assert fields["name"] == Path(repo).name.lower()
    plan = plan_or_closest("model=hf", f"model.path={CONFIGS / repo}", f"hw={hw}").plan
    assert plan.model_path == str((CONFIGS / repo).resolve())

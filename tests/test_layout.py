"""Weights as the engine counts them, per architecture: biases, partial rotary, tied embeddings, vocabulary padding,
pipeline stages. Expected bytes are derived here by hand from the config's numbers; where a real vLLM startup log
exists for the model (tests/data/reference/vllm_memory_logs.yaml) the derivation is checked against it too."""

from pathlib import Path

import pytest

from planner import catalog, layout, weights
from planner.specs import Dtype, Quantization

from conftest import request_for

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
GIB = 2**30


def test_phi2_biases_plain_mlp_and_partial_rotary_by_hand():
    """microsoft/phi-2: q/k/v/dense with biases, fc1/fc2 (no gate), one LayerNorm with bias per layer, a biased
    lm_head, rotary over 40% of head_dim 80. vLLM 0.19 logged 5.19 GiB (llmd-phi2-tp1-2k)."""
    m = request_for("model=hf", f"model.path={CONFIGS / 'microsoft/phi-2'}").model
    assert (m.mlp_gated, m.mlp_bias, m.norm_bias, m.lm_head_bias, m.partial_rotary_factor) == (False, True, True,
                                                                                               True, 0.4)
    h, inter, vocab = 2560, 10240, 51200
    per_layer = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * h
    params = 32 * per_layer + vocab * h + (vocab * h + vocab) + 2 * h
    assert params == 2_779_683_840  # Microsoft: "Phi-2 is a Transformer with 2.7 billion parameters"
    rope = 2048 * 32 * 2  # 2,048 positions x 32 rotary dims (0.4 x 80), fp16
    expected = params * 2 + rope
    assert weights.stage_bytes(m, 1, 1, Dtype.fp16, Quantization.none) == (pytest.approx(expected, rel=1e-9),)
    assert expected / GIB == pytest.approx(5.19, rel=0.005)
    assert m.num_params_b == pytest.approx(2.7797, abs=1e-4)


def test_pipeline_stages_hold_embedding_first_and_lm_head_last_by_hand():
    """Llama-3.1-8B at PP 4: 8 layers a stage; the first adds the embedding, the last the final norm and lm_head;
    every stage keeps the rotary cache. vLLM 0.19 logged 4.26 GiB on PP0 and 3.28 GiB on a middle stage
    (llmd-llama31-8b-pp4-8k)."""
    m = request_for("model=llama3.1-8b").model
    h, inter, q, kv = 4096, 14336, 4096, 1024
    layer = (2 * h * q + 2 * h * kv + 3 * h * inter + 2 * h) * 2
    vocab, rope = 128256 * h * 2, 131072 * 128 * 2
    first, middle, last = 8 * layer + vocab + rope, 8 * layer + rope, 8 * layer + vocab + h * 2 + rope
    got = weights.stage_bytes(m, 1, 4, Dtype.bf16, Quantization.none)
    assert got == (pytest.approx(first), pytest.approx(middle), pytest.approx(middle), pytest.approx(last))
    assert (round(first / GIB, 2), round(middle / GIB, 2)) == (4.26, 3.28)


def test_vocabulary_is_padded_to_64_rows_then_split_over_tp():
    """vocab_parallel_embedding.py pad_vocab_size: 50,257 rows become 50,304 (786 x 64), 12,576 per rank at TP 4."""
    m = request_for("model=llama3.2-1b", "model.vocab_size=50257", "model.tie_word_embeddings=false").model
    emb = next(x for x in layout.modules(m) if x.kind is layout.Kind.embedding)
    assert weights.module_bytes(emb, m, 4, 2.0, weights.scheme_for(m, Quantization.none)) == 12_576 * 2048 * 2


def test_tied_embedding_is_one_tensor_on_one_stage_and_two_under_pp():
    m = request_for("model=llama3.2-1b").model  # tie_word_embeddings: true
    one = weights.stage_bytes(m, 1, 1, Dtype.bf16, Quantization.none)[0]
    two = sum(weights.stage_bytes(m, 1, 2, Dtype.bf16, Quantization.none))
    vocab = 128256 * 2048 * 2
    rope = m.max_position_embeddings * 64 * 2
    assert two - one == pytest.approx(vocab + rope)  # lm_head loaded as its own copy; each stage its rope cache


@pytest.mark.parametrize("model_type", sorted(catalog.TIED_BY_DEFAULT | {"llama", "qwen2", "mistral", "phi",
                                                                           "gpt_oss", "deepseek_v3", "qwen3_moe"}))
def test_tied_default_table_agrees_with_transformers(model_type):
    """A config.json without tie_word_embeddings ties as its transformers config class defaults (Gemma: tied)."""
    transformers = pytest.importorskip("transformers")
    try:
        cfg = transformers.AutoConfig.for_model(model_type)
    except ValueError:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type}")
    assert (model_type in catalog.TIED_BY_DEFAULT) == bool(cfg.tie_word_embeddings)


def test_mla_keeps_absorbed_projections_in_the_compute_dtype():
    """vLLM splits each MLA layer's kv_b_proj into W_UK_T and W_UV in bf16 at load (mla_attention.py:1248, :1325):
    kv_lora_rank x heads x (qk_nope + v) more values per layer, split over TP like the heads."""
    m = request_for("model=deepseek-v3").model
    derived = [x for x in layout.modules(m) if x.kind is layout.Kind.derived and x.layer is not None]
    assert len(derived) == 61
    assert weights.module_bytes(derived[0], m, 8, 2.0, weights.scheme_for(m, Quantization.fp8)) == \
        512 * (128 // 8) * (128 + 128) * 2

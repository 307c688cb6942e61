"""Weights as the engine counts them, per architecture: biases, partial rotary, tied embeddings, vocabulary padding,
pipeline stages. Expected bytes are derived here by hand from the config's numbers; where a real vLLM startup log
exists for the model (tests/data/reference/vllm_memory_logs.yaml) the derivation is checked against it too."""

import dataclasses
from pathlib import Path

import pytest

from planner import catalog, layout, weights
from planner.errors import InputError
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


def _tower(h: int, inter: int) -> int:
    """One biased ViT block with LayerNorms: q/k/v/o with biases, fc1/fc2 with biases, two LayerNorms (w and b)."""
    return 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 4 * h


def test_llama4_vision_tower_by_hand_and_on_every_stage():
    """Llama-4-Scout's real config.json (vision_config: 34 layers of 1408, MLP 5632, 336 px in 14 px patches,
    pixel-shuffle 0.5 into a 4096 adapter, projector to 5120): vLLM 0.32 builds the tower unquantized, sharded by TP,
    on every pipeline stage (mllama4.py, interfaces.py _mark_tower_model). With it the TP 4 weights are 53.10 GiB
    against vLLM 0.19's logged 53.12 (llmd-llama4-scout-tp4-8k; 52.69 without it)."""
    m = request_for("model=hf", f"model.path={CONFIGS / 'meta-llama/Llama-4-Scout-17B-16E-Instruct'}").model
    h, inter = 1408, 5632
    embeddings = h + (24 * 24 + 1) * h + 3 * 14 * 14 * h + 4 * h  # class, positions, patch linear, pre/post norms
    adapter = (4 * h) * 4096 + 4096 * 4096  # pixel shuffle packs 4 patches: 5632 -> 4096 -> 4096, no biases
    projector = 4096 * 5120
    params = embeddings + 34 * _tower(h, inter) + adapter + projector
    assert params == 871_932_416  # transformers 5.19 Llama4ForConditionalGeneration on the meta device: the same
    assert round(m.vision_params_b * 1e9) == params
    without = dataclasses.replace(m, vision_params_b=0.0)
    for pp in (1, 2):
        with_tower = weights.stage_bytes(m, 4, pp, Dtype.bf16, Quantization.none)
        text_only = weights.stage_bytes(without, 4, pp, Dtype.bf16, Quantization.none)
        assert [a - b for a, b in zip(with_tower, text_only)] == [pytest.approx(params * 2 / 4)] * pp
    assert weights.stage_bytes(m, 4, 1, Dtype.bf16, Quantization.none)[0] / GIB == pytest.approx(53.12, rel=0.002)


@pytest.mark.parametrize("top, vision, text_hidden, expected", [
    # Gemma 3 (4B/12B/27B share the tower): SigLIP-So400m at 896 px, conv patches with a bias, learned positions, no
    # pooling head; projector = a [1152, text hidden] matrix and an RMSNorm (gemma3_mm.py Gemma3MultiModalProjector).
    pytest.param({}, {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                      "num_hidden_layers": 27, "image_size": 896, "patch_size": 14, "vision_use_head": False},
                 5376, 3 * 14 * 14 * 1152 + 1152 + 64 * 64 * 1152 + 27 * _tower(1152, 4304) + 2 * 1152
                 + 1152 * 5376 + 1152, id="gemma-3-27b"),
    # Mistral-Small-3.1 (Pixtral): bias-free, RMSNorms, gated MLP, 2D RoPE (no position table); projector = norm,
    # a 2x2 patch merger [4096 -> 1024] and two linears to the text width (mistral3.py).
    pytest.param({"spatial_merge_size": 2, "multimodal_projector_bias": False},
                 {"model_type": "pixtral", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                  "image_size": 1540, "patch_size": 14}, 5120,
                 3 * 14 * 14 * 1024 + 1024 + 24 * (4 * 1024 * 1024 + 3 * 1024 * 4096 + 2 * 1024) + 1024
                 + 4096 * 1024 + 1024 * 5120 + 5120 * 5120, id="mistral-small-3.1"),
    # Qwen2.5-VL-7B: Conv3d patches over 2 frames (no bias), RMSNorms, biased q/k/v and gated MLP, a merger of 2x2
    # patches (5120 -> 5120 -> 3584, biased) behind an RMSNorm (qwen2_5_vl.py); its vision_config has no model_type.
    pytest.param({}, {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_chans": 3,
                      "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}, 3584,
                 3 * 2 * 14 * 14 * 1280 + 32 * (2 * 1280 + 3 * 1280 * 1280 + 3 * 1280 + 1280 * 1280 + 1280
                                                + 2 * (1280 * 3420 + 3420) + 3420 * 1280 + 1280)
                 + 1280 + 5120 * 5120 + 5120 + 5120 * 3584 + 3584, id="qwen2.5-vl-7b"),
])
def test_vision_towers_by_hand(top, vision, text_hidden, expected):
    """Each equals transformers 5.19's parameter count of the model built on the meta device from that vision_config
    (Gemma-3 423,060,336; Pixtral 438,958,080; Qwen2.5-VL-7B 676,550,144)."""
    assert catalog._vision_params("DIR", {**top, "vision_config": vision}, text_hidden) == expected
    assert expected in (423_060_336, 438_958_080, 676_550_144)


def test_a_malformed_vision_config_is_a_paragraph():
    with pytest.raises(InputError, match=r"vision_config.*Fix: .*vision_params_b"):
        catalog._vision_params("DIR", {"vision_config": {"model_type": "siglip_vision_model", "hidden_size": "x"}},
                               4096)


def test_mistral_small_31_real_config_with_its_pixtral_tower_by_hand():
    """mistralai/Mistral-Small-3.1-24B-Instruct-2503 (real config.json: text_config Mistral 5120 x 40 layers, MLP
    32768, vocab 131072 untied; vision_config Pixtral 1024 x 24): 24.01 B parameters ("24B"); bf16 at TP 1 is
    44.75 GiB against vLLM 0.19's logged 44.76 (llmd-mistral-small31-24b-tp1-8k)."""
    m = request_for("model=hf", f"model.path={CONFIGS / 'mistralai/Mistral-Small-3.1-24B-Instruct-2503'}").model
    h, inter, vocab = 5120, 32768, 131072
    layer = h * 4096 + 2 * h * 1024 + 4096 * h + 3 * h * inter + 2 * h  # q, k, v, o; gate, up, down; two norms
    text = 40 * layer + 2 * vocab * h + h
    vision = (3 * 14 * 14 * 1024 + 1024 + 24 * (4 * 1024 * 1024 + 3 * 1024 * 4096 + 2 * 1024) + 1024
              + 4096 * 1024 + 1024 * 5120 + 5120 * 5120)
    assert round(m.vision_params_b * 1e9) == vision == 438_958_080
    assert m.num_params_b == pytest.approx((text + vision) / 1e9, abs=1e-4)
    rope = 131072 * 128  # cos/sin cache: max positions x head_dim
    expected = (text + vision + rope) * 2
    assert weights.stage_bytes(m, 1, 1, Dtype.bf16, Quantization.none) == (pytest.approx(expected, rel=1e-9),)
    assert expected / GIB == pytest.approx(44.76, rel=0.001)

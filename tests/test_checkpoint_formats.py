"""Quantized checkpoints, read from their real config.json (tests/data/hf_configs/<org>/<repo>/, each with its SOURCE):
the format and layout the import reads, the weight bytes per GPU derived here by hand from the config's numbers
(literals, not the planner's tables), and a plan for each with `model=hf`.

Layouts as vLLM 0.32 allocates them (planner/weights.py cites the files): FP8 1-byte weights with fp32 scales (per
tensor, or per 128x128 block), NVFP4 4-bit weights with one fp8 scale per 16, MXFP4 4-bit with one e8m0 scale per 32
(gpt-oss experts, padded to the kernels' tiles), integer weight-only packed with a 16-bit scale per group.
"""

from pathlib import Path

import pytest

from planner import search, weights
from planner.errors import InputError
from planner.specs import Dtype, Quantization

from conftest import request_for

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
GIB = 2**30


def model(repo: str, *overrides: str):
    return request_for("model=hf", f"model.path={CONFIGS / repo}", *overrides).model


def stage_bytes(repo: str, tp: int = 1, pp: int = 1) -> list:
    m = model(repo)
    return list(weights.stage_bytes(m, tp, pp, Dtype.bf16, Quantization(m.quantization)))


def test_every_config_names_its_source():
    for cfg in CONFIGS.glob("*/*/config.json"):
        source = (cfg.parent / "SOURCE").read_text()
        assert "https://huggingface.co/" in source, cfg


def test_qwen3_32b_fp8_block_bytes_by_hand():
    """Qwen/Qwen3-32B-FP8: quant_method fp8, weight_block_size [128, 128]: fp8 weights, one fp32 scale per block."""
    m = model("Qwen/Qwen3-32B-FP8")
    assert (m.quantization, m.quant.method, m.quant.strategy, m.quant.block_n, m.quant.block_k) == \
        ("fp8", "fp8", "block", 128, 128)
    h, inter, q, kv = 5120, 25600, 64 * 128, 8 * 128
    blocks = lambda n, k: -(-n // 128) * -(-k // 128) * 4  # noqa: E731 - fp32 scale per 128x128 block
    linear = (h * q + q * h + 2 * h * kv + 3 * h * inter
              + blocks(q, h) + blocks(h, q) + 2 * blocks(kv, h) + 2 * blocks(inter, h) + blocks(h, inter))
    norms = 2 * h * 2 + 2 * 128 * 2  # input/post-attention RMSNorm, q_norm/k_norm (Qwen3), bf16
    vocab = 151936 * h * 2  # 151,936 is a multiple of 64: no padding; embedding and untied lm_head stay bf16
    rope = 40960 * 128 * 2  # cos/sin cache: max_position_embeddings x head_dim, bf16
    expected = 64 * (linear + norms) + 2 * vocab + h * 2 + rope
    assert expected == 34_336_729_088
    assert stage_bytes("Qwen/Qwen3-32B-FP8") == [pytest.approx(expected, rel=1e-9)]


def test_gpt_oss_20b_mxfp4_bytes_by_hand_at_tp2():
    """openai/gpt-oss-20b: quant_method mxfp4 quantizes the routed experts only (attention, router, embeddings bf16);
    vLLM pads the experts to its MXFP4 kernels' tiles: intermediate 1440 per rank -> 1536, hidden 2880 -> 3072."""
    m = model("openai/gpt-oss-20b")
    assert (m.quantization, m.quant.method, m.num_experts, m.num_experts_per_tok) == ("mxfp4", "mxfp4", 32, 4)
    h, heads, hd, kv_heads, experts = 2880, 64, 64, 8, 32
    q_rank, kv_rank = heads * hd // 2, kv_heads * hd // 2  # column-parallel over TP 2
    attention = (2 * h * q_rank + 2 * h * kv_rank) * 2 + (q_rank + 2 * kv_rank + h) * 2 + heads // 2 * 2  # + sinks
    router = (h * experts + experts) * 2
    norms = 2 * h * 2
    i_pad, h_pad = 1536, 3072
    matrix = lambda n, k: n * k // 2 + n * (k // 32)  # noqa: E731 - 4-bit values + one e8m0 scale per 32
    expert = 2 * matrix(i_pad, h_pad) + matrix(h_pad, i_pad) + (2 * i_pad + h_pad) * 2  # w13, w2, bf16 biases
    vocab_rank = 201088 // 2 * h * 2  # 201,088 = 64 x 3,142: no padding
    rope = 131072 * 64 * 2  # YaRN cache: 4,096 x 32 positions x head_dim 64, bf16
    expected = 24 * (attention + router + norms + experts * expert) + 2 * vocab_rank + h * 2 + rope
    assert expected == 7_602_017_920
    assert stage_bytes("openai/gpt-oss-20b", tp=2) == [pytest.approx(expected, rel=1e-9)]
    # vLLM 0.19 logged 7.01 GiB at TP 2 on an H100 (vllm_memory_logs.yaml llmd-gpt-oss-20b-tp2-8k): within 1%
    assert expected / GIB == pytest.approx(7.01, rel=0.01)


def test_nvidia_llama31_70b_modelopt_fp8_bytes_by_hand_at_tp4():
    """nvidia/Llama-3.1-70B-Instruct-FP8: no quantization_config in config.json; hf_quant_config.json (ModelOpt 0.23)
    says quant_algo FP8, lm_head excluded: fp8 weights with one fp32 scale per tensor, KV FP8 asked but not applied
    by vLLM from a legacy hf_quant_config.json (no quant_method)."""
    m = model("nvidia/Llama-3.1-70B-Instruct-FP8")
    assert (m.quantization, m.quant.method, m.quant.strategy, m.quant.kv_cache_dtype) == ("fp8", "modelopt", "tensor",
                                                                                          "")
    h, inter, q, kv = 8192, 28672, 64 * 128, 8 * 128
    linear = (h * q + q * h + 2 * h * kv + 3 * h * inter) // 4 + 7 * 4  # split over TP 4; 7 fp32 tensor scales
    norms = 2 * h * 2
    vocab_rank = 128256 // 4 * h * 2
    first, last = 80 * (linear + norms) + vocab_rank, vocab_rank + h * 2 + 131072 * 128 * 2  # + rope cache
    assert stage_bytes("nvidia/Llama-3.1-70B-Instruct-FP8", tp=4) == [pytest.approx(first + last, rel=1e-9)]


def test_nvidia_qwen3_235b_nvfp4_bytes_by_hand_at_tp4():
    """nvidia/Qwen3-235B-A22B-NVFP4 (hf_quant_config.json, quant_algo NVFP4, group 16): attention and experts in
    NVFP4, the routers (mlp.gate) and lm_head excluded and left bf16."""
    m = model("nvidia/Qwen3-235B-A22B-NVFP4")
    assert (m.quantization, m.quant.method, m.quant.group_size, m.quant.scale_bytes) == ("nvfp4", "modelopt_fp4",
                                                                                        16, 1)
    h, q, kv_rank, width, experts = 4096, 64 * 128 // 4, 4 * 128, 1536 // 4, 128  # 4 KV heads: one per rank
    fp4 = lambda n, k: n * k // 2 + n * k // 16 + 4  # noqa: E731 - packed values, fp8 group scales, fp32 global
    attention = fp4(q, h) + 2 * fp4(kv_rank // 4, h) + fp4(h, q)
    expert = 2 * fp4(width, h) + fp4(h, width)
    router = h * experts * 2
    norms = 2 * h * 2 + 2 * 128 * 2
    vocab_rank = 151936 // 4 * h * 2
    expected = 94 * (attention + experts * expert + router + norms) + 2 * vocab_rank + h * 2 + 40960 * 128 * 2
    assert stage_bytes("nvidia/Qwen3-235B-A22B-NVFP4", tp=4) == [pytest.approx(expected, rel=1e-9)]


def test_qwen3_30b_a3b_fp8_moe_keeps_routers_bf16():
    """Qwen/Qwen3-30B-A3B-FP8 lists every mlp.gate in modules_to_not_convert: 48 routers of 2048 x 128 in bf16."""
    m = model("Qwen/Qwen3-30B-A3B-FP8")
    ignored = [i for i in m.quant.ignore if i.endswith("mlp.gate")]
    assert len(ignored) == 48
    h, experts, width, q, kv = 2048, 128, 768, 32 * 128, 4 * 128
    blocks = lambda n, k: -(-n // 128) * -(-k // 128) * 4  # noqa: E731
    fp8 = lambda n, k: n * k + blocks(n, k)  # noqa: E731
    attention = fp8(q, h) + 2 * fp8(kv, h) + fp8(h, q)
    expert = 2 * fp8(width, h) + fp8(h, width)
    per_layer = attention + experts * expert + h * experts * 2 + 2 * h * 2 + 2 * 128 * 2
    expected = 48 * per_layer + 2 * 151936 * h * 2 + h * 2 + 40960 * 128 * 2
    assert stage_bytes("Qwen/Qwen3-30B-A3B-FP8") == [pytest.approx(expected, rel=1e-9)]


def test_deepseek_v3_fp8_block_mla_at_tp8():
    """deepseek-ai/DeepSeek-V3 (fp8, 128x128 blocks): MLA's q_a/kv_a projections are replicated on every rank, and
    vLLM keeps W_UK_T/W_UV (kv_b_proj split per head) in bf16 beside the fp8 kv_b_proj."""
    m = model("deepseek-ai/DeepSeek-V3")
    assert (m.kv_lora_rank, m.q_lora_rank, m.first_dense_layers, m.num_experts) == (512, 1536, 3, 256)
    h, heads, tp = 7168, 128 // 8, 8
    blocks = lambda n, k: -(-n // 128) * -(-k // 128) * 4  # noqa: E731
    fp8 = lambda n, k: n * k + blocks(n, k)  # noqa: E731
    mla = (fp8(1536, h) + fp8(heads * 192, 1536) + fp8(576, h) + fp8(heads * 256, 512) + fp8(h, heads * 128)
           + (1536 + 512) * 2 + 512 * heads * 256 * 2)  # q_a, q_b, kv_a, kv_b, o; latent norms; W_UK_T + W_UV
    dense = 2 * fp8(18432 // tp, h) + fp8(h, 18432 // tp)
    expert = 2 * fp8(2048 // tp, h) + fp8(h, 2048 // tp)
    moe = 256 * expert + h * 256 * 2 + 2 * fp8(2048 // tp, h) + fp8(h, 2048 // tp)  # router bf16; 1 shared
    norms = 2 * h * 2
    vocab_rank = 129280 // tp * h * 2  # 129,280 = 64 x 2,020
    rope = 163840 * 64 * 2  # YaRN cache over qk_rope_head_dim 64
    expected = 3 * (mla + dense + norms) + 58 * (mla + moe + norms) + 2 * vocab_rank + h * 2 + rope
    assert stage_bytes("deepseek-ai/DeepSeek-V3", tp=8) == [pytest.approx(expected, rel=1e-6)]


@pytest.mark.parametrize("repo,hw,quant", [
    pytest.param("openai/gpt-oss-20b", "h100x1", Quantization.mxfp4, id="gpt-oss-20b-mxfp4-h100"),
    pytest.param("openai/gpt-oss-120b", "h100x1", Quantization.mxfp4, id="gpt-oss-120b-mxfp4-h100"),
    pytest.param("Qwen/Qwen3-32B-FP8", "h100x1", Quantization.fp8, id="qwen3-32b-fp8-block-h100"),
    pytest.param("Qwen/Qwen3-32B-FP8", "a100x1", Quantization.fp8, id="qwen3-32b-fp8-weight-only-a100"),
    pytest.param("nvidia/Llama-3.1-70B-Instruct-FP8", "h100x2", Quantization.fp8, id="modelopt-fp8-h100x2"),
    pytest.param("nvidia/Qwen3-235B-A22B-NVFP4", "b200x8", Quantization.nvfp4, id="nvfp4-b200x8"),
    pytest.param("nvidia/Qwen3-235B-A22B-NVFP4", "h200x8", Quantization.nvfp4, id="nvfp4-marlin-h200x8"),
    pytest.param("moonshotai/Kimi-K2.5", "h200x8", Quantization.gptq, id="kimi-k2.5-w4a16-h200x8"),
])
def test_model_hf_plans_each_format(repo, hw, quant):
    from conftest import compiled_or_closest

    c = compiled_or_closest(request_for("model=hf", f"model.path={CONFIGS / repo}", f"hw={hw}",
                                        "target=best-effort"))
    p = c.plan
    assert p.quantization is quant and p.quantization_method == model(repo).quant.method
    assert c.memory.kv_cache_tokens >= p.max_model_len


def test_a_checkpoint_format_no_engine_loads_is_one_clear_error(tmp_path):
    import json

    cfg = json.loads((CONFIGS / "Qwen/Qwen3-32B-FP8/config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "exl3", "bits": 3.5}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"quant_method=exl3.*no engine.*Fix:"):
        search.compile_plan(request_for("model=hf", f"model.path={tmp_path}", "hw=h100x1"))


def _with_quant(tmp_path, quantization_config: dict) -> Path:
    """The real Qwen3-32B config.json with another quantization_config (a rule input, not a format fixture)."""
    import json

    cfg = json.loads((CONFIGS / "Qwen/Qwen3-32B-FP8/config.json").read_text())
    cfg["quantization_config"] = quantization_config
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_gptq_with_act_order_groups_goes_to_sglang(tmp_path):
    """vLLM 0.32 refuses desc_act=True with groups (gptq_utils.py:23); SGLang loads it."""
    from conftest import compiled_or_closest

    d = _with_quant(tmp_path, {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True})
    c = compiled_or_closest(request_for("model=hf", f"model.path={d}", "hw=h100x1", "target=best-effort"))
    assert c.plan.backend.value == "sglang" and c.plan.quantization is Quantization.gptq
    assert "precision.gptq-act-order-not-in-vllm" in c.rules_fired
    with pytest.raises(InputError, match=r"backend.name given, but precision.gptq-act-order-not-in-vllm rules it out"):
        search.compile_plan(request_for("model=hf", f"model.path={d}", "hw=h100x1", "backend=vllm"))


def test_bitsandbytes_checkpoint_is_planned_on_sglang(tmp_path):
    from conftest import compiled_or_closest

    d = _with_quant(tmp_path, {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                               "bnb_4bit_use_double_quant": True})
    m = request_for("model=hf", f"model.path={d}").model
    assert (m.quantization, m.quant.weight_type, m.quant.group_size, m.quant.scale_bytes) == ("bitsandbytes", "nf4",
                                                                                              64, 1)
    c = compiled_or_closest(request_for("model=hf", f"model.path={d}", "hw=h100x1", "target=best-effort"))
    assert (c.plan.backend.value, c.plan.quantization_method) == ("sglang", "bitsandbytes")


def test_2_4_sparse_checkpoint_is_one_clear_error(tmp_path):
    d = _with_quant(tmp_path, {"quant_method": "compressed-tensors", "format": "sparse-24-bitmask", "config_groups": {},
                               "sparsity_config": {"format": "sparse-24-bitmask", "sparsity_structure": "2:4",
                                                   "targets": ["Linear"], "ignore": ["lm_head"]}})
    with pytest.raises(InputError, match=r"2:4 sparse.*Sparsity support has been removed.*Fix: serve the dense"):
        request_for("model=hf", f"model.path={d}")


def test_kv_cache_scheme_gives_an_fp8_kv_cache(tmp_path):
    from conftest import compiled_or_closest

    d = _with_quant(tmp_path, {"quant_method": "compressed-tensors", "format": "float-quantized",
                               "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                                   "num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True},
                                   "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                                         "dynamic": True}}},
                               "ignore": ["lm_head"], "kv_cache_scheme": {"num_bits": 8, "type": "float",
                                                                          "strategy": "tensor", "dynamic": False}})
    c = compiled_or_closest(request_for("model=hf", f"model.path={d}", "hw=h100x1", "target=best-effort"))
    assert (c.plan.quantization, c.plan.kv_cache_dtype.value, c.plan.quantization_method) == (
        Quantization.fp8, "fp8", "compressed-tensors")

"""Each engine's own memory accounting and defaults (planner/engines.py), computed by hand from the formulas the
engines' sources state (conf/calibration/engines.yaml cites them), and chosen through the backend's capabilities."""

import pytest
from conftest import request_for

from backends import get
from planner import engines, memory
from planner.engines import MemoryParts
from planner.specs import BackendName, Dtype, KvPrecision, Quantization

GIB = 2**30
PARTS = MemoryParts(total=80 * GIB, weights=16 * GIB, activations=2 * GIB, non_torch=1 * GIB, cuda_graphs=1 * GIB,
                    cuda_context=0.5 * GIB)


@pytest.mark.parametrize("engine,fraction,budget_gib", [
    # vLLM: ceil(80 x 0.9) - 16 - 2 - (1 + 1)
    pytest.param(engines.VLLM, 0.9, 80 * 0.9 - 16 - 2 - 2, id="vllm-total-fraction"),
    # TensorRT-LLM: (80 - (0.5 + 16 + 2 + 1)) x 0.9 (_util.py _cal_max_memory; graphs come later)
    pytest.param(engines.TRTLLM, 0.9, (80 - 19.5) * 0.9, id="trtllm-free-after-peak"),
    # SGLang: (80 - 0.5 - 1) x 0.85 - 16 (kv_cache_configurator.py _profile_available_bytes)
    pytest.param(engines.SGLANG, 0.85, 78.5 * 0.85 - 16, id="sglang-static-fraction"),
])
def test_kv_budget_follows_each_engines_accounting(engine, fraction, budget_gib):
    assert engine.kv_sizing(PARTS, fraction).budget / GIB == pytest.approx(budget_gib, abs=1e-6)


def test_sglang_refuses_a_fraction_that_leaves_no_room_for_activations():
    assert not engines.SGLANG.kv_sizing(PARTS, 0.999).starts
    assert engines.SGLANG.kv_sizing(PARTS, 0.85).starts


@pytest.mark.parametrize("hw,tp,expected", [
    # nvidia-smi MiB = (79.18 + 0.47) x 1024 = 81561.6; reserved = 512 + 1.5 x 8192 + 128 x 1 + 2 x 256 + 8 x 58
    # (58 prefill graph sizes up to 8192) = 13904 MiB -> round((81561.6 - 13904) / 81561.6, 3)
    pytest.param("h100x1", 1, round((81561.6 - 13904) / 81561.6, 3), id="h100-tp1"),
    # TP 4: decode graph max bs 512 and 128 x 4 for the parallel term: 512 + 12288 + 512 + 1024 + 464 = 14800
    pytest.param("h100x4", 4, round((81561.6 - 14800) / 81561.6, 3), id="h100-tp4"),
])
def test_sglang_default_mem_fraction_static(hw, tp, expected):
    req = request_for("model=llama3.1-8b", f"hw={hw}")
    assert len(engines.sglang_prefill_graph_sizes(8192)) == 58
    assert engines.sglang_mem_fraction_static(req.hw.gpu, tp, 1, req.model) == expected


@pytest.mark.parametrize("kv_tokens,asked,expected", [
    pytest.param(400_000, 1024, 1024, id="asked-fits"),
    pytest.param(3000, 4096, 1500, id="half-the-pool"),  # tokens // 2
    pytest.param(10_000_000, 9999, 4096, id="ceiling"),  # clamp(tokens / context x 512, 2048, 4096)
])
def test_sglang_max_running_requests_follows_the_pool(kv_tokens, asked, expected):
    assert engines.SGLANG.max_running(kv_tokens, 4096, asked) == expected
    assert engines.VLLM.max_running(kv_tokens, 4096, asked) == asked


@pytest.mark.parametrize("backend,engine", [
    pytest.param(BackendName.vllm, engines.VLLM, id="vllm"), pytest.param(BackendName.trtllm, engines.TRTLLM, id="trt"),
    pytest.param(BackendName.sglang, engines.SGLANG, id="sglang"), pytest.param(BackendName.tgi, engines.TGI, id="tgi"),
])
def test_the_backends_capabilities_choose_the_engine_model(backend, engine):
    assert get(backend).capabilities.engine is engine
    assert engines.for_backend(backend) is engine


def test_a_trtllm_plan_is_sized_by_trtllm_accounting():
    """backend=trtllm: 0.9 of what the profiling peak leaves, blocks of 32 tokens, trtllm-serve's batch defaults."""
    req = request_for("model=llama3.1-8b", "hw=h100x1", "backend=trtllm")
    from planner.search import compile_plan

    compiled = compile_plan(req)
    plan, mem = compiled.plan, compiled.memory
    assert plan.gpu_memory_utilization == 0.9 and mem.block_size == 32
    assert plan.max_num_batched_tokens == 8192
    direct = memory.breakdown(req.model, req.hw.gpu, tp=1, pp=1, dtype=Dtype.bf16, quant=plan.quantization,
                              kv_dtype=plan.kv_cache_dtype, max_model_len=plan.max_model_len, max_num_seqs=2048,
                              max_num_batched_tokens=8192, gpu_memory_utilization=0.9, engine=engines.TRTLLM)
    peak = 0.604 + mem.weights_gib + mem.activations_gib + mem.runtime_overhead_gib
    assert direct.kv_cache_gib == pytest.approx((79.18 - peak) * 0.9, abs=0.005)  # plan fields: 3 decimals
    assert mem.kv_cache_gib == pytest.approx(direct.kv_cache_gib, abs=0.005)
    vllm = memory.breakdown(req.model, req.hw.gpu, tp=1, pp=1, dtype=Dtype.bf16, quant=Quantization.none,
                            kv_dtype=KvPrecision.bf16, max_model_len=plan.max_model_len, max_num_seqs=1024,
                            max_num_batched_tokens=8192, gpu_memory_utilization=0.9)
    assert mem.kv_cache_gib > vllm.kv_cache_gib  # the fraction of what is left, not of the total

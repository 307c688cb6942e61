"""The catalogs themselves: coverage, provenance, and numbers that agree with their own architecture."""

from importlib import resources

import pytest
import yaml

from planner import memory, perf, rules
from planner.specs import Arch

from conftest import compiled_or_closest, plan_or_closest, request_for

CONF = resources.files("conf")


def _entries(group: str) -> dict:
    return {p.name[:-5]: yaml.safe_load(p.read_text()) for p in CONF.joinpath(group).iterdir()
            if p.name.endswith(".yaml")}


MODELS = {k: v for k, v in _entries("model").items() if k != "hf"}
GPUS = {k: v for k, v in _entries("gpu").items() if k != "cpu"}
HW = _entries("hw")

REQUIRED_MODELS = ["llama3-8b", "llama3-70b", "llama3.1-405b", "llama3.2-1b", "llama3.2-3b", "mistral-7b",
                   "mixtral-8x7b", "mixtral-8x22b", "qwen2.5-7b", "qwen2.5-32b", "qwen2.5-72b", "qwen3-32b",
                   "qwen3-235b-a22b", "deepseek-v3", "gemma2-27b", "phi3-mini", "qwen3-30b-a3b",
                   "qwen3-coder-480b-a35b", "deepseek-r1", "deepseek-v3.1", "kimi-k2"]
REQUIRED_GPUS = ["v100", "t4", "a10g", "l4", "l40s", "a100-40g", "a100-80g", "h100-sxm", "h100-pcie", "h200", "b200",
                 "rtx4090", "rtx-pro-6000", "l20", "h20", "h800", "a10", "l40", "b300", "gb200", "mi325x", "mi355x"]
REQUIRED_HW = ["h100x1", "h100x2", "h100x4", "h100x8", "h200x1", "h200x4", "h200x8", "a100x1", "a100x4", "a100x8",
               "l40sx1", "l40sx2", "l40sx4", "l4x1", "t4x1", "v100x8", "b200x8", "2xh100x8", "cpu", "auto",
               "rtx4090x1", "rtx4090x2", "rtxpro6000x1", "l20x1", "h20x8", "h800x8", "a10x1", "a10gx1", "l40x1",
               "b300x8", "gb200x4", "mi325xx8", "mi355xx8", "2xh200x8"]


def test_catalog_coverage():
    assert len(MODELS) >= 26 and set(REQUIRED_MODELS) <= set(MODELS)
    assert len(GPUS) >= 23 and set(REQUIRED_GPUS) <= set(GPUS)
    assert len(HW) >= 36 and set(REQUIRED_HW) <= set(HW)


@pytest.mark.parametrize("group,name", [pytest.param(g, n, id=f"{g}/{n}") for g, entries in
                                        (("model", MODELS), ("gpu", GPUS), ("hw", HW)) for n in entries])
def test_every_entry_names_itself_and_its_source(group, name):
    entry = _entries(group)[name]
    assert entry["name"] == name
    assert entry.get("source"), f"conf/{group}/{name}.yaml has no source"
    text = CONF.joinpath(group, f"{name}.yaml").read_text()
    assert text.startswith("#"), f"conf/{group}/{name}.yaml should open with a comment saying what it is"


# Published counts that include parts the architecture formula leaves out, or round loosely.
PARAM_TOLERANCE = {"qwen2.5-32b": 0.01, "mixtral-8x22b": 0.01, "phi3-mini": 0.01,  # rounded to 2-3 digits
                   "kimi-k2": 0.03}  # "1 trillion total parameters": one digit (the architecture counts 1.026T)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count_from_architecture_matches_published(name):
    spec = request_for(f"model={name}").model
    # a VLM's published count includes its vision tower (Llama 4 "109B"/"400B" total, Mistral Small 3.1 "24B")
    counted = memory.param_counts(spec).total / 1e9 + spec.vision_params_b
    assert counted == pytest.approx(spec.num_params_b, rel=PARAM_TOLERANCE.get(name, 0.005))


@pytest.mark.parametrize("name,active_b", [
    pytest.param("mixtral-8x7b", 12.9, id="mixtral-8x7b"),     # Mistral AI: 12.9B active of 46.7B
    pytest.param("qwen3-235b-a22b", 22.0, id="qwen3-235b"),    # Qwen: 22B activated
    pytest.param("deepseek-v3", 37.0, id="deepseek-v3"),       # DeepSeek-V3 report: 37B activated per token
    pytest.param("deepseek-r1", 37.0, id="deepseek-r1"),       # model card: 37B activated
    pytest.param("deepseek-v3.1", 37.0, id="deepseek-v3.1"),   # model card: 37B activated
    pytest.param("qwen3-30b-a3b", 3.3, id="qwen3-30b-a3b"),    # model card: 3.3B activated
    pytest.param("qwen3-coder-480b-a35b", 35.0, id="qwen3-coder"),  # model card: 35B activated
    pytest.param("kimi-k2", 32.0, id="kimi-k2"),               # Kimi K2 report: 32B activated
])
def test_moe_active_parameters(name, active_b):
    spec = request_for(f"model={name}").model
    assert memory.active_params(spec) / 1e9 == pytest.approx(active_b, rel=0.05)


@pytest.mark.parametrize("name", sorted(GPUS))
def test_gpu_formats_follow_the_architecture(name):
    gpu = request_for(f"gpu@hw.gpu={name}").hw.gpu
    if gpu.vendor != "nvidia":
        return
    assert (gpu.dense_tflops_bf16 is not None) == (gpu.compute_capability >= 8.0)
    assert (gpu.dense_tflops_fp8 is not None) == (gpu.compute_capability >= 8.9)
    assert (gpu.dense_tflops_fp4 is not None) == (gpu.architecture is Arch.blackwell)
    assert gpu.memory_gib > 10 and gpu.hbm_bandwidth_gb_s > 200


def test_hopper_numbers_against_the_datasheet():
    h100 = request_for("hw=h100x1").hw.gpu
    # H100 SXM5 datasheet: 3.35 TB/s, 989 dense BF16 TFLOP/s (1,979 with sparsity); CUDA reports 79.18 GiB total
    # (measured, tests/data/calibration/runtime_memory_h100.json).
    assert (h100.hbm_bandwidth_gb_s, round(h100.dense_tflops_bf16), h100.memory_gib) == (3350, 990, 79.18)


@pytest.mark.parametrize("hw", sorted(h for h in HW if h not in ("auto", "cpu")))  # the two that read this machine
def test_every_hw_preset_plans_llama31_8b(hw):
    """Every preset composes and plans a small model (the closest plan counts: rules, memory and rendering ran)."""
    plan = plan_or_closest("model=llama3.1-8b", f"hw={hw}").plan
    assert plan.tensor_parallel * plan.pipeline_parallel * plan.replicas <= request_for(f"hw={hw}").hw.total_gpus


# Which weight formats the rules leave each compute capability (the NVIDIA gates in conf/rules/precision.yaml):
# FP8 from sm_89 (Ada, Hopper, Blackwell), NVFP4 from sm_100 (B200/GB200 10.0, B300 10.3, RTX PRO 6000 12.0),
# INT8 W8A8 up to Hopper only (vLLM has no INT8 GEMM on SM100/SM120).
@pytest.mark.parametrize("hw,formats", [
    pytest.param("a10x1", {"int8", "awq"}, id="a10-sm86"),
    pytest.param("a10gx1", {"int8", "awq"}, id="a10g-sm86"),
    pytest.param("rtx4090x1", {"fp8", "int8", "awq"}, id="rtx4090-sm89"),
    pytest.param("l20x1", {"fp8", "int8", "awq"}, id="l20-sm89"),
    pytest.param("l40x1", {"fp8", "int8", "awq"}, id="l40-sm89"),
    pytest.param("h20x8", {"fp8", "int8", "awq"}, id="h20-sm90"),
    pytest.param("h800x8", {"fp8", "int8", "awq"}, id="h800-sm90"),
    pytest.param("gb200x4", {"fp8", "nvfp4", "awq"}, id="gb200-sm100"),
    pytest.param("b300x8", {"fp8", "nvfp4", "awq"}, id="b300-sm103"),
    pytest.param("rtxpro6000x1", {"fp8", "nvfp4", "awq"}, id="rtx-pro-6000-sm120"),
])
def test_weight_formats_each_compute_capability_runs(hw, formats):
    allowed = set()
    for fmt in ("fp8", "nvfp4", "int8", "awq"):
        req = request_for(f"hw={hw}", "model=llama3.1-8b", f"precision.weights={fmt}")
        if rules.constraints_for(req).choices.get("quantization"):
            allowed.add(fmt)
            assert compiled_or_closest(req).plan.quantization.value == fmt  # and a backend's matrix takes it
    assert allowed == formats


@pytest.mark.parametrize("hw,link_gb_s", [
    pytest.param("h100x8", 340.0, id="h100-nvlink-measured"),
    pytest.param("h800x8", 340.0 * 400 / 900, id="h800-nvlink-400"),
    pytest.param("h20x8", 340.0, id="h20-nvlink-900"),
    pytest.param("b300x8", 340.0 * 1800 / 900, id="b300-nvlink5"),
    pytest.param("rtx4090x2", 20.0, id="rtx4090-pcie-gen4"),
    pytest.param("l40sx2", 20.0, id="l40s-pcie-gen4"),
])
def test_intra_node_bus_follows_the_gpu_link(hw, link_gb_s):
    """The all-reduce bus bandwidth comes from the GPU's own link: no NVLink on PCIe cards, H800's cut NVLink."""
    req = request_for(f"hw={hw}")
    gpu = req.hw.gpu
    bus = perf.intra_node_bus_gb_s(perf.calibration("perf-default"), req.hw, gpu, 2)
    assert bus == pytest.approx(link_gb_s)

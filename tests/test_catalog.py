"""The catalogs themselves: coverage, provenance, and numbers that agree with their own architecture."""

from importlib import resources

import pytest
import yaml

from planner import memory
from planner.specs import Arch

from conftest import request_for

CONF = resources.files("conf")


def _entries(group: str) -> dict:
    return {p.name[:-5]: yaml.safe_load(p.read_text()) for p in CONF.joinpath(group).iterdir()
            if p.name.endswith(".yaml")}


MODELS = {k: v for k, v in _entries("model").items() if k != "hf"}
GPUS = {k: v for k, v in _entries("gpu").items() if k != "cpu"}
HW = _entries("hw")

REQUIRED_MODELS = ["llama3-8b", "llama3-70b", "llama3.1-405b", "llama3.2-1b", "llama3.2-3b", "mistral-7b",
                   "mixtral-8x7b", "mixtral-8x22b", "qwen2.5-7b", "qwen2.5-32b", "qwen2.5-72b", "qwen3-32b",
                   "qwen3-235b-a22b", "deepseek-v3", "gemma2-27b", "phi3-mini"]
REQUIRED_GPUS = ["v100", "t4", "a10g", "l4", "l40s", "a100-40g", "a100-80g", "h100-sxm", "h100-pcie", "h200", "b200"]
REQUIRED_HW = ["h100x1", "h100x2", "h100x4", "h100x8", "h200x1", "h200x4", "h200x8", "a100x1", "a100x4", "a100x8",
               "l40sx1", "l40sx2", "l40sx4", "l4x1", "t4x1", "v100x8", "b200x8", "2xh100x8", "cpu", "auto"]


def test_catalog_coverage():
    assert len(MODELS) >= 15 and set(REQUIRED_MODELS) <= set(MODELS)
    assert set(REQUIRED_GPUS) <= set(GPUS)
    assert set(REQUIRED_HW) <= set(HW)


@pytest.mark.parametrize("group,name", [pytest.param(g, n, id=f"{g}/{n}") for g, entries in
                                        (("model", MODELS), ("gpu", GPUS), ("hw", HW)) for n in entries])
def test_every_entry_names_itself_and_its_source(group, name):
    entry = _entries(group)[name]
    assert entry["name"] == name
    assert entry.get("source"), f"conf/{group}/{name}.yaml has no source"
    text = CONF.joinpath(group, f"{name}.yaml").read_text()
    assert text.startswith("#"), f"conf/{group}/{name}.yaml should open with a comment saying what it is"


# Published counts that include parts the architecture formula leaves out, or round loosely.
PARAM_TOLERANCE = {"qwen2.5-32b": 0.01, "mixtral-8x22b": 0.01, "phi3-mini": 0.01}  # rounded to 2-3 digits


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count_from_architecture_matches_published(name):
    spec = request_for(f"model={name}").model
    counted = memory.param_counts(spec).total / 1e9
    assert counted == pytest.approx(spec.num_params_b, rel=PARAM_TOLERANCE.get(name, 0.005))


@pytest.mark.parametrize("name,active_b", [
    pytest.param("mixtral-8x7b", 12.9, id="mixtral-8x7b"),     # Mistral AI: 12.9B active of 46.7B
    pytest.param("qwen3-235b-a22b", 22.0, id="qwen3-235b"),    # Qwen: 22B activated
    pytest.param("deepseek-v3", 37.0, id="deepseek-v3"),       # DeepSeek-V3 report: 37B activated per token
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

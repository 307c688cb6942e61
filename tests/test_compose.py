"""Composition of every config group through Hydra's compose API, and the errors bad overrides get."""

import json

import pytest

from planner import compose, discover
from planner.errors import InputError
from planner.specs import Arch, DeviceKind, Objective, Weights

with compose.Composer() as _c:
    OPTIONS = {g: _c.options(g) for g in compose.GROUPS}


@pytest.mark.parametrize("group,option", [pytest.param(g, o, id=f"{g}={o}") for g in compose.GROUPS
                                          for o in OPTIONS[g] if (g, o) not in (("model", "hf"),)])
def test_every_option_composes_into_a_request(req, group, option):
    r = req(f"{group}={option}")
    assert getattr(r, group).name == option


def test_defaults_are_llama3_70b_on_h100x4(req):
    r = req()
    assert (r.model.name, r.hw.name, r.hw.gpu.name, r.hw.total_gpus) == ("llama3-70b", "h100x4", "h100-sxm", 4)
    assert r.target.objective is Objective.throughput


def test_hw_composes_its_gpu_and_counts_nodes(req):
    r = req("hw=2xh100x8")
    assert (r.hw.nodes, r.hw.gpus_per_node, r.hw.total_gpus) == (2, 8, 16)
    assert r.hw.gpu.architecture is Arch.hopper


def test_gpu_of_a_preset_can_be_swapped(req):
    r = req("hw=h100x4", "gpu@hw.gpu=h200")
    assert r.hw.gpu.name == "h200" and r.hw.gpus_per_node == 4


def test_overrides_reach_typed_fields(req):
    r = req("target.ttft_ms=123", "workload.input_len=2048", "plan.tensor_parallel=4", "precision=fp8")
    assert r.target.ttft_ms == 123.0 and r.workload.input_len == 2048 and r.pins.tensor_parallel == 4
    assert r.precision.weights is Weights.fp8


@pytest.mark.parametrize("overrides,match", [
    pytest.param(["model=llama-3-70b"], r"model=llama-3-70b: no such model.*Did you mean llama3-70b", id="model-typo"),
    pytest.param(["hw=h100x3"], r"hw=h100x3: no such hw.*Did you mean h100x", id="hw-typo"),
    pytest.param(["target=latncy"], r"Did you mean latency", id="target-typo"),
    pytest.param(["target.ttft_ms=fast"], r"target.ttft_ms='fast' has the wrong type.*Fix:", id="wrong-type"),
    pytest.param(["plan.tensor_parallel=two"], r"plan.tensor_parallel.*wrong type", id="pin-wrong-type"),
    pytest.param(["model.hiden_size=1"], r"'model.hiden_size' is not a field.*Did you mean hidden_size", id="unknown-key"),
    pytest.param(["precision.weights=int3"], r"precision.weights.*wrong type or value", id="bad-enum"),
    pytest.param(["action=deploy"], r"action.*wrong type or value", id="bad-action"),
])
def test_bad_overrides_get_one_paragraph_with_a_fix(overrides, match):
    with compose.Composer() as c, pytest.raises(InputError, match=match) as info:
        c.compose(overrides)
    assert all("Fix:" in p or "Valid:" in p for p in info.value.paragraphs)


def test_all_bad_overrides_are_reported_at_once():
    with compose.Composer() as c, pytest.raises(InputError) as info:
        c.compose(["model=llama-3-70b", "hw=h100x5", "target.ttft_ms=abc"])
    text = str(info.value)
    assert len(info.value.paragraphs) == 3
    assert "model=llama-3-70b" in text and "hw=h100x5" in text and "target.ttft_ms" in text


def test_plan_file_override_is_split_from_pins():
    assert compose.split_plan_file(["plan=plans/x.yaml", "plan.tensor_parallel=2"]) == [
        "plan_file=plans/x.yaml", "plan.tensor_parallel=2"]


def test_hw_cpu_uses_psutil_and_the_measurement(req):
    import psutil

    r = req("hw=cpu", "model=llama3.2-1b")
    assert r.hw.gpu.kind is DeviceKind.cpu
    assert r.hw.gpu.memory_gib == pytest.approx(psutil.virtual_memory().total / 2**30, abs=0.1)
    assert r.hw.gpu.hbm_bandwidth_gb_s == 20.0  # the fixed measurement of conftest


def test_hw_auto_without_gpu_falls_back_to_cpu(req, monkeypatch):
    monkeypatch.setattr(discover, "gpus", lambda: [])
    assert req("hw=auto").hw.gpu.kind is DeviceKind.cpu


def test_hw_auto_maps_nvml_gpus_to_the_catalog(req, monkeypatch):
    monkeypatch.setattr(discover, "gpus", lambda: [("NVIDIA H100 80GB HBM3", 79.65)] * 8)
    r = req("hw=auto")
    assert (r.hw.gpu.name, r.hw.gpus_per_node, r.hw.gpu.memory_gib) == ("h100-sxm", 8, 79.65)


@pytest.mark.parametrize("nvml,entry", [
    pytest.param("NVIDIA H100 80GB HBM3", "h100-sxm", id="h100-sxm"),
    pytest.param("NVIDIA H100 PCIe", "h100-pcie", id="h100-pcie"),
    pytest.param("NVIDIA H200", "h200", id="h200"),
    pytest.param("NVIDIA A100-SXM4-80GB", "a100-80g", id="a100-80g"),
    pytest.param("NVIDIA A100-SXM4-40GB", "a100-40g", id="a100-40g"),
    pytest.param("NVIDIA L40S", "l40s", id="l40s"),
    pytest.param("NVIDIA L4", "l4", id="l4"),
    pytest.param("Tesla T4", "t4", id="t4"),
    pytest.param("Tesla V100-SXM2-32GB", "v100", id="v100"),
    pytest.param("NVIDIA A10G", "a10g", id="a10g"),
    pytest.param("NVIDIA B200", "b200", id="b200"),
    pytest.param("NVIDIA GeForce RTX 4090", "rtx4090", id="rtx4090"),
    pytest.param("NVIDIA GeForce RTX 4090 D", None, id="rtx4090d-unknown"),
    pytest.param("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000", id="rtx-pro-6000"),
    pytest.param("NVIDIA H800 80GB HBM3", "h800", id="h800"),
    pytest.param("NVIDIA H800 PCIe", None, id="h800-pcie-unknown"),
    pytest.param("NVIDIA H20", "h20", id="h20"),
    pytest.param("NVIDIA L20", "l20", id="l20"),
    pytest.param("NVIDIA L40", "l40", id="l40"),
    pytest.param("NVIDIA A10", "a10", id="a10"),
    pytest.param("NVIDIA B300 SXM6 AC", "b300", id="b300"),
    pytest.param("NVIDIA GB200", "gb200", id="gb200"),
    pytest.param("NVIDIA GeForce RTX 3090", None, id="unknown"),
])
def test_nvml_names_map_to_catalog_entries(nvml, entry):
    assert discover.catalog_name(nvml) == entry


def test_unknown_local_gpu_is_a_clear_error(req, monkeypatch):
    monkeypatch.setattr(discover, "gpus", lambda: [("NVIDIA GeForce RTX 3090", 23.6)])
    with pytest.raises(InputError, match="not in the catalog.*Fix:"):
        req("hw=auto")


def _write_hf(tmp_path, **extra):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
           "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192,
           "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": True,
           "torch_dtype": "bfloat16", "_name_or_path": "meta-llama/Llama-3.2-1B", **extra}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_hf_directory_is_imported_offline(tmp_path):
    from planner import catalog

    fields = catalog.model_fields(str(_write_hf(tmp_path)))
    assert fields["num_key_value_heads"] == 8 and fields["tie_word_embeddings"] is True
    assert fields["num_params_b"] == pytest.approx(1.236, abs=0.01)  # Llama-3.2-1B: 1.24B published


def test_hf_quantization_config_is_read(tmp_path):
    from planner import catalog

    d = _write_hf(tmp_path, quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128})
    fields = catalog.model_fields(str(d))
    assert (fields["quantization"], fields["quantization_bits"]) == ("awq", 4)


def test_hf_model_composes_through_the_cli_path(tmp_path, cli):
    d = _write_hf(tmp_path)
    out = cli("model=hf", f"model.path={d}", "hw=h100x1", "format=json", "save=false")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["plan"]["model_path"] == str(d.resolve())
    assert doc["request"]["model"]["hidden_size"] == 2048


def test_hf_without_config_json_names_the_path(tmp_path):
    from planner import catalog

    with pytest.raises(InputError, match=r"model.path=.*no config.json.*Fix:"):
        catalog.model_fields(str(tmp_path))


@pytest.mark.parametrize("overrides,match", [
    pytest.param(["model.num_hidden_layers=0"], r"model.num_hidden_layers=0: must be a positive integer", id="zero-layers"),
    pytest.param(["plan.tensor_parallel=3"], r"must divide the 64 attention heads", id="tp-not-divisor"),
    pytest.param(["plan.tensor_parallel=8"], r"h100x4 has 4 GPUs per node", id="tp-beyond-node"),
    pytest.param(["workload.range_ratio=2"], r"workload.range_ratio=2.0: must be in \[0, 1\)", id="range-ratio"),
    pytest.param(["plan.gpu_memory_utilization=1.5"], r"fraction in \(0, 1\]", id="utilization"),
    pytest.param(["workload.shared_prefix_len=9999"], r"longer than the prompt", id="prefix-longer-than-prompt"),
])
def test_values_out_of_range_are_input_errors(req, overrides, match):
    with pytest.raises(InputError, match=match):
        req(*overrides)


def test_range_errors_are_reported_together(req):
    with pytest.raises(InputError) as info:
        req("model.num_hidden_layers=0", "hw.nodes=0", "target.percentile=0")
    assert len(info.value.paragraphs) == 3

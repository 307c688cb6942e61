"""AMD Instinct (ROCm): the listed AMD presets plan, the capability matrix judges AMD GPUs by architecture (vLLM and
SGLang run, TRT-LLM and TGI are refused with a reason), the artifacts carry the ROCm image, /dev/kfd + /dev/dri and
amd.com/gpu, and the step model uses the xGMI mesh and says its curves are borrowed."""

import dataclasses
import shlex

import pytest
import yaml
from conftest import compiled_or_closest, request_for

from backends import get, unsupported
from planner import perf
from planner.specs import BackendName, Dtype, KvPrecision, Quantization

AMD_PRESETS = ["hw=mi300xx8", "hw=mi325xx8", "hw=mi355xx8"]


@pytest.fixture(scope="module")
def mi300x_8b():
    req = request_for("model=llama3-8b", "hw=mi300xx8")
    return req, compiled_or_closest(req).plan


# --- the CLI: every AMD preset plans, engines without a ROCm build are refused ---------------------------------

@pytest.mark.parametrize("args", [
    pytest.param(["model=llama3-8b", "hw=mi300xx8"], id="llama3-8b-mi300xx8"),
    pytest.param(["model=llama3-70b", "hw=mi300xx8"], id="llama3-70b-mi300xx8"),
    pytest.param(["model=deepseek-v3", "hw=mi300xx8"], id="deepseek-v3-mi300xx8"),
    pytest.param(["model=llama3-70b", "hw=mi325xx8"], id="llama3-70b-mi325xx8"),
    pytest.param(["model=llama3-70b", "hw=mi355xx8"], id="llama3-70b-mi355xx8"),
    pytest.param(["model=llama3-8b", "hw=mi300xx8", "backend=sglang"], id="sglang-mi300xx8"),
])
def test_amd_presets_plan(cli, args):
    out = cli(*args, "save=false", "format=json")
    assert out.returncode in (0, 3), out.stderr  # a plan, or an honest "nothing meets the target"
    assert "Traceback" not in out.stderr and "compute capability" not in out.stderr
    if out.returncode == 0:
        assert out.stdout.lstrip().startswith("{")


@pytest.mark.parametrize("backend,needle", [
    pytest.param("trtllm", "TensorRT-LLM is built on CUDA", id="trtllm"),
    pytest.param("tgi", "-rocm", id="tgi-names-its-rocm-images"),
])
def test_engines_without_a_rendered_rocm_build_are_refused(cli, backend, needle):
    out = cli("model=llama3-8b", "hw=mi300xx8", f"backend={backend}", "save=false")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "does not run on AMD GPUs (mi300x, cdna3, ROCm)" in out.stderr and needle in out.stderr
    assert "Fix:" in out.stderr and "Traceback" not in out.stderr and out.stdout == ""


# --- the capability matrix on AMD -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend,changes,hw,needle", [
    pytest.param(BackendName.vllm, {}, "hw=mi300xx8", None, id="vllm-bf16"),
    pytest.param(BackendName.vllm, {"quantization": Quantization.fp8, "kv_cache_dtype": KvPrecision.fp8},
                 "hw=mi300xx8", None, id="vllm-fp8-weights-and-kv"),
    pytest.param(BackendName.vllm, {"quantization": Quantization.awq}, "hw=mi300xx8", None, id="vllm-awq-triton"),
    pytest.param(BackendName.vllm, {"quantization": Quantization.gptq}, "hw=mi300xx8", None, id="vllm-gptq"),
    pytest.param(BackendName.vllm, {"quantization": Quantization.nvfp4}, "hw=mi355xx8", "MXFP4",
                 id="vllm-no-nvfp4-on-cdna4"),
    pytest.param(BackendName.sglang, {"quantization": Quantization.fp8}, "hw=mi300xx8", None, id="sglang-fp8"),
    pytest.param(BackendName.sglang, {"quantization": Quantization.awq}, "hw=mi300xx8", "not checked on ROCm",
                 id="sglang-awq-unchecked"),
    pytest.param(BackendName.trtllm, {}, "hw=mi300xx8", "no ROCm build", id="trtllm-refused"),
])
def test_matrix_judges_amd_by_architecture(mi300x_8b, backend, changes, hw, needle):
    req = request_for("model=llama3-8b", hw)
    plan = dataclasses.replace(mi300x_8b[1], backend=backend, **changes)
    reason = unsupported(backend, plan, req.hw.gpu)
    if needle is None:
        assert reason is None
    else:
        assert reason and needle in reason and "ROCm" in reason


# --- artifacts --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend,image", [
    pytest.param(BackendName.vllm, "vllm/vllm-openai-rocm:v0.32.0", id="vllm"),
    pytest.param(BackendName.sglang, "lmsysorg/sglang:v0.5.20-rocm720-mi30x", id="sglang"),
])
def test_rocm_artifacts_carry_image_devices_and_amd_resource(mi300x_8b, backend, image):
    req, plan = mi300x_8b
    plan = dataclasses.replace(plan, backend=backend)
    art = get(backend).render(plan, "llama3-8b", gpu=req.hw.gpu)
    words = shlex.split(art.docker)
    assert art.image == image and image in words
    for flag, value in (("--device", "/dev/kfd"), ("--device", "/dev/dri"), ("--group-add", "video")):
        assert (flag, value) in zip(words, words[1:]), f"{flag} {value}"
    assert "--gpus" not in words and "--ipc=host" in words
    c = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == image
    assert c["resources"]["limits"] == {"amd.com/gpu": plan.gpus_per_replica}


@pytest.mark.parametrize("backend", [pytest.param(b, id=b.value) for b in (BackendName.vllm, BackendName.sglang)])
def test_nvidia_artifacts_are_unchanged(h100x4, backend):
    req, plan = h100x4
    plan = dataclasses.replace(plan, backend=backend)
    art = get(backend).render(plan, "llama3-70b", gpu=req.hw.gpu)
    assert art == get(backend).render(plan, "llama3-70b"), "gpu=None means an NVIDIA GPU"
    assert "--gpus" in art.docker and "/dev/kfd" not in art.docker and "rocm" not in art.image
    c = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": plan.gpus_per_replica}


def test_rendered_plan_document_uses_rocm(mi300x_8b):
    from planner import render

    req, plan = mi300x_8b
    launch = render.rendered(compiled_or_closest(req), req).launch
    assert "vllm/vllm-openai-rocm" in launch.docker and "/dev/kfd" in launch.docker
    assert "amd.com/gpu" in launch.files["k8s/deployment.yaml"]


# --- performance model ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw,borrowed", [
    pytest.param("hw=mi300xx8", True, id="mi300x-borrows-nvidia-curves"),
    pytest.param("hw=mi355xx8", True, id="mi355x-borrows-nvidia-curves"),
    pytest.param("hw=h100x4", False, id="h100-measured"),
    pytest.param("hw=a100x4", False, id="a100-same-vendor-default"),
])
def test_plan_notes_borrowed_curves(hw, borrowed):
    req = request_for("model=llama3-8b", hw)
    notes = compiled_or_closest(req).notes
    assert any("borrowed from NVIDIA" in n and req.hw.gpu.name in n for n in notes) is borrowed


def test_xgmi_all_reduce_uses_one_link_per_peer():
    """A full mesh: TP n uses n-1 xGMI links per GPU (48 GB/s usable each), so TP 8 has 7x the bus of TP 2."""
    req = request_for("model=llama3-70b", "hw=mi300xx8")
    link = {tp: perf.StepModel(req.model, req.hw.gpu, req.hw, tp, 1, Dtype.bf16, Quantization.none,
                               KvPrecision.auto)._consts["link"] for tp in (2, 4, 8)}
    assert link == {2: 48e9, 4: 3 * 48e9, 8: 7 * 48e9}


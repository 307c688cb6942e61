"""The committed example plans in plans/ are exactly what the planner makes today.

After an intended change: `pytest tests/test_golden.py --update-golden` rewrites them; review the diff.
"""


import pytest

from planner import app, document, render

from conftest import compiled_or_closest, ROOT, request_for

EXAMPLES = [
    ("model=llama3-70b", "hw=h100x4"),
    ("model=llama3-70b", "hw=h100x4", "target=latency"),
    ("model=llama3-70b", "hw=h100x4", "target=throughput"),
    ("model=llama3-70b", "hw=v100x8"),
    ("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16", "target=throughput"),
    ("model=deepseek-v3", "hw=h200x8"),
    ("model=qwen3-235b-a22b", "hw=h100x8"),
    ("model=qwen3-235b-a22b", "hw=h200x8", "target=throughput"),
    ("model=mixtral-8x7b", "hw=a100x4"),
    ("model=llama3-8b", "hw=l4x1", "target=latency"),
    ("model=llama3.1-70b", "hw=h200x4", "workload=long-context", "precision=fp8", "target=best-effort"),
]


# action=render examples: the plan document with its launch block, and the artifact files beside it.
RENDERED = [
    ("model=llama3-70b", "hw=h100x4", "backend=vllm"),
    ("model=llama3-70b", "hw=h100x4", "backend=trtllm"),
    ("model=llama3-70b", "hw=h100x4", "backend=tgi"),
    ("model=llama3-70b", "hw=h100x4", "backend=sglang"),
    ("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16", "target=throughput", "backend=vllm"),
    # MoE layouts (issue 18): attention data parallel + expert parallel as each engine is told it
    ("model=qwen3-235b-a22b", "hw=h200x8", "target=throughput", "backend=vllm"),
    ("model=qwen3-235b-a22b", "hw=h200x8", "target=throughput", "backend=sglang"),
    ("model=qwen3-235b-a22b", "hw=h200x8", "target=throughput", "backend=trtllm"),
]


def _plan(overrides, rendered=False):
    req = request_for(*overrides)
    compiled = compiled_or_closest(req)
    return req, render.rendered(compiled, req) if rendered else compiled


def _doc(overrides, rendered=False):
    return document.build(*_plan(overrides, rendered))


def _path(overrides):
    return ROOT / app.plan_path(request_for(*overrides), None, list(overrides))


@pytest.mark.parametrize("overrides", [pytest.param(o, id=" ".join(o)) for o in EXAMPLES])
def test_golden_plan(overrides, request):
    doc = _doc(overrides)
    path = _path(overrides)
    text = document.dumps(doc)
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} missing: run pytest {__file__} --update-golden"
    assert path.read_text() == text, f"{path.name} is stale: run pytest tests/test_golden.py --update-golden"


@pytest.mark.parametrize("overrides", [pytest.param(o, id=" ".join(o)) for o in RENDERED])
def test_golden_rendered_plan(overrides, request, tmp_path):
    req, compiled = _plan(overrides, rendered=True)
    doc = document.build(req, compiled)
    path = _path(overrides)
    outdir = render.artifact_dir(path)
    if request.config.getoption("--update-golden"):
        path.write_text(document.dumps(doc))
        render.write(compiled.launch, outdir)
    assert path.read_text() == document.dumps(doc), f"{path.name} is stale: --update-golden"
    fresh = tmp_path / "out"
    written = render.write(compiled.launch, fresh)
    for p in written:
        committed = outdir / p.relative_to(fresh)
        assert committed.is_file() and committed.read_text() == p.read_text(), f"{committed} is stale: --update-golden"


def test_no_stale_example_files():
    expected = {_path(o).name for o in EXAMPLES + RENDERED}
    present = {p.name for p in (ROOT / "plans").glob("*.yaml")}
    assert present <= expected, f"plans/ holds files no example makes: {sorted(present - expected)}"

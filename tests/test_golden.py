"""The committed example plans in plans/ are exactly what the planner makes today.

After an intended change: `pytest tests/test_golden.py --update-golden` rewrites them; review the diff.
"""

from pathlib import Path

import pytest

from planner import app, document, search

from conftest import ROOT, request_for

EXAMPLES = [
    ("model=llama3-70b", "hw=h100x4"),
    ("model=llama3-70b", "hw=h100x4", "target=latency"),
    ("model=llama3-70b", "hw=h100x4", "target=throughput"),
    ("model=llama3-70b", "hw=v100x8"),
    ("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16"),
    ("model=deepseek-v3", "hw=h200x8"),
    ("model=qwen3-235b-a22b", "hw=h100x8"),
    ("model=mixtral-8x7b", "hw=a100x4"),
    ("model=llama3-8b", "hw=l4x1", "target=latency"),
    ("model=llama3.1-70b", "hw=h200x4", "workload=long-context", "precision=fp8"),
]


def _doc(overrides):
    req = request_for(*overrides)
    return document.build(req, search.compile_plan(req))


@pytest.mark.parametrize("overrides", [pytest.param(o, id=" ".join(o)) for o in EXAMPLES])
def test_golden_plan(overrides, request):
    doc = _doc(overrides)
    path = ROOT / app.plan_path(doc, None)
    text = document.dumps(doc)
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} missing: run pytest {__file__} --update-golden"
    assert path.read_text() == text, f"{path.name} is stale: run pytest tests/test_golden.py --update-golden"


def test_no_stale_example_files():
    expected = {app.plan_path(_doc(o), None).name for o in EXAMPLES}
    present = {p.name for p in (ROOT / "plans").glob("*.yaml")}
    assert present <= expected, f"plans/ holds files no example makes: {sorted(present - expected)}"

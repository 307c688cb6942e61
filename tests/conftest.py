"""Shared fixtures: compose a Request in-process (Hydra compose API) and run the real CLI in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner import compose, discover
from planner.specs import Request

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite plans/ golden files from the planner")


@pytest.fixture(autouse=True)
def _fixed_cpu(monkeypatch):
    """hw=cpu measures bandwidth with numpy; tests get fixed numbers so plans are reproducible."""
    monkeypatch.setattr(discover, "measured_cpu", lambda cores: (20.0, 0.5, 0.5, 10.5))


def request_for(*overrides: str) -> Request:
    """Compose like the CLI does (hw discovery included) and return the frozen Request."""
    with compose.Composer() as c:
        cfg, _ = compose.resolve(c, list(overrides))
        return compose.to_request(cfg)


@pytest.fixture
def req():
    return request_for


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    """The real entry point, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "planner", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def compiled_or_closest(req: Request):
    """The compiled plan, or, when no candidate meets the target's SLOs, the closest one the search found (it obeys
    every rule and fits memory; only the latency/throughput targets are missed). For tests of rules, sizing and
    rendering, which must not depend on the performance model's verdict."""
    from planner import search
    from planner.errors import NoFeasiblePlan

    try:
        return search.compile_plan(req)
    except NoFeasiblePlan as exc:
        if exc.closest is None:
            raise
        return exc.closest


def plan_or_closest(*overrides: str):
    return compiled_or_closest(request_for(*overrides))


# --- plans the backend tests render (one node; two nodes) ---------------------------------------------------------

@pytest.fixture(scope="module")
def h100x4():
    """llama3-70b on h100x4: TP 4, one node."""
    req = request_for("model=llama3-70b", "hw=h100x4")
    return req, compiled_or_closest(req).plan


@pytest.fixture(scope="module")
def two_nodes():
    """llama3.1-405b on 2 x 8 H100 in bf16: TP 8 x PP 2 over 2 nodes."""
    req = request_for("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16")
    return req, compiled_or_closest(req).plan


def on(plan, backend, **changes):
    """`plan` served by `backend` (and any other fields changed). DeepSpeed-MII takes no memory fraction (it keeps
    its default reserve, backends/mii.py), so a vLLM plan's fraction becomes None (the engine's default) there."""
    import dataclasses

    from planner.specs import BackendName

    if backend is BackendName.mii:
        changes.setdefault("gpu_memory_utilization", None)
    return dataclasses.replace(plan, backend=backend, **changes)


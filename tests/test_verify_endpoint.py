"""`action=verify endpoint=URL plan=FILE` through the CLI against tests/stub_server.py: a server that cannot be
reached, refuses the API key or fails every request gives exit 4 and no verdict; an interrupted or failed run
never leaves an earlier run's report behind (issue 22, items 2 and 8)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from stub_server import StubConfig, running  # noqa: E402

from tests.conftest import run_cli  # noqa: E402


SERVED = ("planner/tiny-llama",)  # the plan's model_path (conf/model/tiny-llama.yaml hf_repo): what verify sends


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "tiny.yaml"
    run = run_cli("model=tiny-llama", "hw=cpu", "target=best-effort", f"out={path}", "format=json", timeout=120)
    assert run.returncode == 0, run.stderr
    return path


def _verify(plan_file, endpoint, *extra, env=None):
    return run_cli(f"plan={plan_file}", "action=verify", f"endpoint={endpoint}", "num_prompts=4", *extra, env=env,
                   timeout=120)


def _stale_results(outdir: Path) -> None:
    """What a previous, passing run left."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "report.json").write_text(json.dumps({"passed": True, "complete": True}))
    (outdir / "latency_cdf.png").write_bytes(b"old")


@pytest.mark.parametrize("config, extra, env, says", [
    pytest.param(None, (), None, "cannot reach the server", id="nothing-listens-cannot-reach"),
    pytest.param(StubConfig(api_key="sk-stub", served_model_names=SERVED), (), None, "401.*api_key_env=VLLM_API_KEY", id="key-required-none-sent"),
    pytest.param(StubConfig(api_key="sk-stub", served_model_names=SERVED), ("api_key_env=STUB_KEY",), {"STUB_KEY": "wrong"},
                 r"401.*refused the one in \$STUB_KEY", id="wrong-key"),
    pytest.param(StubConfig(fail_status=500, served_model_names=SERVED), (), None, "every one of the 4 requests failed.*HTTP 500",
                 id="every-request-failed-no-verdict"),
])
def test_no_measurement_is_exit_4_not_a_verdict(plan_file, config, extra, env, says):
    import re

    outdir = plan_file.with_suffix("")
    _stale_results(outdir)
    if config is None:
        run = _verify(plan_file, "http://127.0.0.1:9", *extra, env=env)
    else:
        with running(config) as (url, _):
            run = _verify(plan_file, url, *extra, env=env)
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
    assert re.search(says, run.stderr, re.S) and "Fix:" in run.stderr, run.stderr
    assert "TARGET MISSED" not in run.stdout and "pass" not in run.stdout
    assert json.loads((outdir / "report.json").read_text())["complete"] is False, "the old passing report is gone"
    assert not (outdir / "latency_cdf.png").exists()
    assert "sk-stub" not in run.stdout + run.stderr


def test_named_key_is_sent_as_a_bearer_token_and_verifies(plan_file):
    with running(StubConfig(api_key="sk-stub", served_model_names=SERVED)) as (url, stub):
        run = _verify(plan_file, url, "api_key_env=STUB_KEY", env={"STUB_KEY": "sk-stub"})
    assert run.returncode in (0, 5), run.stderr[-2000:]
    assert stub.stats.completions >= 4 and set(stub.stats.authorization) == {"Bearer sk-stub"}
    report = json.loads((plan_file.with_suffix("") / "report.json").read_text())
    assert report["complete"] is True and report["summary"]["completed"] == 4
    assert "sk-stub" not in json.dumps(report) + run.stdout + run.stderr

"""The accuracy gate's whole loop on vLLM's CPU build: a plan with an FP8 KV cache (the CPU attention backend takes
fp8; the planner keeps CPU plans unquantized by default, so the test lifts rule precision.cpu-half-only) is verified
with quality=true: the unquantized twin is served and scored first, then the plan itself, and report.json's quality
block carries lm-eval's real scores of both and the verdict against target.max_accuracy_drop."""

import json
import subprocess
import sys

import pytest
import yaml
from test_e2e_cpu import _none_left

pytest.importorskip("vllm")
pytest.importorskip("lm_eval")
pytestmark = pytest.mark.vllm


def test_a_quantized_plan_is_scored_against_its_unquantized_twin(tmp_path):
    run = subprocess.run([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "precision=fp8-kv",
                          "rules.disable=[precision.cpu-half-only]", "target=best-effort", "action=verify",
                          "quality=true", "num_prompts=4", "workload.output_len=16", "workload.input_len=64",
                          "out=plans/tiny-fp8kv.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert run.returncode in (0, 5), run.stdout[-3000:] + run.stderr[-3000:]
    plans = tmp_path / "plans"
    report = json.loads((plans / "tiny-fp8kv" / "report.json").read_text())
    q = report["quality"]
    acc, base = q["accuracy"], q["baseline"]
    assert base is not None, "a plan with an FP8 KV cache is judged against its unquantized twin"
    assert (acc["task"], acc["metric"], acc["samples"]) == ("planner_plumbing", "acc", 60)
    assert (base["task"], base["metric"], base["samples"]) == ("planner_plumbing", "acc", 60)
    # The tiny model's random weights make the one-word answer the likeliest (docs/quality.md): both score 1.0.
    assert base["value"] == 1.0 and acc["value"] == 1.0, q
    assert q["drop"] == 0.0 and q["passed"] is True and q["max_accuracy_drop"] == 0.01
    assert report["passed"] is (run.returncode == 0)  # the load test's verdict is the exit code's other half
    stored = json.loads((plans / "tiny-fp8kv-baseline" / "quality.json").read_text())
    assert stored == base, "the baseline in the report is the twin's quality.json"
    assert acc["endpoint"].startswith("http://127.0.0.1:") and "--tasks" in acc["argv"]
    twin, plan = (yaml.safe_load((plans / f).read_text()) for f in ("tiny-fp8kv-baseline.yaml", "tiny-fp8kv.yaml"))
    assert _flag(twin, "--kv-cache-dtype") == _flag(twin, "--dtype"), "the twin's KV cache is in the compute dtype"
    assert _flag(plan, "--kv-cache-dtype") == "fp8"
    assert twin["plan"]["kv_cache_dtype"] == twin["plan"]["dtype"] and plan["plan"]["kv_cache_dtype"] == "fp8"
    _none_left(tmp_path)


def _flag(doc: dict, name: str) -> str:
    argv = doc["launch"]["argv"]
    return argv[argv.index(name) + 1]

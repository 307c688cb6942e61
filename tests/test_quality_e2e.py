"""The accuracy gate's whole loop on vLLM's CPU build: `precision=int8` on the tiny model serves its INT8 W8A8
checkpoint (compressed-tensors, planner/tinyquant.py; the CPU build loads it but quantizes nothing at load) and is
verified with quality=true: the unquantized twin (the tiny model itself) is served and scored first, then the
quantized plan, and report.json's quality block carries lm-eval's real scores of both and the verdict against
target.max_accuracy_drop."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_e2e_cpu import _none_left

pytest.importorskip("vllm")
pytest.importorskip("lm_eval")
pytestmark = pytest.mark.vllm


def test_a_quantized_plan_is_scored_against_its_unquantized_twin(tmp_path):
    run = subprocess.run([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "precision=int8",
                          "target=best-effort", "action=verify", "quality=true", "num_prompts=4",
                          "workload.output_len=16", "workload.input_len=64", "out=plans/tiny-int8.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert run.returncode in (0, 5), run.stdout[-3000:] + run.stderr[-3000:]
    plans = tmp_path / "plans"
    report = json.loads((plans / "tiny-int8" / "report.json").read_text())
    q = report["quality"]
    acc, base = q["accuracy"], q["baseline"]
    assert base is not None, "a plan with INT8 weights is judged against its unquantized twin"
    assert (acc["task"], acc["metric"], acc["samples"]) == ("planner_plumbing", "acc", 60)
    assert (base["task"], base["metric"], base["samples"]) == ("planner_plumbing", "acc", 60)
    # The tiny model's random weights make the one-word answer the likeliest (docs/quality.md): both score 1.0.
    assert base["value"] == 1.0 and acc["value"] == 1.0, q
    assert q["drop"] == 0.0 and q["passed"] is True and q["max_accuracy_drop"] == 0.01
    assert report["passed"] is (run.returncode == 0)  # the load test's verdict is the exit code's other half
    stored = json.loads((plans / "tiny-int8-baseline" / "quality.json").read_text())
    assert stored == base, "the baseline in the report is the twin's quality.json"
    assert acc["endpoint"].startswith("http://127.0.0.1:") and "--tasks" in acc["argv"]
    twin, plan = (yaml.safe_load((plans / f).read_text()) for f in ("tiny-int8-baseline.yaml", "tiny-int8.yaml"))
    assert (plan["plan"]["quantization"], plan["plan"]["quantization_method"]) == ("int8", "compressed-tensors")
    assert (twin["plan"]["quantization"], twin["plan"]["quantization_method"]) == ("none", None)
    served = _config(plan)["quantization_config"]
    assert served["format"] == "int-quantized", "the quantized plan served the INT8 W8A8 checkpoint"
    assert "quantization_config" not in _config(twin), "the twin served the unquantized tiny model"
    assert "--quantization" not in plan["launch"]["argv"], "vLLM reads the format from the checkpoint"
    _none_left(tmp_path)


def _config(doc: dict) -> dict:
    """The config.json of the checkpoint the plan's launch served (the positional MODEL of `vllm serve`)."""
    argv = doc["launch"]["argv"]
    model = argv[argv.index("serve") + 1]
    return json.loads((Path(model) / "config.json").read_text())

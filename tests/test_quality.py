"""The accuracy gate (planner/quality.py): the shipped offline task, lm-eval's command and results file, the verdict
against a baseline, stored baselines, and a real lm-eval run against an endpoint that cannot answer loglikelihood
requests (the gate fails, with lm-eval's own error). The whole loop on vLLM's CPU build: tests/test_quality_e2e.py."""

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from quality_task.make_plumbing import text as plumbing_text
from stub_server import running

from planner import quality
from planner.errors import InputError

DATA = Path(__file__).parent / "data" / "quality"
RESULTS = DATA / "results_planner_plumbing.json"


def _acc(value: float, task: str = "planner_plumbing", metric: str = "acc") -> quality.Accuracy:
    return quality.Accuracy(task=task, metric=metric, value=value, stderr=0.01, samples=60, model="m",
                            endpoint="http://127.0.0.1:1", lm_eval_version="0.4.13", argv=("lm_eval",))


def _run(tmp_path, **kw) -> quality.QualityRun:
    return quality.QualityRun(base_url="http://127.0.0.1:8000", model="served-name", tokenizer="/models/tok",
                              outdir=tmp_path, **kw)


def test_the_shipped_task_is_what_its_generator_writes():
    shipped = (Path(quality.__file__).parent / "data" / "quality" / quality.DATA).read_text()
    assert shipped == plumbing_text()
    items = [json.loads(line) for line in shipped.splitlines()]
    assert len(items) == 60 and {i["gold"] for i in items} == {0, 1, 2, 3}, "the answer's position cycles"
    assert all(len(i["choices"]) == 4 and len(i["choices"][i["gold"]].split()) == 1 for i in items)


def test_the_rendered_task_names_the_shipped_data_by_absolute_path(tmp_path):
    import yaml

    name, include, offline = quality.task_source(None, tmp_path)
    doc = yaml.safe_load((include / f"{name}.yaml").read_text())
    data = Path(doc["dataset_kwargs"]["data_files"]["test"])
    assert (name, offline, doc["task"], doc["dataset_path"]) == ("planner_plumbing", True, name, "json")
    assert data.is_absolute() and data.is_file() and doc["output_type"] == "multiple_choice"


def test_a_task_file_and_a_task_name(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("task: my_task\ndataset_path: json\n")
    assert quality.task_source(str(own), tmp_path) == ("my_task", tmp_path, False)
    assert quality.task_source("arc_easy", tmp_path) == ("arc_easy", None, False)
    with pytest.raises(InputError, match="quality_task=.*no such task file"):
        quality.task_source(str(tmp_path / "missing.yaml"), tmp_path)
    (tmp_path / "nameless.yaml").write_text("dataset_path: json\n")
    with pytest.raises(InputError, match="no `task:` name"):
        quality.task_source(str(tmp_path / "nameless.yaml"), tmp_path)


def test_the_lm_eval_command_uses_local_completions_with_a_local_tokenizer(tmp_path):
    argv = quality.lm_eval_argv(_run(tmp_path, limit=10), "t", tmp_path / "inc", tmp_path / "out")
    assert argv[:4] == (sys.executable, "-m", "lm_eval", "run")
    pairs = dict(zip(argv, argv[1:]))
    assert pairs["--model"] == "local-completions" and pairs["--tasks"] == "t" and pairs["--limit"] == "10"
    args = dict(kv.split("=", 1) for kv in pairs["--model_args"].split(","))
    assert args == {"base_url": "http://127.0.0.1:8000/v1/completions", "model": "served-name",
                    "tokenizer": "/models/tok", "tokenizer_backend": "huggingface", "tokenized_requests": "False",
                    "num_concurrent": "4", "max_retries": "1"}


def test_the_api_key_travels_in_the_environment_never_the_argv(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-quality-secret")
    run = _run(tmp_path, api_key_env="MY_KEY")
    assert "sk-quality-secret" not in " ".join(quality.lm_eval_argv(run, "t", None, tmp_path))
    env = quality._env(run, offline=True)
    assert env["OPENAI_API_KEY"] == "sk-quality-secret" and env["HF_DATASETS_OFFLINE"] == "1"


def test_lm_evals_results_file_is_read_as_accuracy(tmp_path):
    doc = json.loads(RESULTS.read_text())
    acc = quality.parse_results(doc, "planner_plumbing", _run(tmp_path), ("x",))
    assert (acc.task, acc.metric, acc.value, acc.stderr, acc.samples) == ("planner_plumbing", "acc", 1.0, 0.0, 60)
    with pytest.raises(quality.QualityFailed, match="no task 'other'"):
        quality.parse_results(doc, "other", _run(tmp_path), ("x",))


def test_a_generative_tasks_metric_is_found(tmp_path):
    doc = {"results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.75,
                                 "exact_match_stderr,strict-match": 0.012}},
           "n-samples": {"gsm8k": {"original": 1319, "effective": 1319}}}
    acc = quality.parse_results(doc, "gsm8k", _run(tmp_path), ())
    assert (acc.metric, acc.value, acc.stderr, acc.samples) == ("exact_match", 0.75, 0.012, 1319)


@pytest.mark.parametrize("value, baseline, max_drop, passed, drop", [
    pytest.param(0.70, 0.705, 0.01, True, 0.005, id="small-loss-within"),
    pytest.param(0.69, 0.705, 0.01, False, 0.015, id="loss-beyond"),
    pytest.param(0.71, 0.70, 0.0, True, -0.01, id="gain-passes-a-zero-tolerance"),
    pytest.param(0.60, 0.60, 0.0, True, 0.0, id="equal-passes-a-zero-tolerance"),
])
def test_the_verdict_against_a_baseline(value, baseline, max_drop, passed, drop):
    verdict = quality.judge(_acc(value), _acc(baseline), max_drop)
    assert verdict.passed is passed and verdict.drop == pytest.approx(drop)
    assert ("within" if passed else "more than") in verdict.why and str(max_drop) in verdict.why


def test_no_baseline_means_this_run_is_the_baseline():
    verdict = quality.judge(_acc(0.5), None, 0.01)
    assert verdict.passed and verdict.drop is None and "baseline" in verdict.why


def test_baselines_of_another_task_are_refused():
    with pytest.raises(InputError, match="cannot be compared"):
        quality.judge(_acc(0.5), _acc(0.5, task="arc_easy"), 0.01)


def test_a_stored_baseline_round_trips_from_quality_json_and_report_json(tmp_path):
    acc = _acc(0.8125)
    path = quality.save(acc, tmp_path)
    assert quality.load_baseline(str(path)) == acc
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"quality": quality.as_report(quality.judge(acc, None, 0.01))}))
    assert quality.load_baseline(str(report)) == acc
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="quality_baseline=.*cannot read it as JSON"):
        quality.load_baseline(str(tmp_path / "bad.json"))


@pytest.mark.parametrize("overrides, expected", [
    pytest.param(["model=llama3-8b", "hw=h100x1", "precision=fp8", "plan.quantization=fp8"],
                 ["model=llama3-8b", "hw=h100x1"], id="precision-and-pins-dropped"),
    pytest.param(["model=llama3-8b", "+precision.kv_cache=fp8", "plan.kv_cache_dtype=fp8", "target=latency"],
                 ["model=llama3-8b", "target=latency"], id="kv-format-dropped"),
])
def test_the_baselines_overrides_unquantize_the_plan(overrides, expected):
    assert quality.baseline_overrides(overrides) == expected + ["plan.quantization=none", "plan.kv_cache_dtype=auto"]


def test_the_tiny_models_baseline_is_its_unquantized_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setattr("planner.tinymodel.ensure_tiny_model", lambda *a, **k: tmp_path / "tiny")
    got = quality.baseline_overrides(["model=tiny-llama", "model.path=/cache/tiny-ct-int8", "precision=int8"])
    assert got == ["model=tiny-llama", f"model.path={tmp_path / 'tiny'}", "plan.quantization=none",
                   "plan.kv_cache_dtype=auto"]


@pytest.mark.parametrize("changes, expected", [
    pytest.param({}, False, id="bf16"),
    pytest.param({"quantization": "fp8"}, True, id="fp8-weights"),
    pytest.param({"kv_cache_dtype": "fp8"}, True, id="fp8-kv"),
])
def test_which_plans_need_a_baseline(changes, expected, h100x4):
    from planner.specs import KvPrecision, Quantization

    _, plan = h100x4
    typed = {"quantization": Quantization, "kv_cache_dtype": KvPrecision}
    fields = {"quantization": Quantization.none, "kv_cache_dtype": KvPrecision.bf16}
    fields.update({k: typed[k](v) for k, v in changes.items()})
    plan = dataclasses.replace(plan, **fields)
    assert quality.quantizes(plan) is expected


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """The tiny model's tokenizer files only (lm-eval loads a tokenizer; the stub serves no weights)."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("transformers")
    from planner.tinymodel import ensure_tiny_model

    src, dst = ensure_tiny_model(), tmp_path_factory.mktemp("tok")
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("config.json", "special_tokens_map.json"):
            shutil.copy(f, dst / f.name)
    return dst


def test_a_server_without_prompt_logprobs_fails_the_gate(tmp_path, tiny_tokenizer):
    """Real lm-eval against an OpenAI server that answers completions but not `echo` + `logprobs` (the stub, like
    engines that do not return prompt logprobs): lm-eval cannot score it, and the gate fails with its reason."""
    gate = quality.Gate(task=None, baseline=_acc(1.0), max_drop=0.01)
    with running() as (base, stub):
        block = quality.score(gate, quality.QualityRun(base_url=base, model="stub", tokenizer=str(tiny_tokenizer),
                                                       outdir=tmp_path, limit=4, num_concurrent=1))
    assert block["passed"] is False and "lm-eval exited" in block["why"], block
    assert stub.stats.completions >= 1 and stub.stats.payloads[0]["echo"] is True, "lm-eval asked the server"
    assert stub.stats.payloads[0]["logprobs"] == 1 and stub.stats.payloads[0]["max_tokens"] == 1
    assert (tmp_path / "quality" / "lm-eval.log").is_file() and not (tmp_path / "quality.json").exists()


def test_missing_lm_eval_is_a_clear_input_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(InputError, match=r"pip install -e '\.\[quality\]'"):
        quality.require_lm_eval()


def test_no_secret_in_the_report_block(tmp_path, monkeypatch):
    monkeypatch.setenv("K", "sk-never-written")
    run = _run(tmp_path, api_key_env="K")
    acc = dataclasses.replace(_acc(0.9), argv=quality.lm_eval_argv(run, "t", None, tmp_path))
    assert "sk-never-written" not in json.dumps(quality.as_report(quality.judge(acc, _acc(0.9), 0.01)))
    assert os.environ["K"] == "sk-never-written"

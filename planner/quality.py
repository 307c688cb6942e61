"""The accuracy gate ("quantize late"): lm-evaluation-harness scores a served plan on a task through its OpenAI
completions endpoint, and a quantized plan passes when it loses at most `target.max_accuracy_drop` against the
unquantized baseline. The verdict is report.json's `quality`; each run also leaves quality.json (a stored baseline).

    acc = evaluate(QualityRun(base_url, model, tokenizer, outdir))     # runs `python -m lm_eval run ...`
    verdict = judge(acc, baseline, max_drop=req.target.max_accuracy_drop)

lm-eval's `local-completions` model (lm_eval/models/openai_completions.py LocalCompletionsAPI, lm-eval 0.4.13)
sends loglikelihood requests as `echo: true, logprobs: 1, max_tokens: 1` to base_url (the full /v1/completions URL).
Its arguments (lm_eval/models/api_models.py TemplateAPI.__init__, 0.4.13): `model` (the served name, sent in each
payload), `tokenizer` (a HF tokenizer to count context tokens), `tokenizer_backend` ("huggingface" here: the
default "auto" probes the server's /tokenizer_info), `tokenized_requests` (False: prompts go as text, which every
OpenAI-compatible server takes), `num_concurrent` (requests in flight), `max_retries`, `max_length`. The API key
is read from OPENAI_API_KEY (LocalCompletionsAPI.api_key), so it never reaches an argv.

The shipped task (planner/data/quality/plumbing.jsonl, task `planner_plumbing`) runs offline (HF_DATASETS_OFFLINE=1,
the `json` builder of `datasets` on the local file). It checks the loglikelihood path, not knowledge: see
docs/quality.md for why a random-weight model scores 1.0 on it and what lowers that.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

from planner.errors import InputError, PlannerError

log = logging.getLogger(__name__)

DEFAULT_TASK = "planner_plumbing"
DATA = "plumbing.jsonl"
TIMEOUT_S = 1800.0  # one lm-eval run; the shipped task takes seconds
TAIL_LINES = 15  # lm-eval log lines shown when it fails
# the metrics a task may report, most preferred first (lm-eval keys them "<metric>,<filter>")
METRICS = ("acc", "exact_match", "acc_norm", "f1")

_TASK_YAML = """\
# Rendered by the planner (planner/quality.py): the shipped accuracy-gate task on its local JSONL, no download.
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
"""


class QualityFailed(PlannerError):
    """lm-eval could not score the endpoint (it exited non-zero, timed out, or wrote no result)."""

    exit_code = 5

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        super().__init__(message + (f"\nlm-eval's last lines:\n{log_tail}" if log_tail else ""))


@dataclass(frozen=True)
class QualityRun:
    """One lm-eval run against a served model: where it is, what it is called, and where to write."""

    base_url: str  # the server's root (http://127.0.0.1:8000)
    model: str  # the served model name the payloads carry
    tokenizer: str  # a local directory or HF repo id of the model's tokenizer
    outdir: Path  # the plan's artifact folder: lm-eval's output goes under quality/
    task: Optional[str] = None  # None: the shipped task; a YAML file; or an lm-eval task name (downloads its data)
    api_key_env: Optional[str] = None  # the variable holding the server's API key (sent as OPENAI_API_KEY)
    num_concurrent: int = 4
    limit: Optional[int] = None  # documents per task (lm-eval --limit); None: all


@dataclass(frozen=True)
class Accuracy:
    """What one lm-eval run measured (quality.json; `baseline` of report.json's quality)."""

    task: str
    metric: str
    value: float
    stderr: Optional[float]
    samples: int  # documents scored
    model: str
    endpoint: str
    lm_eval_version: str
    argv: tuple[str, ...]  # the lm-eval command that produced it (no secret: the key travels in the environment)


@dataclass(frozen=True)
class QualityVerdict:
    """The gate: the plan's accuracy against the baseline's, within the target's tolerance."""

    accuracy: Accuracy
    baseline: Optional[Accuracy]  # None: this plan does not quantize, so it is the baseline
    max_accuracy_drop: float
    drop: Optional[float]  # baseline - accuracy (positive: the plan lost accuracy)
    passed: bool
    why: str


@dataclass(frozen=True)
class Gate:
    """What the gate compares against: the task, the baseline (None: this plan is the baseline), the tolerance."""

    task: Optional[str]
    baseline: Optional[Accuracy]
    max_drop: float


def quantizes(plan) -> bool:
    """The plan serves quantized weights or an FP8 KV cache: its accuracy needs a baseline to be judged."""
    from planner.specs import KvPrecision, Quantization

    return plan.quantization is not Quantization.none or plan.kv_cache_dtype is KvPrecision.fp8


def baseline_overrides(overrides: list[str]) -> list[str]:
    """The overrides of the plan's unquantized twin: precision and format pins dropped, weights and KV cache in the
    compute dtype; the tiny model's generated checkpoint is its unquantized one (planner/tinymodel.py)."""
    dropped = ("precision=", "precision.", "plan.quantization=", "plan.kv_cache_dtype=")
    kept = [o for o in overrides if not o.lstrip("+").startswith(dropped)]
    if "model=tiny-llama" in kept and any(o.startswith("model.path=") for o in kept):
        from planner.tinymodel import ensure_tiny_model

        # the quantized tiny checkpoint's path and layout (app.py _tiny_checkpoint) give way to the unquantized one
        tiny_quant = ("model.path=", "model.quant.", "model.quantization=", "model.quantization_bits=",
                      "model.fp8_scaling=")
        kept = [o for o in kept if not o.startswith(tiny_quant)] + [f"model.path={ensure_tiny_model()}"]
    return kept + ["plan.quantization=none", "plan.kv_cache_dtype=auto"]


def require_lm_eval() -> None:
    """InputError before any server starts when lm-eval is not installed."""
    from importlib.util import find_spec

    if find_spec("lm_eval") is None:
        raise InputError("quality=true: lm-evaluation-harness is not installed, so the accuracy gate cannot run. "
                         "Fix: pip install -e '.[quality]' (lm-eval with its API extra), or drop quality=true.")


def score(gate: Gate, run: QualityRun) -> dict:
    """Run the gate on a served model: report.json's `quality` block (quality.json is written beside it)."""
    try:
        acc = evaluate(run)
    except QualityFailed as exc:
        log.warning("%s", exc)
        return failed(exc, gate.baseline, gate.max_drop, run)
    save(acc, run.outdir)
    return as_report(judge(acc, gate.baseline, gate.max_drop))


def task_source(task: Optional[str], outdir: Path) -> tuple[str, Optional[Path], bool]:
    """(task name, --include_path folder or None, offline) for `task`: the shipped task rendered under outdir
    with the absolute path of its data, a task YAML file's folder and `task:` name, or a registered lm-eval name."""
    if task is None:
        folder = outdir / "quality" / "task"
        folder.mkdir(parents=True, exist_ok=True)
        data = resources.files("planner") / "data" / "quality" / DATA
        (folder / f"{DEFAULT_TASK}.yaml").write_text(_TASK_YAML.format(task=DEFAULT_TASK, data=Path(str(data))))
        return DEFAULT_TASK, folder, True
    path = Path(task)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise InputError(f"quality_task={task}: no such task file. Fix: give an lm-eval task YAML that exists, "
                             "an lm-eval task name (quality_task=arc_easy), or leave quality_task out for the "
                             "shipped offline task.")
        import yaml

        name = (yaml.safe_load(path.read_text()) or {}).get("task")
        if not isinstance(name, str) or not name:
            raise InputError(f"quality_task={task}: the file has no `task:` name, so lm-eval cannot select it. "
                             "Fix: add `task: my_task` to the YAML.")
        return name, path.resolve().parent, False
    return task, None, False


def lm_eval_argv(run: QualityRun, task: str, include: Optional[Path], output: Path) -> tuple[str, ...]:
    """The lm-eval command for `run` (lm_eval/_cli/run.py `run` options, lm-eval 0.4.13)."""
    model_args = ",".join(f"{k}={v}" for k, v in (
        ("base_url", run.base_url.rstrip("/") + "/v1/completions"), ("model", run.model),
        ("tokenizer", run.tokenizer), ("tokenizer_backend", "huggingface"), ("tokenized_requests", "False"),
        ("num_concurrent", run.num_concurrent), ("max_retries", 1)))
    argv = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args", model_args,
            "--tasks", task, "--output_path", str(output), "--seed", "1234"]
    if include is not None:
        argv += ["--include_path", str(include)]
    if run.limit:
        argv += ["--limit", str(run.limit)]
    return tuple(argv)


def evaluate(run: QualityRun, timeout_s: float = TIMEOUT_S) -> Accuracy:
    """Run lm-eval against the endpoint and read its result; QualityFailed when it cannot score it."""
    task, include, offline = task_source(run.task, run.outdir)
    output = run.outdir / "quality" / "lm-eval"
    for old in output.rglob("results_*.json"):  # only this run's result is read
        old.unlink()
    argv = lm_eval_argv(run, task, include, output)
    log_path = run.outdir / "quality" / "lm-eval.log"
    log.warning("quality: lm-eval %s on %s (log: %s)", task, run.base_url, log_path)
    with log_path.open("w") as out:
        try:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=_env(run, offline),
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise QualityFailed(f"quality: lm-eval did not finish {task} within {timeout_s:.0f} s against "
                                f"{run.base_url}.", _tail(log_path)) from None
    if done.returncode != 0:
        raise QualityFailed(f"quality: lm-eval exited {done.returncode} scoring {task} against {run.base_url}: the "
                            "endpoint did not answer its loglikelihood requests (echo + logprobs) as an OpenAI "
                            "completions server does.", _tail(log_path))
    results = sorted(output.rglob("results_*.json"))
    if not results:
        raise QualityFailed(f"quality: lm-eval wrote no results file under {output}.", _tail(log_path))
    return parse_results(json.loads(results[-1].read_text()), task, run, argv)


def parse_results(doc: dict, task: str, run: QualityRun, argv: tuple[str, ...]) -> Accuracy:
    """The task's primary metric from lm-eval's results JSON (`results[task]["acc,none"]`, `n-samples`)."""
    scores = (doc.get("results") or {}).get(task)
    if not scores:
        raise QualityFailed(f"quality: lm-eval's results have no task {task!r} (tasks: "
                            f"{', '.join(doc.get('results') or {}) or 'none'}).")
    found = {key.split(",")[0]: (key, value) for key, value in scores.items()
             if "," in key and isinstance(value, (int, float)) and "_stderr" not in key}
    metric = next((m for m in METRICS if m in found), None) or next(iter(sorted(found)), None)
    if metric is None:
        raise QualityFailed(f"quality: lm-eval's result for {task} has no numeric metric ({sorted(scores)}).")
    key, value = found[metric]
    stderr = scores.get(key.replace(metric, f"{metric}_stderr", 1))
    samples = ((doc.get("n-samples") or {}).get(task) or {}).get("effective", 0)
    return Accuracy(task=task, metric=metric, value=float(value),
                    stderr=float(stderr) if isinstance(stderr, (int, float)) else None, samples=int(samples),
                    model=run.model, endpoint=run.base_url, lm_eval_version=_lm_eval_version(), argv=argv)


def judge(acc: Accuracy, baseline: Optional[Accuracy], max_drop: float) -> QualityVerdict:
    """Pass when the plan loses at most `max_drop` against `baseline`; no baseline: this run is the baseline."""
    if baseline is None:
        return QualityVerdict(acc, None, max_drop, None, True,
                              f"no quantization: {acc.metric} {acc.value:.4f} on {acc.task} is the baseline")
    if (baseline.task, baseline.metric) != (acc.task, acc.metric):
        raise InputError(f"quality_baseline: it scored {baseline.task}/{baseline.metric}, this run "
                         f"{acc.task}/{acc.metric}, so they cannot be compared. Fix: give the baseline of the same "
                         "quality_task, or leave quality_baseline out to measure the unquantized plan now.")
    drop = baseline.value - acc.value
    passed = drop <= max_drop + 1e-12
    why = (f"{acc.metric} {acc.value:.4f} vs baseline {baseline.value:.4f} on {acc.task}: "
           f"{'lost' if drop > 0 else 'gained'} {abs(drop):.4f}, "
           f"{'within' if passed else 'more than'} target.max_accuracy_drop {max_drop:g}")
    return QualityVerdict(acc, baseline, max_drop, round(drop, 6), passed, why)


def failed(error: QualityFailed, baseline: Optional[Accuracy], max_drop: float, run: QualityRun) -> dict:
    """report.json's quality block when lm-eval could not score the endpoint: the gate fails."""
    return {"passed": False, "why": str(error).splitlines()[0], "error": str(error), "max_accuracy_drop": max_drop,
            "baseline": asdict(baseline) if baseline else None, "endpoint": run.base_url}


def as_report(verdict: QualityVerdict) -> dict:
    """report.json's `quality` block."""
    out = asdict(verdict)
    out["accuracy"]["argv"] = list(verdict.accuracy.argv)
    return out


def save(acc: Accuracy, outdir: Path) -> Path:
    """quality.json beside the run's report: what `quality_baseline=` reads later."""
    path = outdir / "quality.json"
    path.write_text(json.dumps(asdict(acc), indent=2, sort_keys=True) + "\n")
    return path


def load_baseline(path: str) -> Accuracy:
    """A stored baseline: a quality.json, or a report.json whose quality block holds the accuracy."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"quality_baseline={path}: cannot read it as JSON ({exc}). Fix: give the quality.json "
                         "an earlier quality=true run wrote beside its report.json.") from None
    if isinstance(doc.get("quality"), dict):
        doc = doc["quality"].get("accuracy") or {}
    try:
        return Accuracy(**{**doc, "argv": tuple(doc.get("argv", ()))})
    except TypeError as exc:
        raise InputError(f"quality_baseline={path}: not an accuracy record ({exc}). Fix: give the quality.json an "
                         "earlier quality=true run wrote beside its report.json.") from None


def _env(run: QualityRun, offline: bool) -> dict:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1" if Path(run.tokenizer).is_dir() else env.get("HF_HUB_OFFLINE", "0")
    if offline:
        env["HF_DATASETS_OFFLINE"] = "1"
    if run.api_key_env:
        from planner.endpoint import auth_headers

        env["OPENAI_API_KEY"] = auth_headers(run.api_key_env)["Authorization"].removeprefix("Bearer ")
    return env


def _tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-TAIL_LINES:])


def _lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return "unknown"

"""What a new user reads first (issue 22, item 10): `--help` is the planner's own (groups and their options,
actions, options, exit codes, three examples; Hydra's hydra/help mechanism), `--version` is the planner's, and the
tables read on an 80-column terminal: nothing cut with an ellipsis, no name or value split."""

import json
import re

import pytest
from rich.console import Console

from planner import __version__, compose, errors, present, specs
from planner.verify import Check, Report

NARROW = {"COLUMNS": "80"}


@pytest.fixture(scope="module")
def help_text():
    from tests.conftest import run_cli

    out = run_cli("--help", env=NARROW)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _section(text: str, title: str) -> str:
    return text.split(f"== {title}", 1)[1].split("\n== ", 1)[0]


def test_help_lists_every_group_with_all_its_options(help_text):
    groups = _section(help_text, "Config groups")
    with compose.Composer() as c:
        for group in compose.GROUPS:
            entry = re.search(rf"^  {group} +(.*?)(?=^  \S|\Z)", groups, re.M | re.S)
            assert entry, group
            assert entry.group(1).replace("\n", " ").split() == [o + "," for o in c.options(group)[:-1]] + \
                   [c.options(group)[-1]]
    assert "calibration" not in groups and "rules:" not in groups, "internal config folders are not choices"


def test_help_lists_actions_options_exit_codes_and_three_examples(help_text):
    actions = _section(help_text, "Actions")
    assert all(re.search(rf"^  {a.value} ", actions, re.M) for a in specs.Action)
    options = _section(help_text, "Options")
    for key in ("action=", "format=table|json|yaml", "out=FILE", "save=false", "plan=FILE", "endpoint=URL",
                "port=N", "num_prompts=N", "force=true", "api_key_env=NAME", "deploy=kserve|", "rules.extra=",
                "plan.<field>="):
        assert f"  {key}" in options, key
    codes = _section(help_text, "Exit codes")
    for cls in (errors.InputError, errors.NoFeasiblePlan, errors.LaunchFailed, errors.TargetMissed,
                errors.PlannerError):
        assert re.search(rf"\b{cls.exit_code} \w", codes), cls
    assert re.search(r"\b0 \w", codes) and "130 interrupted" in codes
    examples = _section(help_text, "Examples")
    assert len(re.findall(r"^  python -m planner ", examples, re.M)) == 3
    assert "Hydra" not in help_text.split("Also:")[0], "our help, not Hydra's generic one"


def test_help_fits_80_columns(help_text):
    assert max(len(line) for line in help_text.splitlines()) <= 80


def test_short_help_flag_is_the_same(cli, help_text):
    assert cli("-h", env=NARROW).stdout == help_text


def test_version_is_the_planners(cli):
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"planner {__version__}"


# --- 80 columns -------------------------------------------------------------------------------------------------

def _narrow(cli, *args):
    out = cli(*args, env=NARROW)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out.stdout, "a value cut with an ellipsis"
    return out.stdout


def _whole(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", text) is not None


def test_plan_reads_on_80_columns(cli):
    doc = json.loads(cli("save=false", "format=json").stdout)
    text = _narrow(cli, "save=false")
    shown = {d["field"]: d["by"] for d in doc["decisions"]}  # the table shows a field's last decision
    for by in shown.values():
        assert _whole(text, by), by
    assert _whole(text, doc["plan"]["model_path"])
    assert "max_num_batched_tokens = 8,192" in text


def test_rules_and_explain_read_on_80_columns(cli):
    ids = [r["id"] for r in json.loads(cli("action=rules", "format=json").stdout)["rules"]]
    rules = _narrow(cli, "action=rules")
    explained = _narrow(cli, "action=explain", "save=false")
    for rule_id in ids:
        assert _whole(rules, rule_id), rule_id
    plan_rules = [i for i in ids if not i.startswith(("troubleshoot", "vllm.", "tgi.", "trtllm."))]
    assert sum(_whole(explained, i) for i in plan_rules) >= 50


def test_sweep_reads_on_80_columns(cli, tmp_path):
    out = cli("-m", "hw=h100x4,h200x4,a100x8", "model=llama3-70b", "save=false", cwd=tmp_path, env=NARROW)
    sweep = out.stdout.split("Sweep: plans side by side", 1)[1]
    assert max(len(line) for line in sweep.splitlines()) <= 80 and "…" not in sweep
    assert all(_whole(sweep, hw) for hw in ("h100x4", "h200x4", "a100x8"))


def test_verdict_reads_on_80_columns():
    report = Report(plan="tiny-llama-cpu-balanced", endpoint="http://127.0.0.1:8000", target={}, load={},
                    summary={"completed": 200, "failed": 0, "output_throughput": 2557.3},
                    checks=(Check("p90_output_throughput_tok_s_per_gpu", 2557.3, 6625.0, False),
                            Check("p90_ttft_ms", 2190.4, 1000.0, False)),
                    predicted_vs_measured=({"metric": "output_throughput_tok_s", "predicted": 6625.0,
                                            "measured": 2557.3, "error_pct": 159.1},))
    console = Console(width=80, record=True, highlight=False)
    present.verdict(report, "plans/tiny-llama-cpu-balanced/report.json", ["plans/x/latency_cdf.png"], console)
    text = console.export_text()
    assert "…" not in text and _whole(text, "p90_output_throughput_tok_s_per_gpu") and "2,557.30" in text


def test_sweep_shows_a_job_that_meets_nothing_by_its_closest_plan(cli, tmp_path):
    """A sweep point no candidate meets (exit 3) is a column too: its closest plan, 'meets' no; the sweep exits 3."""
    out = cli("-m", "hw=h100x4", "model=llama3-70b", "target.tpot_ms=50,2", "save=false", cwd=tmp_path, env=NARROW)
    assert out.returncode == 3, out.stderr[-2000:]
    sweep = out.stdout.split("Sweep: plans side by side", 1)[1]
    meets = next(line for line in sweep.splitlines() if line.strip().startswith("meets"))
    assert meets.split()[1:] == ["yes", "no"], meets

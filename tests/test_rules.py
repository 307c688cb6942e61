"""The rule engine: every rule's own examples (fires / stays silent), loading errors, the expertise the issue
names, and diagnosis of real server logs."""

from pathlib import Path

import pytest
import yaml

from planner import rules, search
from planner.errors import InputError
from planner.rules import engine
from planner.rules.troubleshoot import diagnose, for_symptom
from planner.specs import Dtype, Quantization

from conftest import ROOT, plan_or_closest, request_for

RULES = rules.all_rules()
PLAN_RULES = [r for r in RULES if r.kind == "plan"]
TROUBLE = [r for r in RULES if r.kind == "troubleshoot"]
LOADED = engine.load()


def test_rule_coverage():
    assert len(PLAN_RULES) >= 30 and len(TROUBLE) >= 8
    assert len({r.id for r in RULES}) == len(RULES)
    for r in RULES:
        assert r.why and r.source, r.id
        assert r.examples.get("fires") and r.examples.get("silent"), f"{r.id} needs a firing and a silent example"


def _fires(rule_id, overrides):
    return rule_id in rules.constraints_for(request_for(*overrides)).fired_ids()


@pytest.mark.parametrize("rule,overrides", [
    pytest.param(r, o, id=f"{r.id}-fires-{i}") for r in PLAN_RULES for i, o in enumerate(r.examples["fires"])])
def test_plan_rule_fires_on_its_examples(rule, overrides):
    assert _fires(rule.id, overrides)


@pytest.mark.parametrize("rule,overrides", [
    pytest.param(r, o, id=f"{r.id}-silent-{i}") for r in PLAN_RULES for i, o in enumerate(r.examples["silent"])])
def test_plan_rule_stays_silent_on_its_examples(rule, overrides):
    assert not _fires(rule.id, overrides)


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.id) for r in TROUBLE])
def test_troubleshooting_rule_examples(rule):
    if rule.symptom:
        for s in rule.examples["fires"]:
            assert rule in for_symptom(s, LOADED)
        for s in rule.examples["silent"]:
            assert rule not in for_symptom(s, LOADED)
        return
    for line in rule.examples["fires"]:
        assert rule.id in [d.rule.id for d in diagnose(line, LOADED)], line
    for line in rule.examples["silent"]:
        assert rule.id not in [d.rule.id for d in diagnose(line, LOADED)], line


# --- the expertise the issue names -------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["llama3-70b", "llama3-8b", "mixtral-8x7b", "qwen2.5-72b"])
@pytest.mark.parametrize("target", ["latency", "throughput", "balanced", "cost"])
def test_volta_never_plans_bf16_or_fp8(model, target):
    p = plan_or_closest(f"model={model}", "hw=v100x8", f"target={target}").plan
    assert p.dtype is Dtype.fp16 and p.quantization is not Quantization.fp8 and p.kv_cache_dtype.value != "fp8"


@pytest.mark.parametrize("model", ["llama3-70b", "llama3-8b", "qwen2.5-72b", "mixtral-8x7b"])
@pytest.mark.parametrize("target", ["latency", "throughput", "balanced", "cost"])
def test_ampere_never_gets_fp8_weights(model, target):
    p = plan_or_closest(f"model={model}", "hw=a100x4", f"target={target}").plan
    assert p.quantization is not Quantization.fp8 and p.kv_cache_dtype.value != "fp8"


def test_h100_throughput_considers_fp8_and_names_the_rule():
    c = search.compile_plan(request_for("model=llama3-70b", "hw=h100x4", "target=throughput"))
    by = [d.by for d in c.decisions if d.field == "quantization"]
    assert c.plan.quantization is Quantization.fp8 and by[0] == "precision.fp8-on-hopper-for-throughput"


def test_latency_and_throughput_give_different_plans():
    lat = plan_or_closest("model=llama3-70b", "hw=h100x4", "target=latency").plan
    thr = plan_or_closest("model=llama3-70b", "hw=h100x4", "target=throughput").plan
    assert lat.tensor_parallel > thr.tensor_parallel and lat.max_num_seqs < thr.max_num_seqs


@pytest.mark.parametrize("overrides", [["model=llama3-70b", "hw=h100x4"], ["model=llama3-8b", "hw=l4x1"],
                                       ["model=deepseek-v3", "hw=h200x8"], ["model=llama3.2-1b", "hw=cpu", "target=best-effort"],
                                       ["model=llama3-8b", "hw=h100x1", "target=latency"]])
def test_every_plan_field_is_decided_with_a_reason(overrides):
    c = plan_or_closest(*overrides)
    decided = {d.field for d in c.decisions}
    assert set(c.plan.__dataclass_fields__) <= decided
    assert all(d.why and d.by for d in c.decisions)


def test_speculative_decoding_for_low_batch_latency():
    c = search.compile_plan(request_for("model=llama3-8b", "hw=h100x1", "target=latency"))
    assert c.plan.speculative == {"method": "eagle", "model": "yuhuili/EAGLE-LLaMA3-Instruct-8B",
                                  "num_speculative_tokens": 3}


def test_pinned_value_excluded_by_a_rule_is_an_error_naming_the_rule():
    with pytest.raises(InputError, match=r"plan.quantization=fp8 was pinned, but precision.fp8-needs-sm89 rules it out"):
        search.compile_plan(request_for("hw=a100x4", "plan.quantization=fp8"))


def test_pin_beats_rule_and_trace_says_so():
    cons = rules.constraints_for(request_for("target=latency", "plan.max_num_seqs=200"))
    entry = next(e for e in cons.trace if e.rule.id == "target.latency-small-batch")
    assert "pinned by the user" in entry.detail


def test_higher_priority_wins_and_the_loser_is_reported():
    cons = rules.constraints_for(request_for("target=latency"))
    assert cons.settings["max_num_seqs"].rule.id == "target.latency-small-batch"
    loser = next(e for e in cons.trace if e.rule.id == "target.default-batch-256")
    assert "overridden by target.latency-small-batch" in loser.detail


# --- loading: user rules, disabling, broken rules ------------------------------------------------------------

def _rule_file(tmp_path: Path, text: str) -> str:
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    engine.load.cache_clear()
    return str(p)


def test_user_rules_extend_and_disable(tmp_path):
    path = _rule_file(tmp_path, """
- id: mine.tiny-batch
  when: model.num_params_b < 10
  priority: 99
  then: {set: {max_num_seqs: 8}}
  why: our team's rule
  source: internal wiki
""")
    cons = rules.constraints_for(request_for("model=llama3-8b", "hw=h100x1"), extra=(path,))
    assert cons.settings["max_num_seqs"].rule.id == "mine.tiny-batch"
    off = rules.constraints_for(request_for("model=llama3-8b", "hw=h100x1"), disable=("target.default-batch-256",))
    assert "target.default-batch-256" not in off.fired_ids()


@pytest.mark.parametrize("text,match", [
    pytest.param("- id: mine.x\n  when: model.num_parms_b > 1\n  why: w\n  source: s\n",
                 r"rule mine.x: when reads model.num_parms_b.*Did you mean num_params_b", id="unknown-field"),
    pytest.param("- id: mine.x\n  when: modle.name == 'a'\n  why: w\n  source: s\n",
                 r"rule mine.x: when names 'modle'.*Did you mean model", id="unknown-namespace"),
    pytest.param("- id: mine.x\n  when: model.name ==\n  why: w\n  source: s\n", r"rule mine.x: when .* does not parse",
                 id="syntax"),
    pytest.param("- id: mine.x\n  then: {set: {max_seqs: 3}}\n  why: w\n  source: s\n",
                 r"rule mine.x .*then.set.max_seqs: not a field", id="unknown-effect-field"),
    pytest.param("- id: mine.x\n  then: {allow: {quantization: [fp9]}}\n  why: w\n  source: s\n",
                 r"rule mine.x: quantization values \['fp9'\]", id="bad-value"),
    pytest.param("- id: mine.x\n  when: 'true'\n  source: s\n", r"rule mine.x .*'why' is required", id="no-why"),
    pytest.param("- id: Mine\n  why: w\n  source: s\n", r"id 'Mine' must look like", id="bad-id"),
    pytest.param("- id: mine.x\n  kind: troubleshoot\n  match: ['(']\n  why: w\n  source: s\n",
                 r"not a valid regular expression", id="bad-regex"),
])
def test_broken_rules_fail_at_load_naming_the_rule(tmp_path, text, match):
    path = _rule_file(tmp_path, text)
    with pytest.raises(InputError, match=match):
        engine.load((path,))


def test_unknown_disabled_id_is_an_error():
    with pytest.raises(InputError, match=r"rules.disable.*no rule target.latncy.*Did you mean target.latency"):
        engine.load((), ("target.latncy-small-batch",))


# --- diagnosis of real logs ----------------------------------------------------------------------------------

LOGS = ROOT / "tests" / "data" / "logs"
INDEX = yaml.safe_load((LOGS / "index.yaml").read_text())
SYMPTOM_RULE = {
    "kv-cache-too-small": "trouble.kv-cache-too-small", "startup-oom": "trouble.startup-oom",
    "free-memory-below-utilization": "trouble.free-memory-below-utilization",
    "bf16-unsupported": "trouble.bf16-unsupported", "quantization-unsupported": "trouble.quantization-unsupported",
    "tp-not-divisible": "trouble.tp-not-divisible", "nccl-error": "trouble.nccl", "kv-preemption": "trouble.kv-preemption",
    "port-in-use": "trouble.port-in-use", "tgi-prefill-tokens": "trouble.tgi-prefill-tokens",
    "tgi-warmup-oom": "trouble.tgi-warmup-oom", "tgi-max-input-tokens": "trouble.tgi-length-limits",
    "trtllm-executor-oom": "trouble.trtllm-executor-oom", "trtllm-kv-no-free-blocks": "trouble.trtllm-kv-no-free-blocks",
    "trtllm-max-num-tokens": "trouble.trtllm-max-num-tokens",
}


def test_enough_real_logs():
    assert len(INDEX) >= 8 and {e["engine"] for e in INDEX} >= {"vllm", "trtllm", "tgi"}
    assert all(e["url"].startswith("https://") for e in INDEX)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e["file"]) for e in INDEX])
def test_diagnose_names_the_right_remedy_first(entry):
    found = diagnose((LOGS / entry["file"]).read_text(), LOADED)
    assert found, f"nothing matched {entry['file']}"
    assert found[0].rule.id == SYMPTOM_RULE[entry["symptom"]], [d.rule.id for d in found]
    assert found[0].rule.remedies


def test_diagnose_cli_on_a_real_log(cli):
    out = cli("action=diagnose", f"log={LOGS / INDEX[0]['file']}", "format=json")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["diagnoses"][0]["rule"] == SYMPTOM_RULE[INDEX[0]["symptom"]]


def test_rules_and_explain_cli(cli):
    listed = cli("action=rules", "format=json")
    assert listed.returncode == 0 and len(yaml.safe_load(listed.stdout)["rules"]) == len(RULES)
    explained = cli("action=explain", "model=llama3-70b", "hw=h100x4", "target=latency")
    assert explained.returncode == 0, explained.stderr
    assert "target.latency-wide-tp" in explained.stdout and "condition false" in explained.stdout

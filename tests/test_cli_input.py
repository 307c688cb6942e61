"""Bad input through the command line (issue 22, items 5 and 7): exit 2 with one paragraph per problem that names
the field and the value and says `Fix:`, never exit 70 or a traceback, and nothing launched for it. The cases run
through planner.app.main, as `python -m planner ...` does; multirun goes through Hydra's entry point in a
subprocess."""

import json

import pytest

from planner import app

PLAN = ["model=llama3.2-1b", "hw=l4x1", "save=false", "format=json"]  # a quick plan: these tests are about input


def _main(capsys, *args: str) -> tuple[int, str, str]:
    code = app.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (code, err)
    assert out == "" and "Traceback" not in err and "internal error" not in err, err
    assert err.startswith("error: ") and "Fix:" in err, err
    for needle in needles:
        assert needle in err, (needle, err)


# --- item 5: `+`, `++` and `~` on the planner's closed schema -------------------------------------------------

@pytest.mark.parametrize("override, needles", [
    pytest.param("+target.tpot=5", ["+target.tpot=5", "'target.tpot' is not a field", "Did you mean tpot_ms",
                                     "ttft_ms"], id="append-unknown-field"),
    pytest.param("++target.tpot=5", ["'target.tpot' is not a field", "Did you mean tpot_ms"], id="force-add-unknown"),
    pytest.param("target.tpot=5", ["'target.tpot' is not a field", "Did you mean tpot_ms"], id="unknown-field"),
    pytest.param("+foo=1", ["'foo' is not", "model", "num_prompts"], id="append-unknown-top-level"),
    pytest.param("+num_promts=5", ["Did you mean num_prompts"], id="append-top-level-typo"),
    pytest.param("+hw.gpu.memory_gb=80", ["'hw.gpu.memory_gb' is not a field", "Did you mean memory_gib"],
                 id="append-unknown-nested-field"),
    pytest.param("+model.name.x=1", ["'model.name.x' is not a field", "model.name is a value"],
                 id="append-below-a-value"),
    pytest.param("+target.tpot_ms=5", ["+target.tpot_ms=5", "already has a value", "target.tpot_ms=5"],
                 id="append-to-a-set-field"),
    pytest.param("~model", ["~model", "every plan needs a model", "model=NAME", "Valid:", "llama3-8b"], id="delete-a-group"),
    pytest.param("~backend", ["~backend", "backend=auto"], id="delete-the-backend-group"),
    pytest.param("~target.tpot_ms", ["~target.tpot_ms", "target.tpot_ms=null"], id="delete-an-optional-field"),
    pytest.param("~workload.input_len", ["~workload.input_len", "workload.input_len=..."], id="delete-a-required-field"),
    pytest.param("~plan", ["~plan", "plan.<field>", "plan.backend"], id="delete-a-section"),
    pytest.param("~num_prompts", ["~num_prompts", "leave num_prompts out"], id="delete-an-option"),
    pytest.param("rules=backend", ["rules is a section", "rules.extra", "rules.disable"], id="section-given-a-value"),
])
def test_plus_tilde_and_unknown_fields_are_refused(capsys, override, needles):
    _refused(*_main(capsys, override, *PLAN), *needles)


@pytest.mark.parametrize("override, path, value", [
    pytest.param("++target.tpot_ms=45", ("target", "tpot_ms"), 45.0, id="force-add-overrides-a-field"),
    pytest.param("+target.e2e_latency_ms=9000", ("target", "e2e_latency_ms"), 9000.0, id="append-to-a-null-field"),
    pytest.param("+plan.max_num_seqs=64", ("plan", "max_num_seqs"), 64, id="append-a-pin"),
])
def test_plus_on_a_real_field_sets_it(capsys, override, path, value):
    """Hydra's `+` sets a field that has no value yet and `++` sets one either way: on a real field both mean what
    the user wants, and the value reaches the plan."""
    code, out, err = _main(capsys, override, *PLAN)
    assert code in (0, 3), err
    doc = json.loads(out)
    section = doc["request"]["target"] if path[0] == "target" else doc["plan"]
    assert section[path[1]] == value


def test_plus_on_the_rules_list_field_is_the_list(capsys, tmp_path):
    """rules.extra is a real list field: `+rules.extra=[FILE]` adds the user's rule file like rules.extra=[FILE]."""
    missing = tmp_path / "mine.yaml"
    code, out, err = _main(capsys, f"+rules.extra=[{missing}]", *PLAN)
    _refused(code, out, err, f"rules.extra={missing}: no such file")  # it was read as a rule file, not ignored


@pytest.mark.parametrize("args", [
    pytest.param(["-m", "+target.tpot=5,6"], id="multirun-append-unknown"),
    pytest.param(["-m", "target.tpot=5,6"], id="multirun-unknown"),
    pytest.param(["--multirun", "~model", "hw=h100x1,h100x2"], id="multirun-delete-group"),
])
def test_multirun_refuses_them_with_our_paragraph_before_hydra(cli, tmp_path, args):
    """Hydra's own multirun error says `To append to your config use +target.tpot=5`, which is then accepted
    silently; the planner answers first, with the same paragraph as a single run."""
    out = cli(*args, "save=false", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Fix:" in out.stderr and "To append to your config" not in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "plans").exists()


# --- item 7: values out of range exit 2 before anything runs -------------------------------------------------

@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything would start a server or load-test an endpoint."""
    from planner import actions, endpoint, launch

    def refuse(*args, **kwargs):
        raise AssertionError("a bad option must be refused before anything is launched")

    monkeypatch.setattr(launch, "run", refuse)
    monkeypatch.setattr(endpoint, "check_endpoint", refuse)
    monkeypatch.setattr(actions, "_launch", refuse)
    monkeypatch.setattr(actions, "_verify_endpoint", refuse)


LAUNCH = ["model=tiny-llama", "hw=cpu", "target=best-effort", "format=json"]


@pytest.mark.parametrize("args, needles", [
    pytest.param(["action=launch", "num_prompts=-5"], ["num_prompts=-5", "at least 1"], id="negative-num-prompts"),
    pytest.param(["action=verify", "num_prompts=0"], ["num_prompts=0"], id="zero-num-prompts"),
    pytest.param(["action=launch", "port=99999"], ["port=99999", "65535"], id="port-too-big"),
    pytest.param(["action=launch", "port=0"], ["port=0"], id="port-zero"),
    pytest.param(["action=verify", "port=-1"], ["port=-1"], id="port-negative"),
    pytest.param(["action=launch", "ready_timeout_s=-1"], ["ready_timeout_s=-1"], id="negative-timeout"),
    pytest.param(["action=launch", "ready_timeout_s=nan"], ["ready_timeout_s=nan"], id="nan-timeout"),
    pytest.param(["action=launch", "ready_timeout_s=inf"], ["ready_timeout_s=inf"], id="inf-timeout"),
    pytest.param(["action=verify", "endpoint="], ["endpoint=''", "http://"], id="empty-endpoint"),
    pytest.param(["action=verify", "endpoint=localhost:8000"], ["endpoint=localhost:8000", "http://"],
                 id="endpoint-without-scheme"),
    pytest.param(["action=verify", "endpoint=http://127.0.0.1:80a1"], ["endpoint=http://127.0.0.1:80a1", "http://"],
                 id="endpoint-port-not-a-number"),
    pytest.param(["action=launch", "api_key_env="], ["api_key_env=''"], id="empty-api-key-env"),
    pytest.param(["action=launch", "api_key_env='KEY; rm -rf ~'"], ["api_key_env='KEY; rm -rf ~'"],
                 id="api-key-env-not-a-variable-name"),
    pytest.param(["action=launch", "out="], ["out=''"], id="empty-out"),
    pytest.param(["action=launch", "plan="], ["plan=''"], id="empty-plan-file"),
    pytest.param(["action=diagnose", "log="], ["log=''"], id="empty-log"),
    pytest.param(["action=launch", "num_prompts=-5", "port=99999"], ["num_prompts=-5", "port=99999"],
                 id="all-at-once"),
])
def test_bad_options_exit_2_before_anything_is_launched(capsys, no_launch, tmp_path, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(capsys, *LAUNCH, *args)
    _refused(code, out, err, *needles)
    assert not (tmp_path / "plans").exists()


def test_bad_options_of_a_saved_plan_exit_2_before_launching(capsys, no_launch, tmp_path):
    saved = tmp_path / "p.yaml"
    assert _main(capsys, *LAUNCH, f"out={saved}")[0] == 0
    _refused(*_main(capsys, f"plan={saved}", "action=launch", "num_prompts=-5"), "num_prompts=-5")


@pytest.mark.parametrize("args, needles", [
    pytest.param(["model.name="], ["model.name=''"], id="empty-model-name"),
    pytest.param(["model.name=../x"], ["model.name=../x"], id="model-name-with-a-slash"),
    pytest.param(["target.name=a b"], ["target.name='a b'"], id="name-with-a-space"),
    pytest.param(["model.hf_repo="], ["model.hf_repo=''"], id="empty-hf-repo"),
    pytest.param(["target.tpot_ms=inf"], ["target.tpot_ms=inf", "finite"], id="infinite-slo"),
    # found by tests/test_fuzz.py: a rate too small to print or simulate crashed the plan's load description
    pytest.param(["target.min_request_rate=1.38e-274"], ["target.min_request_rate=1.38e-274", "0.001"],
                 id="vanishing-min-request-rate"),
    pytest.param(["workload.request_rate=0.0001"], ["workload.request_rate=0.0001", "0.001"],
                 id="vanishing-request-rate"),
    pytest.param(["workload.request_rate=inf"], ["workload.request_rate=inf"], id="infinite-rate"),
    pytest.param(["hw.gpu.memory_gib=inf"], ["hw.gpu.memory_gib=inf"], id="infinite-memory"),
    pytest.param(["hw.gpu.price_usd_per_hour=-2"], ["hw.gpu.price_usd_per_hour=-2"], id="negative-price"),
    pytest.param(["workload.max_lora_rank=0"], ["workload.max_lora_rank=0"], id="zero-lora-rank"),
    pytest.param(["model.quantization_bits=0"], ["model.quantization_bits=0"], id="zero-bits"),
    # found by tests/test_fuzz.py: 104,079 GPUs in one node made the disaggregated-split search run for hours
    pytest.param(["hw.gpus_per_node=104079"], ["hw.gpus_per_node=104079", "hw.nodes"], id="a-node-of-104079-gpus"),
    pytest.param(["hw.nodes=5000"], ["hw.nodes=5000", "1024"], id="5000-nodes"),
])
def test_bad_spec_values_exit_2_and_write_nothing(capsys, tmp_path, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    _refused(*_main(capsys, "model=llama3.2-1b", "hw=l4x1", "format=json", *args), *needles)
    assert not (tmp_path / "plans").exists(), "no plans/-l4x1-balanced.yaml"


def _hf_dir(tmp_path, content) -> str:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return str(d)


_LLAMA = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512,
          "vocab_size": 1000, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}


@pytest.mark.parametrize("content, needles", [
    pytest.param([1, 2], ["config.json is a JSON list, not a JSON object"], id="a-json-list"),
    pytest.param("llama", ["config.json", "not a JSON object"], id="a-json-string"),
    pytest.param(None, ["config.json", "not a JSON object"], id="json-null"),
    pytest.param(b"\xff\xfe\x00\x01", ["config.json", "not UTF-8"], id="binary"),
    pytest.param({**_LLAMA, "hidden_size": "abc"}, ["hidden_size='abc'", "an integer"], id="size-as-text"),
    pytest.param({**_LLAMA, "model_type": 5}, ["model_type=5", "text"], id="model-type-a-number"),
    pytest.param({**_LLAMA, "quantization_config": [1]}, ["quantization_config", "not a JSON object"],
                 id="quantization-config-a-list"),
    pytest.param({**_LLAMA, "quantization_config": {"quant_method": "awq", "bits": "four"}},
                 ["bits='four'", "an integer"], id="quantization-bits-as-text"),
    pytest.param({**_LLAMA, "text_config": [1]}, ["text_config", "not a JSON object"], id="text-config-a-list"),
    pytest.param({**_LLAMA, "architectures": "LlamaForCausalLM"}, ["architectures='LlamaForCausalLM' is text, not a JSON list"],
                 id="architectures-a-string"),
])
def test_a_bad_hf_config_json_exits_2(capsys, tmp_path, content, needles):
    path = _hf_dir(tmp_path, content)
    _refused(*_main(capsys, "model=hf", f"model.path={path}", "hw=l4x1", "save=false", "format=json"),
             f"model.path={path}", *needles)


def test_empty_model_path_is_not_this_directory(capsys, tmp_path, monkeypatch):
    """`model.path=` (an empty variable in a script) must not read ./config.json."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(_LLAMA))
    _refused(*_main(capsys, "model=hf", "model.path=", "hw=l4x1", "save=false", "format=json"), "model.path")


# --- every top-level option, every kind of bad value ----------------------------------------------------------

OPTIONS = ["action", "format", "out", "save", "plan", "endpoint", "log", "debug", "port", "num_prompts",
           "ready_timeout_s", "sweep", "force", "api_key_env", "deploy", "rules.extra", "rules.disable"]
BAD = ["", "-5", "0", "nan", "inf", "[1]", "'a b'", "???", "x=y"]


@pytest.mark.parametrize("option", OPTIONS)
def test_any_value_of_any_option_is_a_plan_or_a_paragraph(capsys, no_launch, tmp_path, monkeypatch, option):
    monkeypatch.chdir(tmp_path)
    for value in BAD:
        code, out, err = _main(capsys, *PLAN, f"{option}={value}")
        assert code in (0, 2), (option, value, code, err)
        assert "Traceback" not in err and "internal error" not in err, (option, value, err)
        if code == 2:
            assert out == "" and "Fix:" in err, (option, value, err)


def test_plus_names_the_plan_file_like_the_plain_override(req):
    """`+plan.max_num_seqs=64` is the pin `plan.max_num_seqs=64`: the same file name (-pinned, no inputs hash)."""
    for plus, plain in (("+plan.max_num_seqs=64", "plan.max_num_seqs=64"),
                        ("++target.tpot_ms=45", "target.tpot_ms=45")):
        r = req(plus)
        assert app.plan_path(r, None, [plus]) == app.plan_path(r, None, [plain])

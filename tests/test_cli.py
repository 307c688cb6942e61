"""The real entry point in a subprocess: the plan document on stdout, exit codes, files, multirun."""

import json

import pytest
import yaml

DESIGN_KEYS = ["planner.version", "planner.inputs_sha256", "request.model", "request.hw", "request.target",
               "request.workload", "request.precision", "plan.backend", "plan.model_path", "plan.nodes",
               "plan.gpus_per_replica", "plan.replicas", "plan.tensor_parallel", "plan.pipeline_parallel",
               "plan.expert_parallel", "plan.data_parallel", "plan.dtype", "plan.quantization", "plan.kv_cache_dtype",
               "plan.max_model_len", "plan.max_num_seqs", "plan.max_num_batched_tokens",
               "plan.gpu_memory_utilization", "plan.enable_prefix_caching", "plan.enable_chunked_prefill",
               "plan.speculative", "memory.total_gib", "memory.usable_gib", "memory.weights_gib",
               "memory.kv_cache_gib", "memory.activations_gib", "memory.runtime_overhead_gib",
               "memory.kv_cache_tokens", "memory.max_concurrency_at_max_len", "prediction", "decisions",
               "alternatives"]


def _get(doc, dotted):
    for part in dotted.split("."):
        doc = doc[part]
    return doc


def test_main_command_prints_json_with_design_keys(cli, tmp_path):
    out = cli("model=llama3-70b", "hw=h100x4", "format=json", f"out={tmp_path}/p.yaml")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # stdout is exactly one JSON document
    for key in DESIGN_KEYS:
        _get(doc, key)
    assert doc["plan"]["tensor_parallel"] >= 2
    assert yaml.safe_load((tmp_path / "p.yaml").read_text()) == doc


def test_default_plan_file_name(cli, tmp_path):
    out = cli("model=llama3-8b", "hw=l4x1", "target=latency", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "plans" / "llama3-8b-l4x1-latency.yaml").is_file()
    assert "Plan: llama3-8b on l4x1" in out.stdout and "Memory per GPU" in out.stdout


def test_same_inputs_give_byte_identical_files(cli, tmp_path):
    for name in ("a", "b"):
        assert cli("model=mixtral-8x7b", "hw=h100x2", f"out={tmp_path}/{name}.yaml").returncode == 0
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()


def test_saved_plan_is_reprinted(cli, tmp_path):
    cli("model=llama3-8b", "hw=h100x1", f"out={tmp_path}/p.yaml", "save=true")
    out = cli(f"plan={tmp_path}/p.yaml", "format=json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["request"]["model"]["name"] == "llama3-8b"


@pytest.mark.parametrize("args,code,needle", [
    pytest.param(["model=llama-3-70b"], 2, "llama3-70b", id="typo-exit-2"),
    pytest.param(["model=llama3-70b", "hw=h100x1", "precision=bf16"], 3, "131.4 GiB", id="no-fit-exit-3"),
    pytest.param(["hw=a100x4", "precision=fp8"], 2, "compute capability", id="fp8-on-ampere-exit-2"),
    pytest.param(["plan=does/not/exist.yaml"], 2, "no such file", id="missing-plan-file"),
    pytest.param(["workload.input_len=-"], 2, "workload.input_len", id="bad-value"),
    pytest.param(["hw=", "model="], 2, "Fix:", id="empty-values"),
])
def test_errors_exit_with_their_code_and_one_paragraph(cli, args, code, needle):
    out = cli(*args, "save=false")
    assert out.returncode == code, (out.stdout, out.stderr)
    assert needle in out.stderr and "Traceback" not in out.stderr + out.stdout
    assert out.stdout == ""


def test_internal_error_is_one_line_and_a_saved_traceback(cli, tmp_path, monkeypatch):
    # A plan file whose content breaks the presenter (a bug-shaped failure) exercises the exit-70 path.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({k: None for k in ("planner", "request", "plan", "memory", "prediction",
                                                      "decisions", "alternatives")}))
    out = cli(f"plan={bad}", env={"PLANNER_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 70
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "Traceback" in (tmp_path / "last-error.txt").read_text()
    shown = cli(f"plan={bad}", "debug=true", env={"PLANNER_CACHE_DIR": str(tmp_path)})
    assert "Traceback" in shown.stderr


def test_multirun_compares_plans_and_writes_no_hydra_clutter(cli, tmp_path):
    out = cli("-m", "hw=h100x4,h200x4", "model=llama3-70b", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Sweep: plans side by side" in out.stdout
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == ["llama3-70b-h100x4-balanced.yaml",
                                                                      "llama3-70b-h200x4-balanced.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plans"]


def test_multirun_with_a_bad_job_returns_its_code_after_the_sweep(cli, tmp_path):
    out = cli("-m", "hw=h100x1,h100x4", "model=llama3-70b", "precision=bf16", cwd=tmp_path)
    assert out.returncode == 3
    sweep = out.stdout.split("Sweep: plans side by side", 1)
    assert len(sweep) == 2 and "h100x4" in sweep[1], "the sweep table is printed and lists the job that planned"
    assert (tmp_path / "plans" / "llama3-70b-h100x4-balanced-bf16.yaml").is_file()


def test_multirun_typo_exits_2(cli, tmp_path):
    out = cli("-m", "hw=h100x4,h100x9", cwd=tmp_path)
    assert out.returncode == 2 and "Fix:" in out.stderr

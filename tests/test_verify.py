"""Verification against a server that is already running (the stub on 127.0.0.1): report.json, plots, verdicts,
exit codes; and the remediation of fixable launch failures."""

import json
import sys

import pytest
import yaml

from planner import launch

from conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "tests"))
from stub_server import StubConfig, running  # noqa: E402


SERVED = ("meta-llama/Meta-Llama-3-8B-Instruct",)
"""What vLLM serves for a llama3-8b plan: --served-model-name defaults to --model, the checkpoint (hf_repo in
conf/model/llama3-8b.yaml), written here as a literal so a wrong name in the plan fails the test."""


def stub(**behaviour) -> StubConfig:
    """The strict stub serving the llama3-8b checkpoint, as vLLM would for these plans."""
    return StubConfig(**{"served_model_names": SERVED, **behaviour})


def _plan(tmp_path, *overrides):
    out = run_cli("model=llama3-8b", "hw=h100x1", f"out={tmp_path}/p.yaml", *overrides, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path / "p.yaml"


@pytest.mark.parametrize("token_ms,code,verdict", [
    pytest.param(1, 0, True, id="fast-server-passes"),
    pytest.param(80, 5, False, id="slow-server-misses-tpot"),
])
def test_verify_a_running_server(tmp_path, token_ms, code, verdict):
    plan = _plan(tmp_path, "target=latency", "workload.output_len=16", "workload.input_len=32")
    with running(stub(token_delay_ms=token_ms, first_token_delay_ms=5)) as (url, server):
        out = run_cli("action=verify", f"endpoint={url}", f"plan={plan}", "num_prompts=8", cwd=tmp_path)
    assert out.returncode == code, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    settle = report["load"]["settle"]  # a closed loop: that many fill the loop first, up to twice that keep it full
    assert settle == report["load"]["max_concurrency"] > 0
    models = [p["model"] for p in server.stats.payloads]
    assert models == [SERVED[0]] * len(models) and 2 + settle + 8 <= len(models) <= 2 + 3 * settle + 8, \
        "warmup 2 + settle + 8 measured (+ fillers), all naming the plan's"
    assert report["passed"] is verdict and report["summary"]["completed"] == 8
    tpot = next(c for c in report["checks"] if "tpot" in c["metric"])
    assert tpot["passed"] is verdict and tpot["limit"] == 25
    assert {r["metric"] for r in report["predicted_vs_measured"]} >= {"p50_tpot_ms", "output_throughput"}
    for png in ("latency_cdf.png", "over_time.png", "predicted_vs_measured.png"):
        assert (tmp_path / "p" / png).stat().st_size > 1000


@pytest.mark.parametrize("rule,plan,expected", [
    pytest.param("trouble.startup-oom", {"gpu_memory_utilization": 0.92, "max_num_seqs": 256},
                 {"gpu_memory_utilization": 0.87, "max_num_seqs": 128}, id="oom"),
    pytest.param("trouble.startup-oom", {"gpu_memory_utilization": None, "max_num_seqs": 256},
                 {"max_num_seqs": 128}, id="oom-cpu"),
    pytest.param("trouble.kv-cache-too-small", {"gpu_memory_utilization": None, "kv_cache_space_gib": 1,
                                                 "max_num_seqs": 8, "max_model_len": 2048},
                 {"kv_cache_space_gib": 2}, id="kv-small-cpu"),
    pytest.param("trouble.kv-cache-too-small", {"gpu_memory_utilization": 0.92, "kv_cache_space_gib": None,
                                                 "max_num_seqs": 8, "max_model_len": 2048},
                 {"gpu_memory_utilization": 0.95}, id="kv-small-gpu"),
    pytest.param("trouble.kv-cache-too-small", {"gpu_memory_utilization": 0.95, "kv_cache_space_gib": None,
                                                 "max_num_seqs": 8, "max_model_len": 2048},
                 {"max_model_len": 1024}, id="kv-small-gpu-at-the-ceiling"),
    pytest.param("trouble.nccl", {"gpu_memory_utilization": 0.92}, None, id="not-fixable-by-replanning"),
])
def test_remedies_become_plan_pins(rule, plan, expected):
    """The rule data's relaunch pins, evaluated by the rule engine over the failed plan."""
    from planner.rules import engine
    from planner.rules.troubleshoot import Diagnosis, relaunch_pins

    found = [Diagnosis(c.rule, 1, "") for c in engine.load() if c.rule.id == rule]
    fix = relaunch_pins(found, plan)
    assert (fix[2] if fix else None) == expected


def test_local_argv_binds_loopback_and_the_chosen_port():
    argv = launch.local_argv(["python3", "-m", "vllm.entrypoints.openai.api_server", "--host", "0.0.0.0",
                              "--port", "8000"], 12345)
    assert argv[0] == sys.executable and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "12345"


def test_only_vllm_launches_here():
    with pytest.raises(Exception, match="only vLLM can be launched"):
        launch.check_backend_runs_here("trtllm")


def test_rate_sweep_finds_the_highest_goodput_under_the_slo(tmp_path):
    plan = _plan(tmp_path, "target=latency", "workload.output_len=8", "workload.input_len=16")
    with running(stub(token_delay_ms=1, first_token_delay_ms=2)) as (url, _stub):
        out = run_cli("action=verify", f"endpoint={url}", f"plan={plan}", "num_prompts=8", "sweep=true",
                      cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    rates = [p["request_rate"] for p in report["sweep"]]
    assert len(rates) >= 2 and rates == sorted(rates)
    assert all(p["goodput"] > 0 for p in report["sweep"] if p["passed"])
    assert "highest goodput" in out.stderr


def test_report_carries_the_servers_metrics(tmp_path):
    plan = _plan(tmp_path, "workload.output_len=16", "workload.input_len=16")
    with running(stub(token_delay_ms=20, first_token_delay_ms=5)) as (url, _stub):
        out = run_cli("action=verify", f"endpoint={url}", f"plan={plan}", "num_prompts=8", cwd=tmp_path)
    assert out.returncode in (0, 5), out.stderr[-2000:]  # the verdict depends on this machine's speed
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert (report["summary"]["completed"], report["summary"]["failed"]) == (8, 0), "metrics of a run that served"
    metrics = report["server_metrics"]
    assert metrics.get("samples", 0) >= 1 and any(k.endswith("_max") for k in metrics)


def test_qps_plan_is_verified_on_the_rate_one_server_sustains(tmp_path):
    """target=qps: the load generator sends this server's share of min_request_rate, and the check compares the
    rate it sustained (departures vs arrivals) with that share, not the run's ramp-and-drain average."""
    plan = _plan(tmp_path, "target=qps", "target.min_request_rate=40", "workload.output_len=8",
                 "workload.input_len=32")
    replicas = yaml.safe_load(plan.read_text())["plan"]["replicas"]
    with running(stub(token_delay_ms=1, first_token_delay_ms=2)) as (url, _server):
        out = run_cli("action=verify", f"endpoint={url}", f"plan={plan}", "num_prompts=40", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["load"]["request_rate"] == pytest.approx(40 / replicas)
    rate = next(c for c in report["checks"] if c["metric"] == "request_rate_rps")  # deployment: server x replicas
    assert rate["limit"] == 40 and rate["passed"]
    assert report["summary"]["request_throughput"] * replicas < rate["measured"]  # the whole run counts its drain


REFUSING = [
    pytest.param(stub(served_model_names=("other/model",)), 404,
                 "The model `meta-llama/Meta-Llama-3-8B-Instruct` does not exist. Valid aliases: other/model.",
                 id="server-of-another-model"),
    pytest.param(stub(api_key="sk-verify-key"), 401, '{"error": "Unauthorized"}', id="server-needs-an-api-key"),
]


@pytest.mark.parametrize("config, status, said", REFUSING)
def test_a_server_that_refuses_every_request_is_no_verdict(tmp_path, config, status, said):
    """Every request refused (vLLM's 404 for a model it does not serve, its 401 without the key): exit 4, nothing
    measured so no verdict (issue 22 item 8), the report marked incomplete, and the server's own words on stderr."""
    plan = _plan(tmp_path, "target=latency", "workload.output_len=8", "workload.input_len=16")
    with running(config) as (url, server):
        out = run_cli("action=verify", f"endpoint={url}", f"plan={plan}", "num_prompts=6", cwd=tmp_path)
    assert out.returncode == 4, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["passed"] is False and report["complete"] is False
    assert f"{status}" in out.stderr and ("Unauthorized" in out.stderr if status == 401 else said in out.stderr)
    assert "TARGET MISSED" not in out.stdout and "PASSED" not in out.stdout
    assert server.stats.completions == 0


def test_kept_up_tells_a_stable_server_from_an_overloaded_one():
    import numpy as np

    from planner.simulate import kept_up

    sent = np.linspace(0, 10, 101)  # 10 req/s
    assert kept_up(sent, sent + 0.5) == pytest.approx(1.0)  # every request done 0.5 s after it was sent
    served = np.arange(101) / 5.0 + 0.5  # the server finishes 5 per second, however fast they come
    assert kept_up(sent, served) == pytest.approx(0.5, rel=0.02)


def test_host_speed_scales_a_closed_loop_prediction_by_what_the_host_delivered():
    """A CPU host that ran the speed probe at half its calibrated speed: under a closed loop each predicted time
    doubles and the throughput halves (verify.host_speed, compare); an open loop and a GPU host are not adjusted."""
    from conftest import request_for
    from planner import calibration, loadgen, verify
    from types import SimpleNamespace

    from planner.plan import Dist

    cpu = request_for("model=tiny-llama", "hw=cpu")
    cal = calibration.calibration(cpu.hw.gpu.name).on_host(cpu.hw.gpu.interpreter_speed_mops)
    assert cal.sampled_speed_mops > 0, "conf/calibration/cpu.yaml records the speed it was measured at"
    host = {"cpu_speed": {"effective_mops": cal.sampled_speed_mops / 2, "p10_mops": 1.0, "p90_mops": 9.0,
                          "samples": 40}}
    closed = loadgen.LoadSpec(base_url="http://127.0.0.1:1", model="m", input_len=8, output_len=8, num_prompts=8,
                              max_concurrency=8)
    speed = verify.host_speed(cpu, closed, host)
    assert speed["ratio"] == pytest.approx(0.5, abs=2e-3), speed
    opened = loadgen.LoadSpec(base_url="http://127.0.0.1:1", model="m", input_len=8, output_len=8, num_prompts=8,
                              request_rate=2.0)
    assert verify.host_speed(cpu, opened, host)["ratio"] is None
    assert verify.host_speed(request_for("model=llama3-8b", "hw=h100x1"), closed, host) is None
    assert verify.host_speed(cpu, closed, {}) is None  # not sampled

    d = Dist(mean=10.0, quantiles=((50.0, 10.0), (90.0, 12.0)))
    pred = SimpleNamespace(ttft_ms=d, tpot_ms=d, e2e_latency_ms=d, output_throughput_tok_s=1000.0)  # what compare reads
    summary = {"median_ttft_ms": 20.0, "p90_ttft_ms": 24.0, "median_tpot_ms": 20.0, "p90_tpot_ms": 24.0,
               "median_e2el_ms": 20.0, "p90_e2el_ms": 24.0, "output_throughput": 500.0}
    rows = {r["metric"]: r for r in verify.compare(summary, pred, 1, speed["ratio"])}
    assert rows["p50_ttft_ms"]["error_pct"] == -50.0
    assert rows["p50_ttft_ms"]["at_host_speed"] == pytest.approx(20.0, rel=1e-2)
    assert abs(rows["p90_tpot_ms"]["error_at_host_speed_pct"]) < 1
    assert rows["output_throughput"]["error_pct"] == 100.0
    assert rows["output_throughput"]["at_host_speed"] == pytest.approx(500.0, rel=1e-2)
    assert all("at_host_speed" not in r for r in verify.compare(summary, pred, 1, None))


def test_speed_sampler_measures_the_probe_on_its_own_thread_clock():
    import time

    from planner import hostload

    sampler = hostload.SpeedSampler(every_s=0.02)
    time.sleep(0.5)
    got = sampler.stop()
    assert got is not None and got["samples"] >= 4, got
    assert 0 < got["p10_mops"] <= got["median_mops"] <= got["p90_mops"], got
    assert hostload.SpeedSampler(every_s=10).stop() is None  # no sample: no figure

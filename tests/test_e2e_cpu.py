"""The whole loop on this machine: plan the tiny model on the CPU, launch real vLLM (CPU build), load-test it,
check the report, and leave nothing running. CI installs the `cpu` extra, so this runs there."""

import json
import subprocess
import sys

import psutil
import pytest
import yaml

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


def _vllm_processes(cwd=None):
    """vLLM processes that are running (zombies are exited), started in `cwd` when given: the servers this test's
    planner launched inherit its working directory, other vLLM servers on the machine do not."""
    out = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
            if p.info["status"] == psutil.STATUS_ZOMBIE:  # exited, waiting to be reaped: not running
                continue
            if ("VLLM::" in text or "backends.vllm_cli" in text) and \
                    (cwd is None or p.cwd() == str(cwd)):
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


def _none_left(cwd) -> None:
    for pid in _vllm_processes(cwd):  # the planner has exited; give the kernel a moment to finish the teardown
        try:
            psutil.Process(pid).wait(timeout=10)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass
    assert not _vllm_processes(cwd), "vLLM processes left running"


def _complete(report) -> bool:
    """report.json exists from the start of a run ("complete": false); the verdict is there once complete."""
    try:
        return json.loads(report.read_text()).get("complete") is True
    except (OSError, ValueError):
        return False


def test_plan_launch_verify_report_teardown(tmp_path):
    """A real SLO verdict: bounded TTFT/TPOT/E2E (generous for this CPU: the tiny model's steps take milliseconds)
    are checked at p90 on what the server measured, with the load the plan was predicted under."""
    run = subprocess.run([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "target=best-effort",
                          "target.ttft_ms=20000", "target.tpot_ms=1000", "target.e2e_latency_ms=60000",
                          "action=verify", "num_prompts=16", "workload.output_len=64", "workload.input_len=128",
                          "out=plans/tiny-llama-cpu-best-effort.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    outdir = tmp_path / "plans" / "tiny-llama-cpu-best-effort"
    report = json.loads((outdir / "report.json").read_text())
    s = report["summary"]
    assert s["completed"] == 16 and s["failed"] == 0 and report["passed"] and report["complete"]
    assert s["output_throughput"] > 0
    checks = {c["metric"]: c for c in report["checks"]}
    assert set(checks) == {"p90_ttft_ms", "p90_tpot_ms", "p90_e2el_ms"}, report["checks"]
    assert all(c["measured"] <= c["limit"] and c["passed"] for c in checks.values())
    # A 2-core runner's API server can fall behind 500 streams and send each answer in one chunk (CI, 2026-12-07:
    # mean TTFT == mean E2E): the report must say so rather than present TPOT 0 as a measurement.
    streaming = report["streaming"]
    assert streaming["multi_token_requests"] == 16 and streaming["mean_tokens_per_chunk"] >= 1
    if streaming["merged"]:
        assert "one chunk" in streaming["warning"] and "one chunk" in run.stderr
        assert s["mean_ttft_ms"] <= s["mean_e2el_ms"] and checks["p90_ttft_ms"]["measured"] > 0
    else:
        assert streaming["warning"] == "" and s["mean_ttft_ms"] < s["mean_e2el_ms"]
        assert all(c["measured"] > 0 for c in checks.values())
    assert checks["p90_tpot_ms"]["measured"] == pytest.approx(s["p90_tpot_ms"])  # the server's own p90
    assert report["load"]["offered"]["concurrency"] == report["load"]["max_concurrency"]  # the predicted load
    requested = report["load"]["output_len"]
    assert 16 * requested * 0.5 <= s["total_output_tokens"] <= 16 * requested * 1.5  # lengths vary +-50%
    server = report["server"]
    assert server["kv_cache_tokens_reported"] == server["kv_cache_tokens_planned"]  # vLLM's own number, exactly
    for name in ("server.log", "latency_cdf.png", "over_time.png", "predicted_vs_measured.png", "argv.txt"):
        assert (outdir / name).is_file(), name
    assert "KV cache size" in (outdir / "server.log").read_text()
    _none_left(tmp_path)


def test_kill_9_while_serving_exits_4_with_the_log_tail_and_no_orphans(tmp_path):
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "target=best-effort",
                             "action=launch", "num_prompts=4", "workload.output_len=16", "workload.input_len=32",
                             "out=plans/tiny-llama-cpu-best-effort.yaml"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        report = tmp_path / "plans" / "tiny-llama-cpu-best-effort" / "report.json"
        deadline = time.monotonic() + 900
        while not _complete(report) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _complete(report), proc.communicate(timeout=30)
        time.sleep(1.0)  # now serving
        server = next(p for p in psutil.Process(proc.pid).children(recursive=True)
                      if "backends.vllm_cli" in " ".join(p.cmdline()))
        killed_at = time.monotonic()
        os.kill(server.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, err[-3000:]
    print(f"kill -9 → planner exit {proc.returncode} after {took:.1f} s")
    assert took < 4 and "stopped while serving" in err and "log" in err.lower()
    _none_left(tmp_path)


def test_taken_port_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "target=best-effort",
                              "action=verify", f"port={port}"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert run.returncode == 2 and f"{port}" in run.stderr and "Fix:" in run.stderr and "Traceback" not in run.stderr


def _start(tmp_path, action: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "target=best-effort",
                             f"action={action}", "workload.output_len=16", "workload.input_len=32",
                             "out=plans/tiny-llama-cpu-best-effort.yaml", *extra],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, done, what: str, timeout_s: float = 900) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not done() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert done(), f"never saw {what}: " + str(proc.communicate(timeout=30))


@pytest.mark.parametrize("action, wait_for", [
    pytest.param("launch", "report.json", id="launch-while-serving"),
    pytest.param("verify", "POST /v1/completions", id="verify-during-the-load-test"),
])
def test_ctrl_c_exits_130_and_leaves_no_process(tmp_path, action, wait_for):
    """Ctrl-C is how a user stops action=launch (and aborts a verify): the server's whole tree goes, exit 130."""
    import signal
    import time

    outdir = tmp_path / "plans" / "tiny-llama-cpu-best-effort"
    proc = _start(tmp_path, action, "num_prompts=400" if action == "verify" else "num_prompts=4")
    try:
        if wait_for == "report.json":
            _wait_for(proc, lambda: _complete(outdir / "report.json"), "the first report")
        else:
            log = outdir / "server.log"
            _wait_for(proc, lambda: log.exists() and wait_for in log.read_text(errors="replace"), "the load test")
        time.sleep(1.0)
        assert _vllm_processes(tmp_path), "the server runs before Ctrl-C"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "internal error" not in err and "Traceback" not in err, err[-3000:]
    _none_left(tmp_path)
    if action == "verify":  # interrupted before its verdict: no report that looks like one
        assert json.loads((outdir / "report.json").read_text())["complete"] is False


KEY = "sk-e2e-4f9c1d"  # a test key: the server requires it, nothing the planner writes may contain it


@pytest.mark.parametrize("extra, code, says", [
    pytest.param((), 4, "api_key_env=VLLM_API_KEY", id="key-in-env-not-named-is-diagnosed-at-once"),
    pytest.param(("api_key_env=VLLM_API_KEY",), 0, None, id="named-key-is-sent-and-verifies"),
])
def test_api_key_from_the_environment(tmp_path, extra, code, says):
    """vLLM reads VLLM_API_KEY itself (vllm/envs.py:820) and then guards /v1 with it."""
    import os
    import time

    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "target=best-effort",
                          "action=verify", "num_prompts=8", "workload.output_len=16", "workload.input_len=32",
                          "out=plans/tiny-llama-cpu-best-effort.yaml", *extra],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "VLLM_API_KEY": KEY})
    took = time.monotonic() - t0
    print(f"{extra}: exit {run.returncode} after {took:.0f} s")
    assert run.returncode == code, run.stderr[-3000:]
    if says:
        assert says in run.stderr and "401" in run.stderr and took < 600, run.stderr[-3000:]
    outdir = tmp_path / "plans" / "tiny-llama-cpu-best-effort"
    if code == 0:
        report = json.loads((outdir / "report.json").read_text())
        assert report["passed"] and report["complete"] and report["summary"]["failed"] == 0
        assert "--api-key" in (outdir / "argv.txt").read_text() and "${VLLM_API_KEY}" in (outdir / "argv.txt").read_text()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    leaks = [str(p) for p in written if KEY in p.read_text(errors="replace")]
    assert not leaks and KEY not in run.stdout + run.stderr, leaks
    _none_left(tmp_path)


def test_readme_whole_loop_measures_what_the_plan_predicted(tmp_path):
    """README's whole loop as it is (the plan's load: 128 requests in flight, the workload's 200, settled as the
    plan predicts it): exit 0 (the plan said it meets the target, and it must), and output throughput, p50 TPOT and
    p50 E2E within a factor of 2 of the prediction at the speed the host ran (report.json `at_host_speed`).

    Why at the host's speed: this project's 2-core VM ran vLLM's worker step at 12 ms and then 23 ms of thread CPU
    time for the same batch in one run, and served this loop between 3,667 and 8,616 tokens/s on one day; CI measured
    4,818 against a prediction of 10,105 calibrated in a fast hour. A bound on the raw prediction measures the hour,
    not the model. The report samples the worker core's speed during the run (planner/hostload.py, whose speed
    followed the worker's step with correlation 0.96 within a run) and states the prediction at it; the raw error is
    printed. It does not catch all of the change from run to run: two runs here sampled 3.70 and 3.71 and measured
    4,297 and 3,274 tok/s (at the host's speed -0.1% and +31%; docs/perf-model.md, 'The host's own speed, sampled').
    A run during which other processes or the hypervisor (steal time) took half a core or more measures the
    machine's load, not the plan: it is skipped, with the numbers. TTFT is bounded by the exit code (p90 within the
    target's 1,000 ms): CI once measured 1,623 ms when the server ran in a session of its own and streamed every
    token (docs/perf-model.md, 'The front end, fixed and modelled'); the plan now streams every 16th token, and the
    served chunks say so."""
    run = subprocess.run([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "action=verify"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    report = json.loads((tmp_path / "plans" / "tiny-llama-cpu-balanced" / "report.json").read_text())
    host = report["server"]["host"]
    rows = {r["metric"]: r for r in report["predicted_vs_measured"]}
    table = "; ".join(f"{m} predicted {r['predicted']:.1f} (at host speed {r.get('at_host_speed', float('nan')):.1f}) "
                      f"measured {r['measured']:.1f} ({r['error_pct']:+.0f}%, at host speed "
                      f"{r.get('error_at_host_speed_pct', float('nan')):+.0f}%)" for m, r in rows.items())
    speed = yaml.safe_load((tmp_path / "plans" / "tiny-llama-cpu-balanced.yaml").read_text())["request"]["hw"]["gpu"]
    print(f"{table}; host {host}; {report['server'].get('host_speed')}; CPython {speed.get('interpreter_speed_mops')} "
          "M probe iterations/s (calibrated at conf/calibration/cpu.yaml's interpreter_speed_mops)")
    if host["other_processes_cores"] >= 0.5 or host.get("steal_cores", 0.0) >= 0.5:
        pytest.skip(f"other processes took {host['other_processes_cores']} and the hypervisor "
                    f"{host.get('steal_cores', 0.0)} of {host['host_cores']} cores during the run: not a measurement "
                    f"of the plan alone ({table})")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]  # the plan said it meets the target
    assert report["load"]["settle"] == report["load"]["max_concurrency"] == 128
    assert "--stream-interval 16" in (tmp_path / "plans" / "tiny-llama-cpu-balanced" / "argv.txt").read_text()
    assert 8 < report["streaming"]["mean_tokens_per_chunk"] <= 16, report["streaming"]
    assert report["server"]["host_speed"]["ratio"] > 0, report["server"]  # sampled on the worker's core
    # vLLM binds the worker to all cores but one (reserved for the other processes): sampled there
    assert host["cpu_speed"]["cores"] and len(host["cpu_speed"]["cores"]) < host["host_cores"], host
    for metric in ("output_throughput", "p50_tpot_ms", "p50_e2el_ms"):
        err = rows[metric]["error_at_host_speed_pct"] / 100
        assert 0.5 <= 1 + err <= 2.0, f"{metric}: {err:+.0%} at the host's speed (limit: a factor of 2); {table}"
    _none_left(tmp_path)

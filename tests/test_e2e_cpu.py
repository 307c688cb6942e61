"""The whole loop on this machine: plan the tiny model on the CPU, launch real vLLM (CPU build), load-test it,
check the report, and leave nothing running. CI installs the `cpu` extra, so this runs there."""

import json
import subprocess
import sys

import psutil
import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


def _vllm_processes():
    out = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
            if p.info["status"] == psutil.STATUS_ZOMBIE:  # exited, waiting to be reaped: not running
                continue
        except psutil.Error:
            continue
        if "VLLM::" in text or "vllm.entrypoints.openai.api_server" in text:
            out.append(p.pid)
    return out


def test_plan_launch_verify_report_teardown(tmp_path):
    before = set(_vllm_processes())
    run = subprocess.run([sys.executable, "-m", "planner", "model=tiny-llama", "hw=cpu", "target=best-effort",
                          "action=verify", "num_prompts=16", "workload.output_len=64", "workload.input_len=128"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    outdir = tmp_path / "plans" / "tiny-llama-cpu-best-effort"
    report = json.loads((outdir / "report.json").read_text())
    s = report["summary"]
    assert s["completed"] == 16 and s["failed"] == 0 and report["passed"]
    assert s["output_throughput"] > 0 and s["mean_ttft_ms"] < s["mean_e2el_ms"]
    requested = report["load"]["output_len"]
    assert 16 * requested * 0.5 <= s["total_output_tokens"] <= 16 * requested * 1.5  # lengths vary +-50%
    server = report["server"]
    assert server["kv_cache_tokens_reported"] == server["kv_cache_tokens_planned"]  # vLLM's own number, exactly
    for name in ("server.log", "latency_cdf.png", "over_time.png", "predicted_vs_measured.png", "argv.txt"):
        assert (outdir / name).is_file(), name
    assert "KV cache size" in (outdir / "server.log").read_text()
    left = set(_vllm_processes()) - before
    for pid in left:  # the planner has exited; give the kernel a moment to finish tearing children down
        try:
            psutil.Process(pid).wait(timeout=10)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass
    assert set(_vllm_processes()) <= before, "vLLM processes left running"

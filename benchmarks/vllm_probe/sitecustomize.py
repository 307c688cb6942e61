"""Per-step timing probe for a vLLM CPU server, loaded by benchmarks/cpu_serve.py (PYTHONPATH=this folder and
VLLM_PROBE_DIR=<dir> in the server's environment; every Python process vLLM spawns inherits both).

It wraps, once their modules are imported, the functions of vLLM 0.32.0 that make up one engine step on a CPU
(async scheduling is off there: vllm/platforms/cpu.py:331, so the step is serial):
  EngineCore process: Scheduler.schedule (v1/core/sched/scheduler.py:591) and Scheduler.update_from_output
    (scheduler.py:2026), called by EngineCore.step (v1/engine/core.py:668-697);
  worker process: GPUModelRunner.execute_model (v1/worker/gpu_model_runner.py:3940) and sample_tokens (:4304),
    which CPUModelRunner inherits (v1/worker/cpu_model_runner.py:23).
Each call's wall time (perf_counter) and the calling thread's CPU time (time.thread_time: unaffected by other
processes taking the core) go to <dir>/<role>-<pid>.jsonl with the step's batch (requests, tokens). Nothing in the
calls themselves changes. Without VLLM_PROBE_DIR this file does nothing.
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading
import time

_DIR = os.environ.get("VLLM_PROBE_DIR")
_TARGETS = {"vllm.v1.core.sched.scheduler": ("Scheduler", ("schedule", "update_from_output")),
            "vllm.v1.worker.gpu_model_runner": ("GPUModelRunner", ("execute_model", "sample_tokens"))}
_rows: list = []
_lock = threading.Lock()


def _flush() -> None:
    with _lock:
        if not _rows:
            return
        with open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in _rows)
        _rows.clear()


def _batch(out) -> dict:
    """What a SchedulerOutput (v1/core/sched/output.py:232) schedules: requests, tokens, one-token (decode)
    requests, new requests, and the tokens already in KV of every scheduled request (what attention reads)."""
    tokens = out.num_scheduled_tokens
    context = sum(r.num_computed_tokens for r in out.scheduled_new_reqs) + \
        sum(out.scheduled_cached_reqs.num_computed_tokens)
    return {"reqs": len(tokens), "tokens": int(out.total_num_scheduled_tokens),
            "decode": sum(1 for n in tokens.values() if n == 1), "new": len(out.scheduled_new_reqs),
            "context": int(context)}


def _wrap(name: str, fn):
    def timed(*args, **kwargs):
        w0, c0 = time.perf_counter(), time.thread_time()
        out = fn(*args, **kwargs)
        w1, c1 = time.perf_counter(), time.thread_time()
        sched = out if name == "schedule" else next((a for a in args[1:] if hasattr(a, "num_scheduled_tokens")), None)
        row = {"fn": name, "t": w0, "wall": w1 - w0, "cpu": c1 - c0, **(_batch(sched) if sched is not None else {})}
        with _lock:
            _rows.append(row)
        if len(_rows) >= 256:
            _flush()
        return out
    timed.__wrapped__ = fn
    return timed


class _Patch(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Wrap the target functions right after their module is executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        self._inner = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        cls_name, names = _TARGETS[module.__name__]
        cls = getattr(module, cls_name)
        for n in names:
            setattr(cls, n, _wrap(n, getattr(cls, n)))


def _periodic() -> None:
    while True:
        time.sleep(1.0)
        _flush()


if _DIR:
    sys.meta_path.insert(0, _Patch())
    threading.Thread(target=_periodic, daemon=True, name="vllm-probe-flush").start()

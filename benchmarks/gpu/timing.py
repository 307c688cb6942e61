"""Median time of a GPU callable, eager and CUDA-graph replayed, for the microbenchmarks in benchmarks/gpu/.

Warm-up first (on a side stream, as torch.cuda.graphs asks before a capture, NCCL collectives included), CUDA events
around each call or replay, the median over repeats. Capture failures fall back to eager and say so in the mode.
Without CUDA (`--dry-run` on a CPU machine) both report wall-clock medians, mode "cpu-wallclock".
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

GRAPH = "cuda-graph"
EAGER = "eager"
CPU = "cpu-wallclock"


@dataclass(frozen=True)
class Timing:
    """Median milliseconds per inner call (fn makes `n_inner` calls), how it was run, and why not as asked."""

    ms: float
    mode: str
    reps: int
    error: str | None = None


class Timer:
    """Times callables on one device. `agree(ok) -> bool` (optional) makes every rank of a process group take the
    same path after a capture attempt: a graph holding a collective that another rank left out would hang."""

    def __init__(self, torch, cuda: bool, repeats: int = 30, warmup: int = 3,
                 agree: Callable[[bool], bool] | None = None):
        self.torch, self.cuda, self.repeats, self.warmup, self.agree = torch, cuda, repeats, warmup, agree

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def _warm(self, fn) -> None:
        torch = self.torch
        if not self.cuda:
            fn()
            return
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # cuBLAS workspaces, NCCL communicators, autotuning: before any capture
            for _ in range(self.warmup):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        self.sync()

    def _events(self, run, n_inner: int) -> list:
        torch = self.torch
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.repeats)]
        for a, b in zip(starts, ends):  # back to back: eager includes the CPU's launch gaps, as a server sees them
            a.record()
            run()
            b.record()
        self.sync()
        return [a.elapsed_time(b) / n_inner for a, b in zip(starts, ends)]

    def _wall(self, fn, n_inner: int) -> list:
        out = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3 / n_inner)
        return out

    def eager(self, fn, n_inner: int = 1) -> Timing:
        self._warm(fn)
        if not self.cuda:
            return Timing(statistics.median(self._wall(fn, n_inner)), CPU, self.repeats)
        return Timing(statistics.median(self._events(fn, n_inner)), EAGER, self.repeats)

    def graph(self, fn, n_inner: int = 1) -> Timing:
        """fn captured once into a CUDA graph, the replays timed; eager (with the capture error) if capture fails."""
        torch = self.torch
        if not self.cuda:
            return self.eager(fn, n_inner)
        self._warm(fn)
        g, errors = None, []
        # "global" is torch's default; "thread_local" tolerates CUDA calls from other threads during the capture
        # (the NCCL watchdog's event queries), so a failure in the first is retried in the second.
        for capture_mode in ("global", "thread_local"):
            candidate = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(candidate, capture_error_mode=capture_mode):
                    fn()
                g = candidate
                break
            except Exception as e:  # noqa: BLE001 - a failed capture means "time it eagerly", recorded below
                errors.append(f"{capture_mode}: {type(e).__name__}: {str(e)[:160]}")
                try:
                    self.sync()
                except Exception as e2:  # noqa: BLE001
                    errors.append(f"sync after capture: {type(e2).__name__}: {str(e2)[:160]}")
        self.sync()
        err = ("graph capture failed: " + " | ".join(errors)) if errors else None  # kept if the retry captured
        ok = g is not None
        if self.agree is not None:
            agreed = self.agree(ok)
            if ok and not agreed:
                err = "graph capture failed on another rank"
            ok = agreed
        if not ok:
            g = None
            t = self.eager(fn, n_inner)
            return Timing(t.ms, EAGER, t.reps, err)
        g.replay()
        self.sync()
        ms = statistics.median(self._events(g.replay, n_inner))
        g = None
        return Timing(ms, GRAPH, self.repeats, err)


def timed(timer: Timer, how: str, fn, n_inner: int, errors: dict, name: str) -> Timing | None:
    """`fn` timed "graph" or "eager"; a fallback's reason or a failure goes to errors[name] (None is returned for a
    failure): one failed timing is an error entry, not a lost run."""
    try:
        t = timer.graph(fn, n_inner) if how == "graph" else timer.eager(fn, n_inner)
    except Exception as e:  # noqa: BLE001
        errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
        traceback.print_exc()
        return None
    if t.error:
        errors[name] = t.error
    return t


def versions(torch, cuda: bool) -> dict:
    """The GPU and software a measurement ran on (for each JSON row and the provenance block)."""
    if not cuda:
        return {"gpu": "cpu", "torch": str(torch.__version__), "cuda": None, "nccl": None}
    try:
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception as e:  # noqa: BLE001 - a build without NCCL still times single-GPU kernels
        nccl = f"unavailable ({type(e).__name__})"
    return {"gpu": torch.cuda.get_device_name(), "torch": str(torch.__version__), "cuda": torch.version.cuda,
            "nccl": nccl}

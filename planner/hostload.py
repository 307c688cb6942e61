"""How much of this host's CPU other processes took while a local run was measured.

On a CPU host (hw=cpu) the server, the engine and the load generator share the machine's few cores, so another
process that takes CPU during `action=verify` slows what is measured: vLLM's CPU worker binds its threads to fixed
cores (vllm/utils/ompmultiprocessing.py), and a second vLLM server on the same machine binds to the same ones. The
plan cannot predict that; the report says it (report.json `server.host`), from psutil: the machine's busy CPU
seconds minus those of the processes of the run (this process and the server's tree) over the run's wall time. On a
virtual machine the hypervisor can also take the cores away (steal time, /proc/stat): `steal_cores` says how much.

A virtual core can also run slower without any steal time. Measured on this project's 2-core development VM
(2026-12-07): vLLM's CPU worker took 12 ms of its thread's CPU time for a decode step of 128 sequences over 85k tokens
of context, then 23 ms for the same step a second later, for ten seconds, then 12 again; one calibration run served
half the tokens per second of another an hour earlier. So `SpeedSampler` times a fixed loop (planner/discover.py's
interpreter probe, about a millisecond of it) every quarter second during the run, on its own thread's CPU clock
(time.thread_time: waiting for a core or the GIL does not count), on the worker's own core (engine_cores): there its
speed followed the worker's step (correlation 0.96 of 1/speed with the step's CPU time over 2 s bins, their product
within +-11%), where on the other core it did not (-0.33 to -0.59). The report gives the median and the effective
speed (the harmonic mean: the speed at which the run's work took the time it took).
"""

import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import psutil

NOTABLE_CORES = 0.25
"""Other processes' share of the host above which the verdict says the measurement is not of the plan alone."""


def _busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0)


def _steal() -> float:
    """CPU seconds the hypervisor ran other guests on this VM's cores (Linux; 0 elsewhere)."""
    return getattr(psutil.cpu_times(), "steal", 0.0)


def _cpu(procs: dict[int, psutil.Process], seen: dict[int, float]) -> None:
    """Remember each process's latest CPU seconds (a process that has exited keeps its last reading)."""
    for pid, p in procs.items():
        try:
            t = p.cpu_times()
            seen[pid] = max(seen.get(pid, 0.0), t.user + t.system)
        except psutil.Error:
            pass


class SpeedSampler:
    """The host's CPython speed (million probe iterations per second of thread CPU time, the unit of
    planner/discover.py measure_interpreter) sampled every `every_s` seconds on a daemon thread until stop()."""

    def __init__(self, every_s: float = 0.25, rounds: int = 10, cores: Optional[frozenset] = None):
        from planner.discover import _probe_round, _Seq

        self._round, self._batch, self._rounds, self.cores = _probe_round, [_Seq(i) for i in range(256)], rounds, cores
        self._every, self._stop = every_s, threading.Event()
        self.samples: list[float] = []
        self._thread = threading.Thread(target=self._run, name="host-speed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.cores:  # this thread only (Linux: pid 0 is the calling thread)
            try:
                os.sched_setaffinity(0, self.cores)
            except (AttributeError, OSError):
                pass
        table: dict = {}
        while not self._stop.wait(self._every):
            c0 = time.thread_time()
            n = sum(self._round(self._batch, table) for _ in range(self._rounds))
            spent = time.thread_time() - c0
            if spent > 0:
                self.samples.append(n / spent / 1e6)

    def stop(self) -> Optional[dict]:
        """{effective_mops (harmonic mean), median_mops, p10_mops, p90_mops, samples, cores}, or None with fewer than 4
        samples (a run of a second)."""
        self._stop.set()
        self._thread.join(timeout=5)
        if len(self.samples) < 4:
            return None
        q = statistics.quantiles(self.samples, n=10)
        return {"effective_mops": round(statistics.harmonic_mean(self.samples), 2),
                "median_mops": round(statistics.median(self.samples), 2), "p10_mops": round(q[0], 2),
                "p90_mops": round(q[-1], 2), "samples": len(self.samples),
                "cores": sorted(self.cores) if self.cores else None}


@dataclass
class HostLoad:
    """CPU of the run's processes (`roots` and their descendants) from creation to `stop()`."""

    roots: tuple[int, ...]
    t0: float = 0.0
    busy0: float = 0.0
    steal0: float = 0.0
    sample_speed: bool = False
    speed: Optional[SpeedSampler] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.t0, self.busy0, self.steal0 = time.monotonic(), _busy(), _steal()
        if self.sample_speed:
            self.speed = SpeedSampler(cores=engine_cores(self.roots))
        self._start: dict[int, float] = {}
        self._seen: dict[int, float] = {}
        procs = self._procs()
        _cpu(procs, self._start)
        self._seen.update(self._start)

    def _procs(self) -> dict[int, psutil.Process]:
        out: dict[int, psutil.Process] = {}
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                out[pid] = root
                out.update({c.pid: c for c in root.children(recursive=True)})
            except psutil.Error:
                pass
        return out

    def stop(self) -> dict:
        """{host_cores, wall_s, run_cores, other_processes_cores, steal_cores[, cpu_speed]} over the run (cpu_speed:
        SpeedSampler's figures, when sampled)."""
        speed = self.speed.stop() if self.speed is not None else None
        _cpu(self._procs(), self._seen)
        wall = max(time.monotonic() - self.t0, 1e-9)
        run = sum(v - self._start.get(pid, 0.0) for pid, v in self._seen.items())
        other = max((_busy() - self.busy0 - run) / wall, 0.0)
        out = {"host_cores": psutil.cpu_count() or 1, "wall_s": round(wall, 2), "run_cores": round(run / wall, 2),
               "other_processes_cores": round(other, 2), "steal_cores": round((_steal() - self.steal0) / wall, 2)}
        return out | ({"cpu_speed": speed} if speed else {})


def engine_cores(roots: tuple[int, ...]) -> Optional[frozenset]:
    """The cores the engine's worker is bound to: the narrowest CPU affinity among the processes under `roots` (vLLM's
    CPU worker binds its threads to all cores but those it reserves, vllm/utils/ompmultiprocessing.py), or None when
    every process may run anywhere."""
    everywhere = set(range(psutil.cpu_count() or 1))
    best: Optional[set] = None
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            continue
        for p in procs:
            try:
                aff = set(p.cpu_affinity())
            except (psutil.Error, AttributeError):
                continue
            if aff and aff != everywhere and (best is None or len(aff) < len(best)):
                best = aff
    return frozenset(best) if best else None


def busy_before(seconds: float = 1.0) -> float:
    """Cores other processes keep busy right now (over `seconds`), measured before a run starts."""
    probe = HostLoad((os.getpid(),))
    time.sleep(seconds)
    return probe.stop()["other_processes_cores"]

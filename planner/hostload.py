"""How much of this host's CPU other processes took while a local run was measured.

On a CPU host (hw=cpu) the server, the engine and the load generator share the machine's few cores, so another
process that takes CPU during `action=verify` slows what is measured: vLLM's CPU worker binds its threads to fixed
cores (vllm/utils/ompmultiprocessing.py), and a second vLLM server on the same machine binds to the same ones. The
plan cannot predict that; the report says it (report.json `server.host`), from psutil: the machine's busy CPU
seconds minus those of the processes of the run (this process and the server's tree) over the run's wall time. On a
virtual machine the hypervisor can also take the cores away (steal time, /proc/stat): `steal_cores` says how much.
"""

import time
from dataclasses import dataclass

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


@dataclass
class HostLoad:
    """CPU of the run's processes (`roots` and their descendants) from creation to `stop()`."""

    roots: tuple[int, ...]
    t0: float = 0.0
    busy0: float = 0.0
    steal0: float = 0.0

    def __post_init__(self) -> None:
        self.t0, self.busy0, self.steal0 = time.monotonic(), _busy(), _steal()
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

    def stop(self) -> dict[str, float]:
        """{host_cores, wall_s, run_cores, other_processes_cores, steal_cores} over the run."""
        _cpu(self._procs(), self._seen)
        wall = max(time.monotonic() - self.t0, 1e-9)
        run = sum(v - self._start.get(pid, 0.0) for pid, v in self._seen.items())
        other = max((_busy() - self.busy0 - run) / wall, 0.0)
        return {"host_cores": psutil.cpu_count() or 1, "wall_s": round(wall, 2), "run_cores": round(run / wall, 2),
                "other_processes_cores": round(other, 2), "steal_cores": round((_steal() - self.steal0) / wall, 2)}


def busy_before(seconds: float = 1.0) -> float:
    """Cores other processes keep busy right now (over `seconds`), measured before a run starts."""
    import os

    probe = HostLoad((os.getpid(),))
    time.sleep(seconds)
    return probe.stop()["other_processes_cores"]

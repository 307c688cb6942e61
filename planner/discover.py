"""Discover this machine's accelerators (pynvml) or, with none, its CPU (psutil), as config overrides.

`hw=auto` and `hw=cpu` ask for it; the result is a list of Hydra overrides applied on a second composition, so
the discovered values go through the same validation as anything a user types.
"""

import logging
import re
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)

# NVML product names → conf/gpu entries. Matched in order on the lower-cased name; first hit wins.
# Names as nvidia-smi prints them, e.g. "NVIDIA H800 80GB HBM3", "NVIDIA B300 SXM6 AC", "NVIDIA GB200",
# "NVIDIA RTX PRO 6000 Blackwell Server Edition", "NVIDIA GeForce RTX 4090" (public nvidia-smi logs; conf/gpu sources).
_NVML_NAMES = [
    (r"h200", "h200"),
    (r"h100.*pcie", "h100-pcie"),
    (r"h100", "h100-sxm"),
    (r"h800.*hbm3", "h800"),  # the SXM5 board; H800 PCIe / NVL are other cards
    (r"\bh20\b", "h20"),
    (r"gb200", "gb200"),  # before b200: "NVIDIA GB200" contains it
    (r"b200", "b200"),
    (r"b300", "b300"),
    (r"a100.*(80|sxm4-80)", "a100-80g"),
    (r"a100", "a100-40g"),
    (r"l40s", "l40s"),
    (r"\bl40\b", "l40"),
    (r"\bl20\b", "l20"),
    (r"\bl4\b", "l4"),
    (r"a10g", "a10g"),
    (r"\ba10\b", "a10"),
    (r"rtx 4090$", "rtx4090"),  # not the RTX 4090 D (fewer SMs)
    (r"rtx pro 6000 blackwell server", "rtx-pro-6000"),
    (r"\bt4\b", "t4"),
    (r"v100", "v100"),
]


@dataclass(frozen=True)
class Discovered:
    """What was found, and the overrides that describe it."""

    summary: str
    overrides: tuple[str, ...]


def catalog_name(nvml_name: str) -> Optional[str]:
    """The conf/gpu entry for an NVML product name, e.g. 'NVIDIA H100 80GB HBM3' → 'h100-sxm'."""
    low = nvml_name.lower()
    for pattern, name in _NVML_NAMES:
        if re.search(pattern, low):
            return name
    return None


def gpus() -> list[tuple[str, float]]:
    """(NVML name, memory GiB) of each local NVIDIA GPU; empty when there is no driver or no GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # pynvml raises NVMLError_LibraryNotFound etc. when no driver: no GPU here
        log.debug("NVML unavailable: %s", exc)
        return []
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            found.append((name, total / 2**30))
        return found
    finally:
        pynvml.nvmlShutdown()


def _two_digits(x: float) -> float:
    """Round to 2 significant digits, so run-to-run noise does not change the plan file."""
    return float(f"{x:.2g}")


def measure_cpu() -> tuple[float, float, float]:
    """(memory bandwidth GB/s, fp32 matmul TFLOP/s, bf16 matmul TFLOP/s) of this CPU: best of a few short runs.

    Bandwidth: copying a 64 MiB array reads and writes it (2 × 64 MiB moved). Matmul: a 1024³ fp32 GEMM on the
    BLAS numpy uses, all cores, after a warm-up call. bf16 (what vLLM's CPU backend computes in; AMX or AVX512-BF16
    make it several times the fp32 rate): a 2048³ GEMM with torch when it is installed (the cpu extra), else the fp32
    figure.
    """
    import time

    import numpy as np

    src = np.ones(8 * 2**20)  # 64 MiB of float64
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    bandwidth = 2 * src.nbytes / best / 1e9
    a = np.ones((1024, 1024), dtype=np.float32)
    a @ a  # warm the BLAS threads up before timing
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    tflops = 2 * 1024**3 / best / 1e12
    return _two_digits(bandwidth), _two_digits(tflops), _two_digits(_bf16_tflops() or tflops)


def _bf16_tflops() -> Optional[float]:
    import time

    try:
        import torch
    except ImportError:
        return None
    a = torch.ones((2048, 2048), dtype=torch.bfloat16)  # 2048³: large enough for the AMX/AVX512 kernels' peak
    a @ a
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e12


class _Seq:
    """A stand-in for an engine's per-request bookkeeping (the probe below walks a batch of them)."""

    __slots__ = ("rid", "tokens", "budget", "done")

    def __init__(self, rid: int):
        self.rid, self.tokens, self.budget, self.done = rid, 0, 64 + rid % 7, False


def _probe_round(batch: list, table: dict) -> int:
    """One 'engine step' of pure-Python bookkeeping: attribute reads and writes, dict and list traffic, a call per
    sequence: what a serving engine's scheduler and output processing do per running request."""
    out = []
    for seq in batch:
        seq.tokens += 1
        table[seq.rid] = table.get(seq.rid, 0) + seq.tokens
        if seq.tokens >= seq.budget:
            seq.tokens, seq.done = 0, True
        out.append((seq.rid, seq.tokens))
    return len(out)


def measure_interpreter() -> float:
    """This host's CPython speed: millions of per-sequence probe iterations (_probe_round) a second on one thread,
    best of 15 rounds of 40 steps x 256 sequences (about 10 ms each here). vLLM's scheduler, its processes' hand-off
    and its API server are Python on one thread each: their costs (conf/calibration/cpu.yaml, measured on one host)
    scale by the ratio of this figure between the calibrating host and the planning one (planner/perf.py)."""
    import time

    batch = [_Seq(i) for i in range(256)]
    table: dict = {}
    best = float("inf")
    for _ in range(15):
        t0 = time.perf_counter()
        n = sum(_probe_round(batch, table) for _ in range(40))
        best = min(best, time.perf_counter() - t0)
    return n / best / 1e6


def measured_cpu(cores: int) -> tuple[float, float, float, float]:
    """(bandwidth GB/s, fp32 TFLOP/s, bf16 TFLOP/s, interpreter Mops/s) of this machine, measured once: kept in the
    planner's cache so the same machine plans the same way (a busy moment would otherwise change the plan). Delete
    ~/.cache/planner/cpu-profile.json to measure again."""
    import json
    import os
    import platform
    from pathlib import Path

    cache = Path(os.environ.get("PLANNER_CACHE_DIR", Path.home() / ".cache" / "planner")) / "cpu-profile.json"
    key = f"{platform.node()}|{platform.processor() or platform.machine()}|{cores}"
    names = ("bandwidth_gb_s", "fp32_tflops", "bf16_tflops", "interpreter_speed_mops")
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return tuple(float(saved[n]) for n in names)  # type: ignore[return-value]
    except (OSError, ValueError, KeyError):
        pass
    values = (*measure_cpu(), float(f"{measure_interpreter():.3g}"))  # 3 digits: its noise is 2%
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, **dict(zip(names, values))}))
    except OSError as exc:  # a read-only home still plans, just measuring each time
        log.debug("cannot cache the CPU profile: %s", exc)
    return values  # type: ignore[return-value]


def cpu_overrides() -> Discovered:
    """The CPU profile: physical cores and total memory (psutil), bandwidth and matmul speed (numpy, cached)."""
    import psutil

    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    mem_gib = psutil.virtual_memory().total / 2**30
    bandwidth, tflops, bf16, interpreter = measured_cpu(cores)
    return Discovered(
        summary=(f"no GPU asked for or found: using the CPU profile ({cores} cores, {mem_gib:.1f} GiB memory from "
                 f"psutil; {bandwidth:g} GB/s copy bandwidth, {tflops:g} TFLOP/s fp32 matmul measured with numpy, "
                 f"{bf16:g} bf16; Python {interpreter:g} M probe iterations/s)"),
        overrides=(
            "gpu@hw.gpu=cpu",
            f"hw.gpu.num_cores={cores}",
            f"hw.gpu.memory_gib={mem_gib:.1f}",
            f"hw.gpu.hbm_bandwidth_gb_s={bandwidth:g}",
            f"hw.gpu.dense_tflops_fp32={tflops:g}",
            f"hw.gpu.dense_tflops_fp16={tflops:g}",
            f"hw.gpu.dense_tflops_bf16={bf16:g}",
            f"hw.gpu.interpreter_speed_mops={interpreter:g}",
            "hw.gpus_per_node=1",
            "hw.intra_node=none",
        ),
    )


def local_overrides(want_gpu: bool = True) -> Discovered:
    """Overrides describing this machine: its GPUs when there are any (and `want_gpu`), else its CPU."""
    found = gpus() if want_gpu else []
    if not found:
        return cpu_overrides()
    name, mem_gib = found[0]
    entry = catalog_name(name)
    if entry is None:
        from planner.errors import InputError

        raise InputError(
            f"hw=auto found GPU '{name}' ({mem_gib:.1f} GiB), which is not in the catalog (conf/gpu/). "
            "Fix: name the closest catalog GPU with hw=<preset> (python -m planner --info defaults lists them) "
            "or add a conf/gpu/<name>.yaml for it."
        )
    mixed = {n for n, _ in found}
    summary = f"found {len(found)} x {name} ({mem_gib:.1f} GiB each, NVML) → gpu={entry}"
    if len(mixed) > 1:
        summary += f"; mixed GPUs {sorted(mixed)}: planning for the first model only"
    return Discovered(
        summary=summary,
        overrides=(
            f"gpu@hw.gpu={entry}",
            f"hw.gpus_per_node={len(found)}",
            f"hw.gpu.memory_gib={mem_gib:.2f}",
        ),
    )

"""`profile=nsys`: wrap the server launch in Nsight Systems with a bounded, API-triggered capture, and link the
.nsys-rep it writes from report.json.

vLLM's recipe (vllm-project/vllm docs/contributing/profiling.md, "Profile with NVIDIA Nsight Systems", and the
installed vllm 0.32.0): `nsys profile --trace-fork-before-exec=true --cuda-graph-trace=node
--capture-range=cudaProfilerApi ... vllm serve ... --profiler-config.profiler cuda`; with `profiler: cuda` the
server's POST /start_profile and /stop_profile (entrypoints/serve/profile/api_router.py:35-51, mounted only when a
profiler is configured) call torch.cuda.profiler start/stop on every worker (profiler/wrapper.py:662-676
CudaProfilerWrapper), which opens and closes nsys' capture range. ProfilerConfig (config/profiler.py:67-190) bounds
it: `max_iterations` engine steps after the start (then the workers stop the profiler themselves), `delay_iterations`
skipped first. VLLM_TORCH_PROFILER_DIR is gone in 0.32 (envs.py has no such variable): --profiler-config replaced it.
The docs advise VLLM_WORKER_MULTIPROC_METHOD=spawn under nsys. nsys writes the report when the server exits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from planner.errors import InputError

TRACE = "cuda,nvtx,osrt"  # CUDA API + kernels, vLLM's NVTX ranges (CudaProfilerWrapper annotates with nvtx), OS runtime
MAX_ITERATIONS = 200  # engine steps captured after /start_profile: seconds of decode, a report of tens of MB
DELAY_ITERATIONS = 10  # skip the first steps after the start (warm-up of the load test)
REPORT_DIR = "profile"
REPORT_SUFFIX = ".nsys-rep"


@dataclass(frozen=True)
class Capture:
    """What profile=nsys adds to one plan's launch: where the report goes and the API that bounds the capture."""

    report: str  # path of the .nsys-rep relative to the plan's artifact folder
    start_path: str = "/start_profile"
    stop_path: str = "/stop_profile"
    max_iterations: int = MAX_ITERATIONS


def check(plan, gpu) -> None:
    """InputError when nsys cannot profile this plan: vLLM's CUDA profiler hook, on an NVIDIA GPU."""
    from planner.specs import BackendName, DeviceKind

    if plan.backend is not BackendName.vllm:
        raise InputError(f"profile=nsys with backend={plan.backend.value}: the planner wraps vLLM only, whose "
                         "/start_profile and /stop_profile endpoints bound the capture (--profiler-config profiler "
                         "cuda). Fix: backend=vllm, or wrap the engine's command in nsys yourself.")
    if plan.disaggregation is not None:
        raise InputError(f"profile=nsys with a disaggregated plan ({plan.disaggregation.summary()}): argv.txt is "
                         "the decode server's, and the prefill server and router (pd/*.argv.txt) would run "
                         "unprofiled, so one report would not show the plan. Fix: plan.disaggregation=false to "
                         "profile one server, or wrap each role's command in nsys yourself.")
    if gpu.kind is DeviceKind.cpu or gpu.vendor != "nvidia":
        raise InputError(f"profile=nsys on {gpu.name}: Nsight Systems traces NVIDIA GPUs (CUDA), and vLLM's cuda "
                         "profiler needs one. Fix: profile on an NVIDIA GPU plan (hw=h100x1 ...), or drop profile=.")


def report_name(plan_name: str) -> str:
    return f"{REPORT_DIR}/{plan_name}"


def wrap(launch, plan_name: str):
    """The plan's launch block with its argv run under `nsys profile` and vLLM's CUDA profiler configured; the
    container artifacts stay as they are (the official image ships no nsys: a note says so)."""
    config = json.dumps({"profiler": "cuda", "delay_iterations": DELAY_ITERATIONS,
                         "max_iterations": MAX_ITERATIONS}, separators=(",", ":"), sort_keys=True)
    nsys = ("nsys", "profile", f"--trace={TRACE}", "--trace-fork-before-exec=true", "--cuda-graph-trace=node",
            "--capture-range=cudaProfilerApi", "--capture-range-end=stop", f"--output={report_name(plan_name)}",
            "--force-overwrite=true")
    argv = nsys + tuple(launch.argv) + ("--profiler-config", config)
    env = dict(sorted({**launch.env, "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}.items()))
    return replace(launch, argv=argv, env=env)


NOTE = ("profile=nsys: argv.txt runs the server under Nsight Systems (nsys must be installed there); docker.sh and the "
        "Kubernetes manifests serve unprofiled, since the official vLLM image ships no nsys.")


def capture(launch) -> Optional[Capture]:
    """The capture a rendered launch carries (its argv starts with `nsys profile`), or None."""
    argv = list(launch.argv)
    if argv[:2] != ["nsys", "profile"]:
        return None
    out = next(a.split("=", 1)[1] for a in argv if a.startswith("--output="))
    return Capture(report=out + REPORT_SUFFIX)


def local_argv(argv: list, cap: Optional[Capture], outdir: Path) -> list:
    """A wrapped argv run here: nsys' --output under the plan's artifact folder (the rendered one is relative to
    it, like every file the artifacts name)."""
    if cap is None:
        return argv
    stem = str(outdir / cap.report[:-len(REPORT_SUFFIX)])
    return [f"--output={stem}" if a.startswith("--output=") else a for a in argv]


def link(cap: Capture, outdir: Path) -> dict:
    """report.json's `profile` block: the tool, the report's path beside report.json, whether nsys wrote it."""
    path = outdir / cap.report
    return {"tool": "nsys", "report": cap.report, "written": path.is_file(),
            "bytes": path.stat().st_size if path.is_file() else 0, "max_iterations": cap.max_iterations,
            "view": f"nsys stats {cap.report}  (or open it in the Nsight Systems GUI)"}

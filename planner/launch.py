"""action=launch / action=verify: start the planned server here, wait until it is ready, load-test it against the
target, write report.json and plots beside the plan, and (verify) tear it down. On a startup failure that a
troubleshooting rule can fix (OOM, KV cache too small), re-plan with the rule's remedy and try again (bounded).

The local server listens on 127.0.0.1 and a free port: the rendered artifacts (for a cluster) bind 0.0.0.0:8000;
this is the one place that changes, and only the host and port.
"""

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

from planner.errors import InputError, LaunchFailed
from planner.specs import DeviceKind

log = logging.getLogger(__name__)

MAX_REMEDIATIONS = 2


@dataclass(frozen=True)
class Attempt:
    what: str
    why: str


def local_argv(argv: list[str], port: int) -> list[str]:
    """The rendered argv with this machine's programs (Python; `vllm` as backends.vllm_cli runs it), loopback host
    and the chosen port. The flags stay exactly as rendered."""
    from backends.vllm import LOCAL_PROGRAM

    programs = {"python3": (sys.executable,), "python": (sys.executable,), **LOCAL_PROGRAM}
    out = list(argv)
    if out and out[0] in programs:
        out[:1] = programs[out[0]]
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def local_api_key(argv: list[str], api_key_env: Optional[str]) -> tuple[list[str], dict[str, str]]:
    """The local argv without `--api-key ${NAME}`, and the child's environment carrying the key instead, so the key
    never shows in the process list or in our logs of it. Only vLLM launches here; it reads VLLM_API_KEY itself
    (vllm/envs.py:820, entrypoints/serve/middleware/register.py:33). InputError when the variable is unset."""
    if not api_key_env:
        return argv, {}
    from planner.endpoint import auth_headers

    key = auth_headers(api_key_env)["Authorization"].removeprefix("Bearer ")
    out = list(argv)
    ref = "${" + api_key_env + "}"
    if ref in out and out.index(ref) > 0 and out[out.index(ref) - 1] == "--api-key":
        i = out.index(ref)
        del out[i - 1:i + 1]
    return out, {"VLLM_API_KEY": key}


def run(req, compiled, plan_path: Path, replan: Callable[[list[str]], tuple], *, keep_serving: bool,
        num_prompts: Optional[int], ready_timeout_s: float, port: Optional[int],
        api_key_env: Optional[str] = None, gate=None, profile: Optional[str] = None) -> int:
    """Launch, verify, report; returns the exit code (0 verified, 5 target missed). Raises LaunchFailed (4). A
    failure a troubleshooting rule can relieve (its remedy's `relaunch` pins) is re-planned and tried again. With
    `gate` (planner/quality.Gate) the served model's accuracy is scored too and joins the verdict; with
    profile="nsys" the load test runs inside the server's bounded Nsight Systems capture (planner/profile.py)."""
    from planner import document, render
    from planner.rules.troubleshoot import relaunch_pins

    attempts: list[Attempt] = []
    extra: list[str] = []
    for attempt in range(MAX_REMEDIATIONS + 1):
        try:
            return _once(req, compiled, plan_path, keep_serving=keep_serving, num_prompts=num_prompts,
                         ready_timeout_s=ready_timeout_s, port=port, attempts=tuple(attempts),
                         api_key_env=api_key_env, gate=gate)
        except LaunchFailed as exc:
            fix = relaunch_pins(getattr(exc, "diagnoses", ()), document.plain(compiled.plan))
            if fix is None or attempt == MAX_REMEDIATIONS:
                raise
            diagnosis, remedy, pins = fix
            extra += [f"plan.{k}={v}" for k, v in pins.items()]
            attempts.append(Attempt(what=" ".join(extra), why=f"{diagnosis.rule.id}: {remedy.says}"))
            log.warning("launch failed (%s); re-planning with %s", diagnosis.rule.id, " ".join(extra))
            req, compiled = replan(extra)
            compiled = render.rendered(compiled, req, api_key_env, profile)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Serving:
    """A server this process started and that is ready: where it answers and how long it took."""

    base: str  # http://127.0.0.1:PORT
    server: object  # planner.process.Server
    log_path: Path
    ready_s: float


@contextlib.contextmanager
def started(req, compiled, outdir: Path, *, ready_timeout_s: float, port: Optional[int],
            api_key_env: Optional[str] = None) -> Iterator[Serving]:
    """Start the plan's server here (loopback, a free port), wait until it is ready, yield it; always torn down."""
    from backends import get
    from planner import process, profile, render

    launch = (compiled.launch or render.rendered(compiled, req, api_key_env).launch)
    port = port or process.free_port()
    process.check_port_free(port)
    argv = profile.local_argv(local_argv(list(launch.argv), port), profile.capture(launch), outdir)
    argv, key_env = local_api_key(argv, api_key_env)
    env = {k: v for k, v in launch.env.items() if not v.startswith("${")}  # secrets stay references
    env.update(key_env)
    local = Path(compiled.plan.model_path).is_dir()  # a local checkpoint needs no hub
    env.setdefault("HF_HUB_OFFLINE", "1" if local else env.get("HF_HUB_OFFLINE", "0"))
    base = f"http://127.0.0.1:{port}"
    spec = process.LaunchSpec(argv=tuple(argv), env=env, log_path=outdir / "server.log",
                              health_url=base + get(compiled.plan.backend).health_path,
                              models_url=base + "/v1/models", ready_timeout_s=ready_timeout_s,
                              secrets=tuple(key_env.values()), api_key_env=api_key_env)
    with process.Server(spec) as server, process.install_signal_handlers(server):  # entering starts it
        ready_s = server.wait_ready(progress=True)
        yield Serving(base, server, spec.log_path, ready_s)


def _once(req, compiled, plan_path: Path, *, keep_serving: bool, num_prompts, ready_timeout_s, port,
          attempts: tuple, api_key_env: Optional[str] = None, gate=None) -> int:
    from backends import get
    from planner import hostload, loadgen, plots, present, profile, render, verify

    outdir = render.artifact_dir(plan_path)
    outdir.mkdir(parents=True, exist_ok=True)
    verify.mark_started(outdir, plan_path.stem)
    if req.hw.gpu.kind is DeviceKind.cpu and (busy := hostload.busy_before()) > hostload.NOTABLE_CORES:
        log.warning("other processes keep %.2f of this host's cores busy: the engine shares them, so what is "
                    "measured includes their load (report.json server.host says how much during the run)", busy)
    cap = profile.capture(compiled.launch) if compiled.launch else None
    with started(req, compiled, outdir, ready_timeout_s=ready_timeout_s, port=port,
                 api_key_env=api_key_env) as serving:
        base, server = serving.base, serving.server
        reported = get(compiled.plan.backend).kv_cache_tokens(serving.log_path.read_text(errors="replace"))
        model_name = compiled.plan.served_model_name
        lspec = verify.load_spec(req, compiled, base, model_name, num_prompts=num_prompts,
                                 time_limit_s=max(60.0, ready_timeout_s))
        lspec = replace(lspec, api_key_env=api_key_env)
        t0 = time.perf_counter()
        # this process (the load generator) and the server's tree; on a CPU host also the host's speed meanwhile
        host = hostload.HostLoad((os.getpid(),), sample_speed=req.hw.gpu.kind is DeviceKind.cpu)
        with _profiling(cap, base, api_key_env):
            result = loadgen.run_sync(lspec)
        died = server.watch()
        if died:
            server.stop(grace_s=1)
            raise LaunchFailed(f"the server died during the load test: {died}")
        loadgen.require_completions(result, base)
        report = verify.build(req, compiled, plan_path.stem, base, lspec, result, server={
            "kv_cache_tokens_reported": reported, "kv_cache_tokens_planned": compiled.memory.kv_cache_tokens,
            "ready_s": round(serving.ready_s, 2), "load_test_s": round(time.perf_counter() - t0, 2),
            "host": host.stop()}, remediation=tuple({"what": a.what, "why": a.why} for a in attempts))
        if gate is not None:
            report = replace(report, quality=score_here(gate, compiled, base, outdir, api_key_env))
        path = verify.write(report, outdir)
        present.verdict(report, path, plots.write(result, report, outdir))
        if keep_serving:
            _keep_serving(server, model_name, base, serving.log_path)
    if cap is not None:  # nsys writes the report as the server exits: link it now
        report = replace(report, profile=profile.link(cap, outdir))
        verify.write(report, outdir)
        log.warning("nsys report: %s (%s)", outdir / cap.report, "written" if report.profile["written"] else "missing")
    return 0 if report.passed else 5


@contextlib.contextmanager
def _profiling(cap, base: str, api_key_env: Optional[str]) -> Iterator[None]:
    """POST the server's /start_profile before the block and /stop_profile after it (cap None: nothing)."""
    if cap is None:
        yield
        return
    import httpx

    from planner.endpoint import auth_headers

    headers = auth_headers(api_key_env) if api_key_env else {}
    httpx.post(base + cap.start_path, headers=headers, timeout=60).raise_for_status()
    try:
        yield
    finally:
        httpx.post(base + cap.stop_path, headers=headers, timeout=600).raise_for_status()


def score_here(gate, compiled, base: str, outdir: Path, api_key_env: Optional[str]) -> dict:
    """The accuracy gate on the server at `base` serving `compiled.plan` (its tokenizer: the model path)."""
    from planner import quality

    plan = compiled.plan
    return quality.score(gate, quality.QualityRun(base_url=base, model=plan.served_model_name,
                                                  tokenizer=plan.model_path, outdir=outdir, task=gate.task,
                                                  api_key_env=api_key_env))


def _keep_serving(server, model_name: str, base: str, log_path: Path) -> None:
    sys.stderr.write(f"serving {model_name} at {base} (log: {log_path}); Ctrl-C stops it\n")
    while True:  # until Ctrl-C/SIGTERM (the signal handlers tear down) or the server dies
        if server.interrupted:  # the handler's SystemExit was swallowed by a callback it interrupted (CI, 2026-12-07)
            raise SystemExit(128 + server.interrupted)
        died = server.watch()
        if died:  # already broken: tear down what is left quickly, then report
            server.stop(grace_s=1)
            raise LaunchFailed(f"the server stopped while serving: {died}")
        time.sleep(0.2)


def check_backend_runs_here(backend_name: str) -> None:
    if backend_name != "vllm":
        raise InputError(f"backend={backend_name}: only vLLM can be launched on this machine (its CPU build). Fix: "
                         "backend=vllm for launch/verify, or action=render for the other engines' artifacts.")


__all__ = ["run", "started", "local_argv", "local_api_key", "check_backend_runs_here"]

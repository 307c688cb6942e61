"""action=launch / action=verify: start the planned server here, wait until it is ready, load-test it against the
target, write report.json and plots beside the plan, and (verify) tear it down. On a startup failure that a
troubleshooting rule can fix (OOM, KV cache too small), re-plan with the rule's remedy and try again (bounded).

The local server listens on 127.0.0.1 and a free port: the rendered artifacts (for a cluster) bind 0.0.0.0:8000;
this is the one place that changes, and only the host and port.
"""

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from planner.errors import InputError, LaunchFailed

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


def run(req, compiled, plan_path: Path, replan: Callable[[list[str]], tuple], *, keep_serving: bool,
        num_prompts: Optional[int], ready_timeout_s: float, port: Optional[int]) -> int:
    """Launch, verify, report; returns the exit code (0 verified, 5 target missed). Raises LaunchFailed (4). A
    failure a troubleshooting rule can relieve (its remedy's `relaunch` pins) is re-planned and tried again."""
    from planner import document, render
    from planner.rules.troubleshoot import relaunch_pins

    attempts: list[Attempt] = []
    extra: list[str] = []
    for attempt in range(MAX_REMEDIATIONS + 1):
        try:
            return _once(req, compiled, plan_path, keep_serving=keep_serving, num_prompts=num_prompts,
                         ready_timeout_s=ready_timeout_s, port=port, attempts=tuple(attempts))
        except LaunchFailed as exc:
            fix = relaunch_pins(getattr(exc, "diagnoses", ()), document.plain(compiled.plan))
            if fix is None or attempt == MAX_REMEDIATIONS:
                raise
            diagnosis, remedy, pins = fix
            extra += [f"plan.{k}={v}" for k, v in pins.items()]
            attempts.append(Attempt(what=" ".join(extra), why=f"{diagnosis.rule.id}: {remedy.says}"))
            log.warning("launch failed (%s); re-planning with %s", diagnosis.rule.id, " ".join(extra))
            req, compiled = replan(extra)
            compiled = render.rendered(compiled, req)
    raise AssertionError("unreachable")


def _once(req, compiled, plan_path: Path, *, keep_serving: bool, num_prompts, ready_timeout_s, port,
          attempts: tuple) -> int:
    from backends import get
    from planner import plots, process, render, verify
    from planner import loadgen

    outdir = render.artifact_dir(plan_path)
    outdir.mkdir(parents=True, exist_ok=True)
    launch = (compiled.launch or render.rendered(compiled, req).launch)
    port = port or process.free_port()
    process.check_port_free(port)
    argv = local_argv(list(launch.argv), port)
    env = {k: v for k, v in launch.env.items() if not v.startswith("${")}  # secrets stay references
    local = Path(compiled.plan.model_path).is_dir()  # a local checkpoint needs no hub
    env.setdefault("HF_HUB_OFFLINE", "1" if local else env.get("HF_HUB_OFFLINE", "0"))
    base = f"http://127.0.0.1:{port}"
    backend = get(compiled.plan.backend)
    spec = process.LaunchSpec(argv=tuple(argv), env=env, log_path=outdir / "server.log",
                              health_url=base + backend.health_path, models_url=base + "/v1/models",
                              ready_timeout_s=ready_timeout_s)
    with process.Server(spec) as server, process.install_signal_handlers(server):  # entering starts it
        ready_s = server.wait_ready(progress=True)
        reported = backend.kv_cache_tokens(spec.log_path.read_text(errors="replace"))
        model_name = compiled.plan.served_model_name
        lspec = verify.load_spec(req, compiled, base, model_name, num_prompts=num_prompts,
                                 time_limit_s=max(60.0, ready_timeout_s))
        t0 = time.perf_counter()
        result = loadgen.run_sync(lspec)
        died = server.watch()
        if died:
            server.stop(grace_s=1)
            raise LaunchFailed(f"the server died during the load test: {died}")
        report = verify.build(req, compiled, plan_path.stem, base, lspec, result, server={
            "kv_cache_tokens_reported": reported, "kv_cache_tokens_planned": compiled.memory.kv_cache_tokens,
            "ready_s": round(ready_s, 2), "load_test_s": round(time.perf_counter() - t0, 2)},
            remediation=tuple({"what": a.what, "why": a.why} for a in attempts))
        path = verify.write(report, outdir)
        pngs = plots.write(result, report, outdir)
        from planner import present

        present.verdict(report, path, pngs)
        if keep_serving:
            sys.stderr.write(f"serving {model_name} at {base} (log: {spec.log_path}); Ctrl-C stops it\n")
            while True:  # until Ctrl-C/SIGTERM (the signal handlers tear down) or the server dies
                died = server.watch()
                if died:  # already broken: tear down what is left quickly, then report
                    server.stop(grace_s=1)
                    raise LaunchFailed(f"the server stopped while serving: {died}")
                time.sleep(0.2)
    return 0 if report.passed else 5


def check_backend_runs_here(backend_name: str) -> None:
    if backend_name != "vllm":
        raise InputError(f"backend={backend_name}: only vLLM can be launched on this machine (its CPU build). Fix: "
                         "backend=vllm for launch/verify, or action=render for the other engines' artifacts.")


__all__ = ["run", "local_argv", "check_backend_runs_here"]

"""Start a serving engine in its own process group, log it to a file (secrets redacted), wait until it is ready,
notice when it dies, and always tear its whole process tree down (SIGINT → SIGTERM → SIGKILL, checked with psutil).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlsplit

import psutil

from planner.endpoint import auth_headers, auth_problem
from planner.ports import check_port_free, free_port  # noqa: F401 (the launch API: process.free_port)
from planner.progress import Bar
from planner.errors import InputError, LaunchFailed

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
FATAL_EXIT_WAIT_S = 3.0  # after a fatal line, how long to wait for the exit code before reporting without it
TAIL_LINES = 40  # log lines shown in a LaunchFailed message
REDACTED = "***"
# env keys whose values are secrets even when the spec does not list them (HF_TOKEN, OPENAI_API_KEY, ...)
_SECRET_KEY = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY", re.IGNORECASE)
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary text
_POLL_S = 0.2


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one server and how to tell it is ready."""

    argv: tuple[str, ...]
    env: dict[str, str]  # merged over os.environ
    log_path: Path  # stdout and stderr, one line at a time, secrets redacted
    health_url: str  # 200 once the process serves HTTP (loopback only)
    models_url: str  # 200 once the model is loaded (OpenAI /v1/models)
    ready_timeout_s: float = 600
    secrets: tuple[str, ...] = ()  # values to redact from the log (env values named like *TOKEN* are added)
    api_key_env: Optional[str] = None  # the environment variable whose value the probe sends as a Bearer token

    def __post_init__(self):
        bad = [u for u in (self.health_url, self.models_url) if urlsplit(u).hostname not in LOOPBACK_HOSTS]
        if bad:
            raise InputError(f"health_url/models_url={bad[0]}: readiness is polled on this machine only "
                             f"(hosts {', '.join(LOOPBACK_HOSTS)}). Fix: serve on 127.0.0.1 and poll that.")


def _describe(p: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"pid {p.pid} ({p.name()}: {shlex.join(p.cmdline())[:120]})"
    return f"pid {p.pid}"


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie; is_running also checks the create time, so a reused pid does not count."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _exit_words(code: Optional[int]) -> str:
    if code is None:
        return "it is still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"it was killed by {signal.Signals(-code).name} (exit code {code})"
    return f"it exited with code {code}"


class Server:
    """One engine process and everything it spawns. Use as a context manager: leaving it always stops the tree."""

    def __init__(self, spec: LaunchSpec, rules: Optional[tuple] = None):
        self.spec = spec
        self._rules = rules  # troubleshooting rules (planner.rules.engine.load()), loaded on first need
        self._proc: Optional[subprocess.Popen] = None
        self._leader: Optional[psutil.Process] = None
        self._children: dict[int, psutil.Process] = {}  # every descendant seen, by pid (create time checked)
        self._tail: collections.deque[str] = collections.deque(maxlen=400)
        self._lines_seen = 0  # lines written to the log so far
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0
        self._stopping = False  # inside stop(): a signal handler must not start a second teardown
        self._stopped = False
        self._sigkilled: list[str] = []
        self._hurry = threading.Event()  # a second Ctrl-C during teardown: skip to SIGKILL
        # the signal that stopped it (install_signal_handlers): the handler's SystemExit can be swallowed when it
        # lands inside a weakref or __del__ callback ("Exception ignored in ..."), so loops check this as well
        self.interrupted: Optional[int] = None

    # -- start ---------------------------------------------------------------------------------------------
    def _secrets(self, env: dict[str, str]) -> list[str]:
        found = set(self.spec.secrets) | {v for k, v in env.items() if _SECRET_KEY.search(k)}
        return sorted((s for s in found if len(s) >= _MIN_SECRET_LEN), key=len, reverse=True)

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("Server.start() called twice; create a new Server")
        env = {"PYTHONUNBUFFERED": "1", **os.environ, **self.spec.env}  # Python children: no lines stuck in buffers
        secrets = self._secrets(env)

        def redact(text: str) -> str:
            for s in secrets:
                text = text.replace(s, REDACTED)
            return text

        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.spec.log_path, "w", encoding="utf-8", buffering=1)
        logf.write(redact(f"# $ {shlex.join(self.spec.argv)}\n"))
        for k in sorted(self.spec.env):
            logf.write(redact(f"# env {k}={self.spec.env[k]}\n"))
        logf.flush()
        # Its own process group (stop() signals the group), in this session: Linux's scheduler autogroups are per
        # session, and a server in a session of its own (setsid) was one group against the load generator's, which
        # on a 2-core host left vLLM's API server a slice of what its busy-waiting EngineCore and worker shared:
        # README's CPU loop then measured TTFT p90 0.75-5.6 s, against 45-56 ms in this session (docs/perf-model.md)
        self._proc = subprocess.Popen(self.spec.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, process_group=0)
        self._started_at = time.monotonic()
        self._leader = psutil.Process(self._proc.pid)
        log.info("started pid %d: %s (log %s)", self._proc.pid, shlex.join(self.spec.argv), self.spec.log_path)

        def pump():  # pipe → log, one line at a time, flushed; ends when every holder of the pipe has exited
            with logf:
                for raw in iter(self._proc.stdout.readline, b""):
                    line = redact(raw.decode("utf-8", errors="replace").rstrip("\n"))
                    logf.write(line + "\n")
                    logf.flush()
                    with self._lock:
                        self._tail.append(line.rsplit("\r", 1)[-1])  # progress bars redraw with \r
                        self._lines_seen += 1
            self._proc.stdout.close()

        def monitor():  # remember descendants while they exist: a child that leaves the group is still ours
            while self._proc.poll() is None and not self._stopped:
                self._remember_children()
                time.sleep(_POLL_S)

        for target in (pump, monitor):
            t = threading.Thread(target=target, name=f"server-{self._proc.pid}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def _remember_children(self) -> None:
        with contextlib.suppress(psutil.Error):
            for c in self._leader.children(recursive=True):
                self._children.setdefault(c.pid, c)

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll() if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        with self._lock:
            return list(self._tail)[-n:]

    def _group(self) -> list[psutil.Process]:
        """Processes still in the server's process group (pgid = the leader's pid; process_group=0)."""
        members = []
        for p in psutil.process_iter():
            with contextlib.suppress(OSError):
                if os.getpgid(p.pid) == self._proc.pid:
                    members.append(p)
        return members

    def _pending(self) -> list[psutil.Process]:
        """The leader (unreaped), the group and remembered descendants, alive, once each."""
        if self._proc is None:
            return []
        found: dict[int, psutil.Process] = {}
        if self._proc.poll() is None:  # poll() reaps the leader, so psutil never has to
            found[self._leader.pid] = self._leader
        for p in [*self._group(), *self._children.values()]:
            if p.pid != self._proc.pid and _alive(p):
                found.setdefault(p.pid, p)
        return list(found.values())

    def leftovers(self) -> list[str]:
        """Descriptions of the group's processes and remembered children that are still alive."""
        return [_describe(p) for p in self._pending()]

    # -- readiness -----------------------------------------------------------------------------------------
    def _load_rules(self) -> tuple:
        if self._rules is None:
            from planner.rules import engine

            self._rules = engine.load()
        return self._rules

    def _failure(self, what: str, extra: str = "") -> LaunchFailed:
        """LaunchFailed with the exit code, the log tail and the diagnosis (attributes carry the same data)."""
        from planner.rules.troubleshoot import diagnose

        lines = self.tail(len(self._tail))
        diagnoses = diagnose("\n".join(lines), self._load_rules())
        parts = [f"{what}; {_exit_words(self.returncode)} (log: {self.spec.log_path}).{extra}"]
        for d in diagnoses[:3]:
            fixes = "; ".join(r.says for r in d.rule.remedies) or "see the rule's docs"
            parts.append(f"Diagnosis {d.rule.id}: {d.rule.why} Matched: {d.line!r}. Fix: {fixes}.")
        if not diagnoses:
            exc_line = next((ln for ln in reversed(lines) if re.match(r"^\w[\w.]*(Error|Exception)\b", ln)), None)
            parts.append("No troubleshooting rule matched" + (f"; last exception: {exc_line!r}" if exc_line else "")
                         + ("." if extra else ". Fix: read the log tail below."))
        tail = self.tail(TAIL_LINES)
        parts.append(f"Last {len(tail)} log lines:\n" + "\n".join("  | " + ln for ln in tail))
        exc = LaunchFailed("\n".join(parts))
        exc.returncode, exc.log_tail, exc.diagnoses = self.returncode, tail, diagnoses
        exc.log_path = self.spec.log_path
        return exc

    def _drain(self, timeout_s: float = 1.0) -> None:
        """Let the log pump catch up after the leader exited (children may keep the pipe open longer)."""
        self._threads[0].join(timeout_s)

    def _probe(self, client, headers: dict[str, str]) -> Optional[int]:
        """The status of models_url once health_url answers 200; None while the server does not answer."""
        import httpx

        try:
            if client.get(self.spec.health_url).status_code != 200:
                return None
            return client.get(self.spec.models_url, headers=headers).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, progress: bool = True) -> float:
        """Poll health_url, then models_url, until both answer 200; return the seconds since start.

        Raises LaunchFailed when the process exits, when a fatal troubleshooting rule (`fatal: true`) matches a
        new log line, or after spec.ready_timeout_s; the message has the exit code, log tail and diagnosis."""
        import httpx

        from planner.rules.troubleshoot import diagnose

        if self._proc is None:
            raise RuntimeError("Server.wait_ready() before start()")
        rules = self._load_rules()
        headers = auth_headers(self.spec.api_key_env)
        checked = 0
        display = Bar("waiting for the server", None, progress)
        # trust_env=False: no proxy from the environment may stand between us and 127.0.0.1
        with httpx.Client(timeout=2.0, trust_env=False) as client, display:
            while True:
                elapsed = time.monotonic() - self._started_at
                if self._proc.poll() is not None:
                    self._drain()
                    raise self._failure(f"the server (pid {self._proc.pid}) stopped before it was ready, after "
                                        f"{elapsed:.1f} s")
                with self._lock:
                    new = list(self._tail)[-(self._lines_seen - checked):] if self._lines_seen > checked else []
                    checked = self._lines_seen
                fatal = [d for d in diagnose("\n".join(new), rules) if d.rule.fatal]
                if fatal:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._proc.wait(FATAL_EXIT_WAIT_S)  # engines exit soon after such a line; the exit code helps
                    self._drain()
                    raise self._failure(f"the server (pid {self._proc.pid}) logged a fatal error "
                                        f"({fatal[0].rule.id}) after {elapsed:.1f} s")
                status = self._probe(client, headers)
                if status in (401, 403):  # vLLM guards /v1 only (authenticate.py:11): /health said it is up
                    what, fix = auth_problem(self.spec.models_url, status, self.spec.api_key_env)
                    raise self._failure(f"the server (pid {self._proc.pid}) refused the readiness probe after "
                                        f"{elapsed:.1f} s: {what}", fix)
                if status == 200:
                    self._remember_children()
                    log.info("server pid %d ready after %.1f s", self._proc.pid, elapsed)
                    return elapsed
                if elapsed > self.spec.ready_timeout_s:
                    raise self._failure(f"the server (pid {self._proc.pid}) was not ready within the "
                                        f"ready_timeout_s={self.spec.ready_timeout_s:g} s timeout",
                                        f" Fix: raise ready_timeout_s if startup is just slow ({self.spec.models_url} "
                                        "never answered 200).")
                display.describe((self.tail(1) or [""])[0])
                time.sleep(_POLL_S)

    def watch(self) -> Optional[str]:
        """Non-blocking, for use during a run: a description (with the log tail) if the server died, else None."""
        if self._proc is None or self._stopping or self._proc.poll() is None:
            return None  # not started, stopped on purpose, or running
        self._drain(0.2)
        tail = self.tail(TAIL_LINES)
        return (f"the server (pid {self._proc.pid}) died during the run: {_exit_words(self._proc.returncode)} "
                f"(log: {self.spec.log_path}). Last {len(tail)} log lines:\n" + "\n".join("  | " + ln for ln in tail))

    # -- teardown ------------------------------------------------------------------------------------------
    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _wait_gone(self, timeout_s: float) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout_s
        while (pending := self._pending()) and time.monotonic() < deadline and not self._hurry.is_set():
            time.sleep(0.05)
        return pending

    def stop(self, grace_s: float = 10) -> list[str]:
        """SIGINT to the group, wait grace_s; SIGTERM, wait grace_s; then SIGKILL the group and every remembered
        descendant still alive (by pid, identity checked). Returns the processes that needed SIGKILL. Idempotent."""
        if self._proc is None or self._stopped:
            return list(self._sigkilled)
        self._stopping = True
        self._remember_children()
        pending = self._pending()
        # vLLM's API server ignored SIGTERM for 20 s once and stopped on SIGINT (reference/backends.md "Seen here")
        for sig in (signal.SIGINT, signal.SIGTERM):
            if not pending or self._hurry.is_set():
                break
            log.info("stopping server pid %d: %s to its process group", self._proc.pid, sig.name)
            self._signal_group(sig)
            pending = self._wait_gone(grace_s)
        if pending:
            self._sigkilled = [_describe(p) for p in pending]
            log.warning("server pid %d: SIGKILL for %s", self._proc.pid, "; ".join(self._sigkilled))
            self._signal_group(signal.SIGKILL)
            for p in pending:
                with contextlib.suppress(psutil.Error):
                    p.kill()  # psutil checks the create time: never a reused pid
            self._hurry.clear()
            pending = self._wait_gone(5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(1)
        self._stopped = True
        self._drain(2)
        if pending:
            log.error("server pid %d: still alive after SIGKILL: %s", self._proc.pid,
                      "; ".join(_describe(p) for p in pending))
        return list(self._sigkilled)

    def __enter__(self) -> "Server":
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def install_signal_handlers(server: Server, grace_s: float = 10) -> Iterator[Server]:
    """While inside: SIGINT (Ctrl-C) or SIGTERM to the planner stops the server, then exits 130 or 143
    (SystemExit). A second signal during the teardown skips straight to SIGKILL. Main thread only."""
    teardown = threading.Event()

    def handler(signum, _frame):
        if teardown.is_set() or server._stopping:  # already tearing down: make it quick, let it finish
            server._hurry.set()
            return
        teardown.set()
        server.interrupted = signum
        log.warning("%s received: stopping the server", signal.Signals(signum).name)
        server.stop(grace_s)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield server
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

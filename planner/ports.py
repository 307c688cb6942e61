"""Local ports for a server: a free one, and whether one is free (naming who holds it, when psutil can tell)."""

import contextlib
import errno
import shlex
import socket
from typing import Optional

import psutil

from planner.errors import InputError


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it; another process may still take it before we do)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_holder(port: int) -> Optional[psutil.Process]:
    """The process listening on `port`, when psutil may see it (processes of other users usually hide theirs)."""
    with contextlib.suppress(psutil.Error, OSError):
        for c in psutil.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return psutil.Process(c.pid)
    return None


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise InputError (naming who holds it, if psutil can tell) unless the server could bind `port` on `host`."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # uvicorn sets SO_REUSEADDR too, so a port with only TIME_WAIT connections counts as free, as it is for it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise InputError(f"port={port}: cannot bind {host}:{port} ({exc.strerror}). "
                                 f"Fix: choose another port: port={free_port(host)}.") from exc
    holder = _port_holder(port)
    who = "by a process psutil cannot see (another user's?)"
    if holder is not None:
        with contextlib.suppress(psutil.Error):
            who = f"by pid {holder.pid} ({holder.name()}: {shlex.join(holder.cmdline())[:160]})"
    raise InputError(f"port={port}: {host}:{port} is already in use {who}, so the server would fail to start "
                     f"(address already in use). Fix: stop that process, or choose another port: "
                     f"port={free_port(host)} is free now.")

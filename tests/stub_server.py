"""A tiny OpenAI-compatible streaming server (stdlib asyncio, HTTP/1.1 keep-alive, chunked SSE) for load-generator
tests and the overhead benchmark: one token of text per chunk at configured delays, then a usage chunk and [DONE].

Run: python tests/stub_server.py --port P --token-delay-ms X [--first-token-delay-ms Y] [--fail-status 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator


@dataclass(frozen=True)
class StubConfig:
    """How the stub behaves."""

    token_delay_ms: float = 0.0
    """Between successive tokens of a stream."""
    first_token_delay_ms: float = 0.0
    """From the request's arrival to its first token."""
    fail_status: int | None = None
    """Answer every /v1/completions with this HTTP status instead of streaming."""
    fail_every: int = 0
    """With k > 0, every k-th completion request (1-based) gets fail_status (500 if unset); others stream."""
    max_tokens_cap: int | None = None
    """Stream at most this many tokens whatever max_tokens asks (to test token counting)."""
    api_key: str | None = None
    """Like vLLM's --api-key: paths under /v1 answer 401 {"error": "Unauthorized"} unless the request carries
    `Authorization: Bearer <api_key>` (vllm/entrypoints/serve/middleware/authenticate.py:11 and 59-61)."""


@dataclass
class StubStats:
    """What the stub saw; read from the test thread (plain ints and lists, GIL-safe)."""

    completions: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    arrivals_s: list[float] = field(default_factory=list)
    authorization: list[str] = field(default_factory=list)
    payloads: list[dict] = field(default_factory=list)
    metrics_scrapes: int = 0


METRICS_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="stub"}} {running}
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="stub"}} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="stub"}} 0.25
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",model_name="stub"}} 3.0
"""


class StubServer:
    """Serves /v1/completions, /v1/models, /health and /metrics on 127.0.0.1."""

    def __init__(self, config: StubConfig = StubConfig(), model: str = "stub") -> None:
        self.config = config
        self.model = model
        self.stats = StubStats()
        self._handlers: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            while True:  # keep-alive: one request after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (line.split(":", 1) for line in lines[1:] if ":" in line)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                await self.route(method, path, headers, body, writer)
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection: normal end of a keep-alive session
        finally:
            self._handlers.discard(task)
            writer.close()

    async def route(self, method: str, path: str, headers: dict[str, str], body: bytes,
                    writer: asyncio.StreamWriter) -> None:
        key = self.config.api_key
        if key is not None and path.startswith("/v1") and headers.get("authorization") != f"Bearer {key}":
            self.reply(writer, 401, {"error": "Unauthorized"})
        elif method == "POST" and path == "/v1/completions":
            await self.completions(headers, json.loads(body), writer)
        elif path == "/v1/models":
            self.reply(writer, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        elif path == "/health":
            self.reply(writer, 200, b"", "text/plain")
        elif path == "/metrics":
            self.stats.metrics_scrapes += 1
            self.reply(writer, 200, METRICS_TEXT.format(running=float(self.stats.in_flight)).encode(), "text/plain")
        else:
            self.reply(writer, 404, {"error": f"no route {method} {path}"})
        await writer.drain()

    @staticmethod
    def reply(writer: asyncio.StreamWriter, status: int, body: dict | bytes, ctype: str = "application/json") -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                     + data)

    async def completions(self, headers: dict[str, str], payload: dict, writer: asyncio.StreamWriter) -> None:
        arrived = time.perf_counter()
        st, cfg = self.stats, self.config
        st.completions += 1
        st.arrivals_s.append(arrived)
        st.payloads.append(payload)
        if "authorization" in headers:
            st.authorization.append(headers["authorization"])
        failing = cfg.fail_status if not cfg.fail_every else (cfg.fail_status or 500)
        if failing and (not cfg.fail_every or st.completions % cfg.fail_every == 0):
            self.reply(writer, failing, {"error": {"message": "stub failure", "code": failing}})
            return
        n = int(payload.get("max_tokens") or 16)
        n = min(n, cfg.max_tokens_cap) if cfg.max_tokens_cap else n
        prompt = payload.get("prompt", "")
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            base = {"id": "cmpl-stub", "object": "text_completion", "created": int(time.time()), "model": self.model}
            for i in range(n):
                # Absolute schedule, so sleep overshoot does not accumulate over a long stream.
                due = arrived + (cfg.first_token_delay_ms + i * cfg.token_delay_ms) / 1000
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                choice = {"index": 0, "text": f" t{i}", "logprobs": None,
                          "finish_reason": "length" if i == n - 1 else None}
                self.chunk(writer, {**base, "choices": [choice], "usage": None})
                await writer.drain()
            n_prompt = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
            usage = {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}
            self.chunk(writer, {**base, "choices": [], "usage": usage})
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        finally:
            st.in_flight -= 1

    @staticmethod
    def chunk(writer: asyncio.StreamWriter, event: dict) -> None:
        data = b"data: " + json.dumps(event).encode() + b"\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def serve(self, port: int, ready: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
        server = await asyncio.start_server(self.handle, "127.0.0.1", port, backlog=4096)
        async with server:
            if ready is not None:
                ready.set()
            if stop is None:
                await server.serve_forever()
            else:
                await stop.wait()
            for task in list(self._handlers):  # open keep-alive connections: end them before the loop closes
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(config: StubConfig = StubConfig(), timeout_s: float = 120.0) -> Iterator[tuple[str, StubServer]]:
    """Serve on a free port in a daemon thread; yields (base_url, server). Stops on exit or after timeout_s."""
    stub, port = StubServer(config), free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        loop.call_later(timeout_s, stop.set)  # bounded: never outlives a hung test by more than timeout_s
        await stub.serve(port, ready, stop)

    def serve_then_close() -> None:
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    thread = threading.Thread(target=serve_then_close, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError(f"stub server did not start on 127.0.0.1:{port} within 10 s")
    try:
        yield f"http://127.0.0.1:{port}", stub
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=None)
    parser.add_argument("--api-key", default=None, help="require this Bearer token under /v1, as vLLM does")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long (bounded runs)")
    args = parser.parse_args()
    stub = StubServer(StubConfig(args.token_delay_ms, args.first_token_delay_ms, args.fail_status,
                                 api_key=args.api_key))

    async def bounded() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(args.max_seconds, stop.set)
        await stub.serve(args.port, stop=stop)

    asyncio.run(bounded())


if __name__ == "__main__":
    main()

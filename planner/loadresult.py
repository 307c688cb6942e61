"""What one load test measured: each request's record, the server's metrics over the run, and the summary with the
keys and definitions of `vllm bench serve` (vllm/benchmarks/serve.py; line numbers as planner/loadgen.py cites)."""

from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class RequestRecord:
    """One measured request; times in seconds."""

    sent_s: float
    """Benchmark start → request sent (after the concurrency semaphore), as erf `start_time` (line 229)."""
    ttft_s: float
    """Just before sending → first chunk with `choices` (erf lines 228, 258-266); nan if none came."""
    e2e_s: float
    """Just before sending → last chunk with `choices` (erf line 287); nan if it failed."""
    output_tokens: int
    """From the final `usage` chunk (erf line 275); else the number of chunks with choices (a lower bound when a
    chunk carries several tokens; serve counts 1 without a tokenizer, line 611)."""
    input_tokens: int
    """`usage.prompt_tokens` when given (erf line 276), else the prompt's length."""
    itl_s: tuple[float, ...]
    """Gaps between successive chunks with choices (erf line 270): per chunk, not per token."""
    ok: bool
    """Whether at least one chunk arrived and the stream ended cleanly (erf lines 278-285)."""
    error: str = ""
    """Why it failed: HTTP status and body, exception, timeout or cancellation."""
    chunks: int = 0
    """Chunks with `choices` received. One token each while the server keeps up; vLLM merges a stream's pending
    outputs into one chunk when its API server falls behind the engine (RequestOutputCollector, "RequestOutputs are
    merged if the producer gets ahead of the consumer": vllm/v1/engine/output_processor.py, 0.32.0), so a whole
    answer in one chunk makes TTFT equal E2E and TPOT 0 by serve's definitions."""

    @property
    def tpot_s(self) -> float:
        """(E2E − TTFT) / (output tokens − 1); 0 with ≤ 1 output token (serve lines 625-631)."""
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0


@dataclass(frozen=True)
class Streaming:
    """How the answers arrived: token by token, or merged into lumps by a server that fell behind its engine."""

    mean_tokens_per_chunk: float
    """Output tokens over chunks with choices, over the completed requests (1.0: one token per chunk)."""
    one_chunk_requests: int
    """Completed requests of more than one output token that arrived in a single chunk."""
    multi_token_requests: int
    """Completed requests of more than one output token."""

    @property
    def merged(self) -> bool:
        """Most multi-token answers came in one chunk: TPOT and ITL measured at the client say nothing about the
        engine's step (they are 0), and TTFT is the time to the whole answer."""
        return self.one_chunk_requests * 2 > self.multi_token_requests > 0

    def warning(self) -> str:
        """One sentence for the report and the log; empty when the streams came token by token."""
        if not self.merged:
            return ""
        return (f"{self.one_chunk_requests} of {self.multi_token_requests} answers arrived in one chunk (mean "
                f"{self.mean_tokens_per_chunk:.1f} tokens per chunk): the server's API process fell behind its engine "
                "and merged each stream's pending tokens (vLLM's RequestOutputCollector), so TPOT and ITL as "
                "measured here are 0 and TTFT is the time to the whole answer. Fix: fewer requests in flight "
                "(workload.max_concurrency), or more CPU for the API server (api-server processes, a less loaded "
                "host)")


@dataclass(frozen=True)
class MetricsSample:
    """One scrape of the server's Prometheus endpoint."""

    t_s: float
    """Benchmark start → scrape response."""
    values: dict[str, float]
    """SCRAPED_METRICS found in the scrape, summed over label sets (one per engine)."""


@dataclass(frozen=True)
class LoadResult:
    """What one load test measured."""

    records: tuple[RequestRecord, ...]
    """Every request that arrived by the schedule, in arrival order (warmup excluded)."""
    duration_s: float
    """Benchmark start → last request finished or cancelled (serve `benchmark_duration`, line 1090)."""
    metrics_series: tuple[MetricsSample, ...] = ()
    """Server metrics over the run, in time order."""
    unsent: int = 0
    """Requests never sent because the time limit came first (neither completed nor failed)."""
    slos_ms: dict[str, float] = field(default_factory=dict)
    """Goodput SLOs of the spec (ttft/tpot/e2el, ms); empty means request_goodput is None."""
    in_flight: int | None = None
    """A settled closed loop (LoadSpec.settle): every measured request ran with this many in flight, so the
    throughputs are the steady state's, by Little's law: in_flight / mean E2E requests per second (times the mean
    output or total tokens), not the run's tokens over its duration (which counts the unmeasured requests' time)."""

    def summary(self) -> dict[str, float | int | None]:
        """Aggregates with the keys of serve's result JSON (lines 1281-1391, metrics from `calculate_metrics`)."""
        done = [r for r in self.records if r.ok]
        dur = self.duration_s
        total_in = sum(r.input_tokens for r in done)
        total_out = sum(r.output_tokens for r in done)
        rps = len(done) / dur
        if self.in_flight and done:
            rps = self.in_flight / float(np.mean([r.e2e_s for r in done]))
        per_request = 1.0 / max(len(done), 1)
        out: dict[str, float | int | None] = {
            "duration": dur, "completed": len(done), "failed": len(self.records) - len(done), "unsent": self.unsent,
            "total_input_tokens": total_in, "total_output_tokens": total_out,
            "request_throughput": rps, "output_throughput": rps * total_out * per_request,
            "total_token_throughput": rps * (total_in + total_out) * per_request,
            "request_goodput": rps * self._good(done) * per_request if self.slos_ms else None,
        }
        for name, values in self._series(done).items():
            arr = np.asarray(values or [0.0]) * 1000  # serve: `np.mean(x or 0)`, 0 when empty (lines 753-776)
            out[f"mean_{name}_ms"] = float(arr.mean())
            out[f"median_{name}_ms"] = float(np.median(arr))
            out[f"std_{name}_ms"] = float(arr.std())
            for p in PERCENTILES:
                out[f"p{p}_{name}_ms"] = float(np.percentile(arr, p))
        return out

    @staticmethod
    def _series(done: list[RequestRecord]) -> dict[str, list[float]]:
        return {
            "ttft": [r.ttft_s for r in done],
            "tpot": [r.tpot_s for r in done if r.output_tokens > 1],  # serve lines 626-629
            "itl": [gap for r in done for gap in r.itl_s],  # pooled over requests (line 632)
            "e2el": [r.e2e_s for r in done],
        }

    def percentile_ms(self, name: str, percentile: float) -> float:
        """Any percentile of `ttft`, `tpot`, `itl` or `e2el` in ms, as summary() computes its fixed ones."""
        values = self._series([r for r in self.records if r.ok])[name]
        return float(np.percentile(np.asarray(values or [0.0]) * 1000, percentile))

    def streaming(self) -> Streaming:
        """Tokens per chunk over the completed requests (RequestRecord.chunks)."""
        done = [r for r in self.records if r.ok and r.chunks]
        multi = [r for r in done if r.output_tokens > 1]
        return Streaming(
            mean_tokens_per_chunk=sum(r.output_tokens for r in done) / max(sum(r.chunks for r in done), 1),
            one_chunk_requests=sum(r.chunks == 1 for r in multi), multi_token_requests=len(multi))

    def errors(self) -> list[str]:
        """The failed requests' messages, in arrival order."""
        return [r.error for r in self.records if not r.ok]

    def _good(self, done: list[RequestRecord]) -> int:
        """Completed requests meeting every SLO; tpot counts 0 for ≤ 1 output token (serve lines 640-663)."""
        measured = {"ttft": lambda r: r.ttft_s, "tpot": lambda r: r.tpot_s, "e2el": lambda r: r.e2e_s}
        return sum(all(slo / 1000 >= measured[k](r) for k, slo in self.slos_ms.items()) for r in done)

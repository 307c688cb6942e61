"""Discrete-event simulation of an engine's continuous batching: a per-step time model in, request-level latency
distributions (TTFT, TPOT, ITL, E2E, throughput) out, for the few candidates the analytic model ranks best.

Each engine's own scheduler decides the steps (planner/sched/: vLLM 0.32's V1 scheduler, TensorRT-LLM's
GUARANTEED_NO_EVICT in-flight batching, SGLang's prefill-first scheduler with new_token_ratio admission and
retraction), over a KV pool with a prefix cache per prompt group. Arrivals and metrics follow
`vllm/benchmarks/serve.py` (the `vllm bench serve` client) of vLLM 0.32.0 (line numbers below are that file's).
"""

import difflib
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True, slots=True)
class Step:
    """What one engine step processes; the argument of the per-step time model."""

    decode_seqs: int
    """Sequences producing one token each (a 1-token chunk on top of their KV)."""
    decode_context: int
    """Sum of those sequences' context lengths in tokens (tokens already in KV)."""
    prefill_tokens: int
    """Prompt tokens processed this step, summed over prefill chunks (recomputation after preemption included)."""
    prefill_context: int
    """Attention work of the prefill chunks in query·key token pairs: Σ chunk·(tokens before the chunk + chunk/2),
    the same unit as decode_context (each decode query reads its context once)."""


StepTime = Callable[[Step], float]
"""Seconds one engine step takes."""


@dataclass(frozen=True)
class Arrivals:
    """How requests reach the server, as `vllm bench serve` sends them (serve.py `get_request`, lines 402-516)."""

    request_rate: float | None
    """Requests per second; None or inf sends everything at t=0 (offline)."""
    burstiness: float = 1.0
    """Gamma shape of the inter-arrival times (1 = Poisson; <1 burstier; inf = evenly spaced)."""
    max_concurrency: int | None = None
    """Closed-loop cap on requests in flight (the client's asyncio.Semaphore, serve.py line 969)."""

    def __post_init__(self) -> None:
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError(f"request_rate={self.request_rate}: must be > 0 req/s. Fix: a positive rate, or None "
                             "(or inf) to send every request at t=0.")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness={self.burstiness}: the gamma shape must be > 0 (serve.py line 439). "
                             "Fix: 1.0 for Poisson arrivals.")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency={self.max_concurrency}: must be ≥ 1. Fix: a positive cap, or None.")

    @property
    def is_offline(self) -> bool:
        """Whether every request is sent at t=0."""
        return self.request_rate is None or math.isinf(self.request_rate)


_METRICS = {"ttft": "ttft_s", "tpot": "tpot_s", "itl": "itl_s", "e2e": "e2e_s"}


@dataclass(frozen=True, eq=False)
class SimResult:
    """Request-level outcome of one simulated benchmark run; times in seconds, arrays read-only."""

    ttft_s: np.ndarray
    """Per request: send → first token (server queueing included, client semaphore wait excluded, as serve.py)."""
    tpot_s: np.ndarray
    """Per request with > 1 output token: (E2E − TTFT) / (output tokens − 1) (serve.py line 626)."""
    e2e_s: np.ndarray
    """Per request: send → last token."""
    itl_s: np.ndarray
    """Gaps between successive tokens of a request, all requests pooled (one token per chunk here)."""
    input_lens: np.ndarray
    """Prompt tokens per request."""
    output_lens: np.ndarray
    """Output tokens per request (each request produces exactly this many, as with ignore_eos)."""
    duration_s: float
    """Benchmark start (t=0) → last token of the last request, as serve.py's benchmark_duration."""
    completed: int
    """Requests finished (all of them: the simulation runs to completion)."""
    preemptions: int
    """Times a running request lost its KV blocks and went back to waiting (vLLM preemption, SGLang retraction)."""
    mean_batch: float
    """Mean decode sequences per executed step."""
    steps: int
    """Engine steps that executed a forward pass."""
    done_s: np.ndarray = None
    """Per request: the time its last token was emitted (from the benchmark's start)."""
    sent_s: np.ndarray = None
    """Per request: the time it was sent."""

    def percentile(self, metric: str, p: float) -> float:
        """The p-th percentile (0-100) of `ttft`, `tpot`, `itl` or `e2e`, in seconds (0.0 when empty, as serve.py)."""
        if metric not in _METRICS:
            near = difflib.get_close_matches(metric, list(_METRICS), n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"metric={metric!r} is not one of {sorted(_METRICS)}.{hint}")
        values = getattr(self, _METRICS[metric])
        return float(np.percentile(values, p)) if values.size else 0.0

    def output_throughput(self) -> float:
        """Output tokens per second over the whole run."""
        return float(self.output_lens.sum()) / self.duration_s

    def request_throughput(self) -> float:
        """Completed requests per second over the whole run."""
        return self.completed / self.duration_s

    def kept_up(self) -> float:
        """How much of an open loop's load the server sustains (kept_up below)."""
        return kept_up(self.sent_s, self.done_s)


def kept_up(sent_s, done_s) -> float:
    """How much of an open loop's load a server sustains (1.0: all of it): requests per second departing over requests
    per second sent, each between the 10th and 90th percentile of its times. A stable server departs at the sample's
    own arrival rate, an overloaded one at its capacity; a whole-run throughput also counts the ramp and the drain,
    and a Poisson sample's rate is not the nominal one. Used for simulated and for measured runs alike. Ratios within
    3% of 1 count as 1: the jitter of latencies at the window's edges moves the estimate that much for ~100 requests."""
    def rate(times):
        t = np.sort(np.asarray(times, dtype=float))
        t = t[np.isfinite(t)]
        lo, hi = int(0.1 * (t.size - 1)), int(0.9 * (t.size - 1))
        return (hi - lo) / (t[hi] - t[lo]) if hi > lo and t[hi] > t[lo] else math.inf
    ratio = rate(done_s) / rate(sent_s)
    return 1.0 if ratio >= 0.97 else ratio


def lengths(mean: int, range_ratio: float, n: int, seed: int) -> np.ndarray:
    """`n` integer lengths uniform in [floor(mean·(1−r)), ceil(mean·(1+r))], as vllm bench serve's --random-range-ratio.

    Bounds from vllm/benchmarks/datasets/utils.py `get_sampling_params` (lines 63-95: r in [0, 1), floor/ceil,
    `rng.integers(low, high + 1)`; vLLM clamps the output low
    bound to 1, here both). vLLM also subtracts the tokenizer's special tokens from the
    input mean first; pass the mean you want sampled.
    """
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"range_ratio={range_ratio}: must be in [0, 1) (vLLM's get_sampling_params). Fix: 0 for "
                         "fixed lengths.")
    if mean < 1 or n < 1:
        raise ValueError(f"mean={mean}, n={n}: both must be ≥ 1.")
    from planner.specs import length_range

    low, high = length_range(mean, range_ratio)
    return np.random.default_rng(seed).integers(low, high + 1, size=n)


def send_times(arrivals: Arrivals, n: int, seed: int) -> np.ndarray:
    """Seconds from the benchmark start at which each of `n` requests is due, before the concurrency cap.

    As serve.py `get_request`; a load generator can use the same schedule so simulation and benchmark agree.
    """
    if arrivals.is_offline:
        return np.zeros(n)  # rate inf: delay 0 for every request (serve.py line 469)
    rate = float(arrivals.request_rate)
    if math.isinf(arrivals.burstiness):
        gaps = np.full(n, 1.0 / rate)  # constant interval (serve.py line 473)
    else:  # gamma(shape=burstiness, scale=1/(rate·burstiness)): mean 1/rate (serve.py lines 475-479)
        gaps = np.random.default_rng(seed).gamma(arrivals.burstiness, 1.0 / (rate * arrivals.burstiness), size=n)
    times = np.cumsum(gaps)
    return times * ((n / rate) / times[-1])  # rescaled so the last is sent at n/rate (serve.py lines 482-497)


def _check(input_lens: np.ndarray, output_lens: np.ndarray, max_num_seqs: int, max_num_batched_tokens: int,
           kv_blocks: int, block_size: int, prefix_cached_tokens: int) -> None:
    """Raise ValueError, with the numbers and a fix, for inputs the scheduler could never finish."""
    if input_lens.ndim != 1 or input_lens.shape != output_lens.shape or input_lens.size == 0:
        raise ValueError(f"input_lens shape {input_lens.shape} and output_lens shape {output_lens.shape}: need two "
                         "non-empty 1-D arrays of the same length, one entry per request.")
    if input_lens.min() < 1 or output_lens.min() < 1:
        raise ValueError(f"min input_len={input_lens.min()}, min output_len={output_lens.min()}: every request needs "
                         "≥ 1 prompt token and ≥ 1 output token.")
    for name, value in (("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens),
                        ("kv_blocks", kv_blocks), ("block_size", block_size)):
        if value < 1:
            raise ValueError(f"{name}={value}: must be ≥ 1.")
    if not 0 <= prefix_cached_tokens < input_lens.min():
        raise ValueError(f"prefix_cached_tokens={prefix_cached_tokens}: must be in [0, shortest prompt "
                         f"{input_lens.min()}) — vLLM always recomputes a prompt's last token "
                         "(kv_cache_manager.py line 295). Fix: a shorter shared prefix.")
    # A request's KV peaks at input + output − 1 tokens: the last sampled token is never fed back.
    peak_blocks = -(-(input_lens + output_lens - 1) // block_size)
    worst = int(np.argmax(peak_blocks))
    if peak_blocks[worst] > kv_blocks:
        raise ValueError(
            f"kv_blocks={kv_blocks}: the KV pool cannot hold even one request — request {worst} "
            f"(input {input_lens[worst]} + output {output_lens[worst]} tokens) needs {peak_blocks[worst]} blocks "
            f"of block_size={block_size}, so it would be preempted forever. Fix: more KV memory (higher "
            "gpu_memory_utilization, more tensor_parallel, fp8 KV) or shorter requests.")


def prefix_groups(n: int, num_prefixes: int, seed: int) -> np.ndarray:
    """Each of `n` requests' prompt group: which of `num_prefixes` shared prefixes its prompt starts with. As vllm
    bench serve's prefix_repetition dataset (vllm/benchmarks/datasets/datasets.py PrefixRepetitionRandomDataset:
    num_requests // num_prefixes prompts per prefix, then shuffled), with the remainder dealt round-robin so every
    request has a group. 1 prefix: every request shares it."""
    k = max(1, min(num_prefixes, n))
    groups = np.concatenate([np.repeat(np.arange(k), n // k), np.arange(n % k)])
    return np.random.default_rng(seed).permutation(groups) if k > 1 else groups


@dataclass(frozen=True)
class Server:
    """One replica as its scheduler sees it: the engine, the batch limits and the KV pool."""

    engine: object  # planner.engines.EngineModel
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_blocks: int
    block_size: int
    chunked_prefill: bool = True
    prefix_caching: bool = True


def run(step_time: StepTime, input_lens: np.ndarray, output_lens: np.ndarray, arrivals: Arrivals, server: Server, *,
        shared_prefix_len: int = 0, num_prefixes: int = 1, seed: int = 0, loop_delay_s: float = 0.0) -> SimResult:
    """`simulate` for a Server and a workload's prefix model (`num_prefixes` groups sharing `shared_prefix_len`
    prompt tokens each); prefix caching off: no prompt tokens are reused."""
    prefix = shared_prefix_len if server.prefix_caching else 0
    groups = prefix_groups(int(np.size(input_lens)), num_prefixes, seed + 3) if prefix else None
    return simulate(step_time, input_lens, output_lens, arrivals, max_num_seqs=server.max_num_seqs,
                    max_num_batched_tokens=server.max_num_batched_tokens, kv_blocks=server.kv_blocks,
                    block_size=server.block_size, seed=seed, prefix_cached_tokens=prefix, groups=groups,
                    engine=server.engine, chunked_prefill=server.chunked_prefill, loop_delay_s=loop_delay_s)


def simulate(step_time: StepTime, input_lens: np.ndarray, output_lens: np.ndarray, arrivals: Arrivals, *,
             max_num_seqs: int, max_num_batched_tokens: int, kv_blocks: int, block_size: int,
             seed: int = 0, prefix_cached_tokens: int = 0, groups: Optional[np.ndarray] = None,
             engine=None, chunked_prefill: bool = True, send_s: np.ndarray | None = None,
             remote_prefill: bool = False, loop_delay_s: float = 0.0) -> SimResult:
    """Run every request through `engine`'s scheduler (planner/sched/; None: vLLM's), one engine step at a time,
    and collect its token times.

    A step's time is `step_time(Step)`; its tokens are emitted at its end. Idle time jumps to the next send.
    `prefix_cached_tokens` leading prompt tokens are shared by the requests of one prefix group (`groups[r]`; None:
    all requests in one group): the first to compute them publishes them to the prefix cache, later ones hit them
    (whole blocks only) and skip that compute; an unused group's blocks are evicted when the pool needs room.
    `send_s`: each request's send time (non-decreasing) instead of `arrivals`' schedule (its concurrency cap holds).
    `remote_prefill`: a disaggregated decode instance (vLLM's scheduler only). The KV of every prompt token arrives
    from a prefill instance through the KV connector; the request allocates blocks for its whole prompt when admitted
    and recomputes only the last prompt token to sample its first output token (vLLM 0.32
    v1/core/sched/scheduler.py _update_waiting_for_remote_kv: num_computed_tokens == num_tokens becomes
    num_tokens - 1). A preempted request recomputes its prompt here (the prefill instance has freed those blocks).
    `loop_delay_s`: under a concurrency cap, how long after its last token a finished request's slot takes a new one
    to the engine (the token's way to the client, the next request's way in: planner/predict.py outside_s). The engine
    does not wait for it: it runs the next step meanwhile, so the new request joins the step after (a closed loop's
    replacement never makes the step that starts as its predecessor ends).
    """
    from planner import engines
    from planner.sched import Limits, Requests, make
    from planner.sched.kvcache import KvCache

    ins = np.asarray(input_lens, dtype=np.int64)
    outs = np.asarray(output_lens, dtype=np.int64)
    _check(ins, outs, max_num_seqs, max_num_batched_tokens, kv_blocks, block_size, prefix_cached_tokens)
    n = int(ins.size)
    ready = send_times(arrivals, n, seed).tolist() if send_s is None else np.asarray(send_s, dtype=float).tolist()
    cap = arrivals.max_concurrency or n
    free_slots = deque([0.0] * min(cap, n))  # times the client's semaphore slots became free, oldest first
    prompt = ins.tolist()
    R = Requests(prompt=prompt, out=outs.tolist(), ntok=list(prompt), computed=[0] * n, gen=[0] * n,
                 remote=[bool(remote_prefill)] * n)
    if remote_prefill and (engine or engines.VLLM).admission is not engines.VLLM.admission:
        raise ValueError("remote_prefill: only vLLM's scheduler is modelled as a disaggregated decode instance")
    group = [0] * n if groups is None else [int(g) for g in groups]
    kv = KvCache(kv_blocks, block_size, group if prefix_cached_tokens else [-1] * n, prefix_cached_tokens)
    sched = make(engine or engines.VLLM, R, kv, Limits(max_num_seqs, max_num_batched_tokens, chunked_prefill))
    sent, first, last, done = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    itl: list[float] = []
    computed, ntok, gen = R.computed, R.ntok, R.gen  # the per-step loops' lists, bound once
    now, nxt, finished, steps, decoded, stalls = 0.0, 0, 0, 0, 0, 0

    while finished < n:
        # Send what is due, FIFO through the semaphore (serve.py lines 969-985); TTFT counts from the send.
        while nxt < n and free_slots and max(ready[nxt], free_slots[0]) <= now:
            sent[nxt] = max(ready[nxt], free_slots.popleft())
            sched.add(nxt)
            nxt += 1
        if not sched.busy():  # idle: jump to the next send
            now = max(ready[nxt], free_slots[0])
            continue
        batch = sched.schedule()
        if not batch:  # no forward pass runs; only a preemption can leave a step empty, and it frees room
            stalls += 1
            if stalls > 1:
                raise RuntimeError(f"scheduler stalled at t={now:.3f}s with {n - finished} requests unfinished; "
                                   f"kv_blocks={kv_blocks} is too tight.")
            continue
        stalls = 0
        dseqs = dctx = ptok = pctx = 0
        for r, k in batch:
            c = computed[r]
            if k == 1 and c >= prompt[r]:
                dseqs += 1
                dctx += c
            else:  # chunk token j attends to its c + j predecessors: Σ ≈ k·(c + k/2)
                ptok += k
                pctx += k * c + k * k // 2
        now += step_time(Step(dseqs, dctx, ptok, pctx))
        steps += 1
        decoded += dseqs
        # A request whose computed tokens reach num_tokens samples a token (vLLM _update_after_schedule and
        # update_from_output, scheduler.py lines 1616-1642 and 2026-2300); it stops at its output length.
        for r, k in batch:
            computed[r] += k
            if computed[r] < ntok[r]:
                continue  # a partial prefill chunk samples nothing
            gen[r] += 1
            ntok[r] += 1
            if gen[r] == 1:
                first[r] = now
            else:
                itl.append(now - last[r])
            last[r] = now
            if gen[r] == R.out[r]:
                done[r] = now
                sched.finish(r)
                free_slots.append(now + loop_delay_s)
                finished += 1

    return _result(np.array(sent), np.array(first), np.array(done), itl, ins, outs, sched.preemptions, decoded, steps)


def _result(sent: np.ndarray, first: np.ndarray, done: np.ndarray, itl: list[float], ins: np.ndarray,
            outs: np.ndarray, preemptions: int, decoded: int, steps: int) -> SimResult:
    """Metrics as serve.py `calculate_metrics` (lines 573-785) computes them, arrays frozen."""
    ttft, e2e = first - sent, done - sent
    multi = outs > 1
    tpot = (e2e[multi] - ttft[multi]) / (outs[multi] - 1)
    arrays = [ttft, tpot, e2e, np.array(itl), ins.copy(), outs.copy()]
    for a in arrays:
        a.setflags(write=False)
    done, sent = done.copy(), sent.copy()
    done.setflags(write=False)
    sent.setflags(write=False)
    return SimResult(*arrays, duration_s=float(done.max()), completed=int(ins.size), preemptions=preemptions,
                     mean_batch=decoded / steps if steps else 0.0, steps=steps, done_s=done, sent_s=sent)

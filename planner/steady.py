"""The analytic steady state of one replica: Little's law over the step model (planner/perf.py), for a closed loop
of requests in flight or an open loop at a rate, with speculative decoding's tokens per step; every batch limit
may be a numpy array (one entry per candidate of the search)."""

import functools
from dataclasses import dataclass, replace
from importlib import resources
from typing import Optional

import numpy as np
import yaml

from planner.fastyaml import FAST_LOADER
from planner import moe
from planner.perf import StepModel


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding as the step model sees it: each decode step verifies k drafted tokens per sequence
    and emits E = (1 - a^(k+1)) / (1 - a) tokens on average (a = per-token acceptance; Leviathan et al. 2023,
    "Fast Inference from Transformers via Speculative Decoding", eq. 1); the drafter costs `draft_layers` decoder
    layers per drafted token (an EAGLE/MTP head is one layer; n-gram lookup costs nothing on the GPU)."""

    k: int
    acceptance: float
    draft_layers: float

    @property
    def tokens_per_step(self) -> float:
        a = self.acceptance
        return (1 - a ** (self.k + 1)) / (1 - a) if a < 1 else float(self.k + 1)


def speculation(spec: Optional[dict], gpu_name: str) -> Optional[Speculation]:
    """The plan's speculative config as a Speculation, with the acceptance figures of conf/calibration."""
    if not spec:
        return None
    folder = resources.files("conf").joinpath("calibration")
    table = yaml.load(folder.joinpath("perf-default.yaml").read_text(), Loader=FAST_LOADER)["speculative"]
    method = str(spec.get("method"))
    row = table.get(method) or table["eagle"]
    return Speculation(k=int(spec.get("num_speculative_tokens", 1)), acceptance=float(row["acceptance_rate"]),
                       draft_layers=float(row["draft_layers"]))


@dataclass(frozen=True)
class SteadyState:
    """Mean behaviour of one replica at the offered load (analytic; percentiles come from the simulation).
    Fields are floats for scalar inputs and numpy arrays when the batch limits are arrays."""

    batch: object  # running sequences per step
    step_s: object
    tpot_s: object
    ttft_s: object
    output_tok_s: object  # per replica
    request_rps: object  # per replica
    saturated: object  # the load exceeds what the replica serves: queues grow


def _spec_step(sm: StepModel, spec: Optional[Speculation], b, ctx, p, pctx, busy=None, busy_ctx=None):
    """Step time with speculation: every running sequence verifies k + 1 tokens, and the drafter runs k times.
    `busy`, `busy_ctx`: the busiest attention-DP rank's prefill and its context (perf.StepModel.step_seconds)."""
    if spec is None:
        return sm.step_seconds(b, b * ctx, p, pctx, busy, busy_ctx)
    verify = sm.step_seconds(b * (spec.k + 1), b * ctx * (spec.k + 1), p, pctx, busy, busy_ctx)
    layers = sm.model.num_hidden_layers
    draft = spec.k * spec.draft_layers / layers * (sm.step_seconds(b, b * ctx, 0, 0)
                                                   - sm._consts["cal"].engine_seconds(b, 0))
    return verify + draft


def async_wait_steps(sm):
    """Steps a new request waits beyond a synchronous loop under async scheduling (the calibration's
    `async_scheduling_steps`): none with pipeline parallel, which vLLM 0.32 runs without it on the V1 model runner
    (vllm/config/vllm.py:1633-1642). `sm.pp` may be an array (one entry per candidate)."""
    return np.where(np.asarray(sm.pp) > 1, 0.0, sm._consts["cal"].async_steps)


def other_ranks_prefill(sm, batch: float, prefill: float, output_len: float, budget: float) -> Optional[float]:
    """With attention DP (sm.dp > 1): the prefill tokens on the busiest of the other dp - 1 ranks in a step, at a
    mean of batch x prefill / output_len prefill tokens per rank and step in chunks of what the budget leaves
    (moe.busiest_rank_prefill); None without attention DP. The simulation, which runs one rank, adds it."""
    if sm.dp <= 1:
        return None
    mean = batch * max(prefill, 1.0) / max(output_len, 1.0)
    chunk = min(max(prefill, 1.0), max(budget - batch, 1.0))
    return float(moe.busiest_rank_prefill(sm.dp - 1, min(mean, chunk), chunk))


def frontend_cores(sm, output_tok_s, request_rps, steps_per_s=0.0):
    """Cores the serving front end keeps busy on a CPU host (conf/calibration/cpu.yaml `frontend`): per output token
    (output processing, detokenizing), per streamed chunk (a RequestOutput, an SSE write, the client's parse: the
    first token's chunk, then one per `stream_interval` tokens, vLLM 0.32 v1/engine/output_processor.py:324-336),
    per request and per engine step. 0 on a GPU host."""
    cal = sm._consts["cal"]
    tok = np.asarray(output_tok_s, dtype=float)
    rps = np.asarray(request_rps, dtype=float)
    chunks = rps + np.maximum(tok - rps, 0.0) / np.maximum(np.asarray(sm.stream_interval, dtype=float), 1.0)
    return tok * cal.host_cpu_s_per_token + chunks * cal.host_cpu_s_per_chunk + rps * cal.host_cpu_s_per_request + \
        np.asarray(steps_per_s, dtype=float) * cal.host_cpu_s_per_step


def host_slowdown(sm, output_tok_s, request_rps, steps_per_s=0.0):
    """How much longer an engine step takes when the serving front end (vLLM's API server, the EngineCore's socket
    threads, and the load generator of action=verify on the same host) needs more CPU than vLLM's CPU backend leaves
    it. vLLM 0.32 binds the worker's OpenMP threads to all cores but one per rank and leaves those
    (`reserve_cpu_num = local_world_size` on x86, vllm/utils/ompmultiprocessing.py:44-50) to the other processes;
    the step itself is serial (no async scheduling on CPU, vllm/platforms/cpu.py:331): while the worker computes,
    the EngineCore waits, and the other way round, so the engine keeps one busy thread per rank. Nothing binds the
    front end off the worker's cores, and the kernel spreads runnable threads over all of them (vLLM's EngineCore and
    worker busy-wait on their shared-memory queues, shm_broadcast.py SpinCondition, so every core looks busy): the
    engine's cores carry their share of the front end's work, engine cores / all cores of it, and the step
    stretches by engine cores / (engine cores - that share). (A first version let the reserved cores absorb the
    front end first; measured here, the worker lost ~30% of its core at 0.3-0.4 front-end cores, which that model
    called no loss.) The front end's CPU seconds per output token, chunk, request and engine step are measured by
    benchmarks/cpu_serve.py (conf/calibration/cpu.yaml `frontend`). 1 on a GPU host. Floored at a quarter of the
    engine's cores."""
    cal = sm._consts["cal"]
    if not (cal.host_cpu_s_per_token or cal.host_cpu_s_per_request or cal.host_cpu_s_per_step):
        return 1.0
    busy = frontend_cores(sm, output_tok_s, request_rps, steps_per_s)
    cores = float(sm.gpu.num_cores or 1)
    reserved = np.minimum(np.asarray(sm.tp * sm.pp, dtype=float), cores - 1)
    engine = cores - reserved
    taken = busy * engine / cores
    return engine / np.maximum(engine - taken, 0.25 * engine)


def frontend_wait(sm, output_tok_s, request_rps, steps_per_s):
    """Seconds a first token waits for the serving front end on a CPU host (0 on a GPU host). vLLM's API server
    takes each engine step's outputs as one batch (v1/engine/async_llm.py output_handler: process_outputs over the
    step's EngineCoreOutputs), so the new request's token leaves, on average, half way through its step's batch; and
    that batch waits behind the front end's earlier work on the cores vLLM reserves for it (M/D/1: utilization rho
    of the front end's cores by frontend_cores, service time the CPU work of one step's batch). rho is capped at
    0.95: beyond it the closed loop synchronizes into waves instead (docs/perf-model.md), which no stationary queue
    describes."""
    cal = sm._consts["cal"]
    if not (cal.host_cpu_s_per_token or cal.host_cpu_s_per_chunk):
        return np.zeros_like(np.asarray(output_tok_s, dtype=float))
    cores = float(sm.gpu.num_cores or 1)
    reserved = np.maximum(np.minimum(np.asarray(sm.tp * sm.pp, dtype=float), cores - 1), 1.0)
    steps = np.maximum(np.asarray(steps_per_s, dtype=float), 1e-9)
    busy = frontend_cores(sm, output_tok_s, request_rps, steps)
    rho = np.minimum(busy / reserved, 0.95)
    batch_s = busy / steps  # one step's front-end work, on one of the reserved cores
    return batch_s / 2 + rho * batch_s / (2 * (1 - rho))


def host_terms(sm, output_tok_s: float, request_rps: float, batch: float) -> tuple[float, float]:
    """(host_slowdown, frontend_wait) of one server at a throughput of `output_tok_s` and `request_rps` with `batch`
    tokens per engine step (so output_tok_s / batch steps a second): what the simulation of a plan (planner/predict.py)
    and of a benchmark replay (planner/benchmark.py) both need, from the same numbers. (1.0, 0.0) on a GPU host."""
    steps = output_tok_s / max(batch, 1e-9)
    return (float(host_slowdown(sm, output_tok_s, request_rps, steps)),
            float(frontend_wait(sm, output_tok_s, request_rps, steps)))


FIRST_TOKEN = """A new request is admitted by the API server (`request_ms` of the calibration: HTTP, request processing,
hand-off to the engine core, and the first token's way back), waits for the running step to end (half a step on
average; one more under async scheduling, `async_scheduling_steps`), then its prompt goes in chunks of what the
budget leaves; the steps that carry it hold at least its own chunk of prefill. Without mixing (SGLang) its prompt runs
in prefill batches of the whole budget, without the decodes (steady_state's first_token)."""


def _with_host_share(sm: StepModel, solve):
    """solve(slow) at the fixed point of `slow`, the engine's step time multiplier for the share of a CPU host's cores
    the front end takes at the throughput solve() gives (host_slowdown; 1 on a GPU host, solved once)."""
    slow = 1.0
    out = solve(slow)
    for _ in range(8 if sm._consts["cal"].host_cpu_s_per_token else 0):
        new = host_slowdown(sm, out.output_tok_s, out.request_rps, 1.0 / np.asarray(out.step_s, dtype=float))
        if np.all(np.abs(new - slow) < 1e-3 * slow):
            break
        slow = 0.5 * (slow + new)
        out = solve(slow)
    return out


def steady_state(sm: StepModel, input_len: float, output_len: float, *, max_num_seqs, max_num_batched_tokens,
                 kv_capacity_seqs, concurrency: Optional[float] = None, rate: Optional[float] = None,
                 prefix_cached: float = 0.0, spec: Optional[Speculation] = None, mixed=True) -> SteadyState:
    """Fixed point of Little's law for one replica: either a closed loop of `concurrency` requests, or an open
    loop at `rate` requests/s (Poisson), or (neither) as many requests as the batch limits hold. The batch limits
    may be numpy arrays (one entry per candidate): the search scores a whole ladder of batch sizes in one call.
    `mixed` (per candidate, planner/engines.py `mixed_batches`): prefill chunks ride in the decode steps (vLLM,
    TensorRT-LLM); False: prefills run as batches of their own between decode steps (SGLang), so the decodes wait
    for them and a new prompt gets the whole chunk budget."""
    scalar = np.ndim(max_num_seqs) == 0 and np.ndim(max_num_batched_tokens) == 0 and np.ndim(kv_capacity_seqs) == 0
    seqs = np.asarray(max_num_seqs, dtype=float)
    budget = np.asarray(max_num_batched_tokens, dtype=float)
    cap = np.maximum(1.0, np.minimum(seqs, np.asarray(kv_capacity_seqs, dtype=float)))
    prefill = max(input_len - prefix_cached, 1.0)
    ctx = input_len + output_len / 2
    per_step = spec.tokens_per_step if spec else 1.0
    steps_out = max(output_len / per_step, 1.0)  # decode steps a request lives for

    dp = np.asarray(getattr(sm, "dp", 1), dtype=float)
    mixed = np.asarray(mixed, dtype=bool)
    alone = np.minimum(budget, prefill)  # a prefill batch of its own holds at most the chunk budget

    def step(b, p=None, slow=1.0):
        p = np.minimum(b * prefill / steps_out, np.maximum(budget - b, 1.0)) if p is None else p
        # attention DP: every rank waits for the busiest one's prefill chunk (moe.busiest_rank_prefill)
        busy = moe.busiest_rank_prefill(dp, p, np.minimum(prefill, np.maximum(budget - b, 1.0))) \
            if np.any(dp > 1) else None
        together = np.asarray(_spec_step(sm, spec, b, ctx, p, p * (prefill / 2), busy,
                                         None if busy is None else busy * (prefill / 2)), dtype=float)
        if np.all(mixed):
            return together * slow
        # apart (SGLang): a decode step, plus this step's share p / P of a prefill batch of P tokens on its own
        batch = np.maximum(alone, np.minimum(p, budget))
        apart = np.asarray(_spec_step(sm, spec, b, ctx, 0.0, 0.0), dtype=float) + p / batch * \
            np.asarray(sm.step_seconds(0.0, 0.0, batch, batch * (prefill / 2)), dtype=float)
        return np.where(mixed, together, apart) * slow

    def first_token(b, t, slow=1.0):  # FIRST_TOKEN below says what it counts
        chunk = np.maximum(budget - b, 1.0)
        own = np.maximum(np.minimum(b * prefill / steps_out, chunk), np.minimum(prefill, chunk))
        together = around + (0.5 + wait_steps) * t + np.ceil(prefill / chunk) * step(b, own, slow)
        if np.all(mixed):
            return together
        prefill_alone = np.asarray(sm.step_seconds(0.0, 0.0, alone, alone * (prefill / 2)), dtype=float) * slow
        return np.where(mixed, together, around + (0.5 + wait_steps) * t
                        + np.ceil(prefill / np.maximum(budget, 1.0)) * prefill_alone)

    def solve(slow):
        st, ft = functools.partial(step, slow=slow), functools.partial(first_token, slow=slow)
        if rate is None:
            return _closed_loop(st, ft, cap, concurrency, steps_out, per_step, output_len)
        return _open_loop(st, ft, cap, rate, steps_out, per_step, output_len, prefill, budget)

    around = sm._consts["cal"].request_s  # admission and the first token's way back, outside the engine step
    wait_steps = async_wait_steps(sm)  # async scheduling: scheduled one step later
    out = _with_host_share(sm, solve)
    out = replace(out, ttft_s=out.ttft_s + frontend_wait(sm, out.output_tok_s, out.request_rps,
                                                           1.0 / np.asarray(out.step_s, dtype=float)))
    if scalar:
        return SteadyState(*(np.asarray(x).item() for x in (out.batch, out.step_s, out.tpot_s, out.ttft_s,
                                                             out.output_tok_s, out.request_rps, out.saturated)))
    return out


def _closed_loop(step, first_token, cap, concurrency, steps_out, per_step, output_len) -> SteadyState:
    """`concurrency` requests in flight (None: as many as the batch limit `cap` holds); beyond the cap they queue
    for whole request lifetimes."""
    b = cap if concurrency is None else np.minimum(cap, concurrency)
    t = step(b)
    ttft = first_token(b, t)
    e2e = ttft + (steps_out - 1) * t
    rps = b / e2e
    conc = np.asarray(0.0 if concurrency is None else concurrency, dtype=float)
    waiting = conc > cap
    ttft = np.where(waiting, ttft + (conc / cap - 1) * e2e, ttft)
    return SteadyState(b, t, t / per_step, ttft, rps * output_len, rps, waiting)


def _open_loop(step, first_token, cap, rate, steps_out, per_step, output_len, prefill, budget) -> SteadyState:
    """Poisson arrivals at `rate`: the batch as a fixed point of Little's law, TTFT with an M/D/1 wait on the
    prefill, infinite when the rate exceeds what a full batch serves."""
    b = np.ones_like(cap)
    for _ in range(60):
        t = step(b)
        nb = np.minimum(cap, rate * steps_out * t + rate * t * np.ceil(prefill / budget))
        done = np.all(np.abs(nb - b) < 1e-3 * np.maximum(b, 1.0))
        b = 0.5 * (b + nb)
        if done:
            break
    t = step(b)
    capacity_rps = cap / (steps_out * step(cap))
    saturated = rate > capacity_rps
    service = first_token(b, t)
    rho = np.minimum(rate / capacity_rps, 0.999)
    ttft = np.where(saturated, np.inf, service * (1 + rho / (2 * (1 - rho))))  # M/D/1 wait on the prefill
    served = np.minimum(rate, capacity_rps)
    return SteadyState(b, t, t / per_step, ttft, served * output_len, served, saturated)

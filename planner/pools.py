"""A disaggregated deployment as two pools in series, priced with the product's own models: each request's prompt
runs on a prefill instance (prefill-only steps of the step model, planner/perf.py), its KV cache crosses the link
(planner/kvtransfer.py), and a decode instance recomputes the last prompt token and decodes (the steady state of
planner/steady.py with the prompt's KV already there; the simulation of planner/simulate.py for percentiles).

    grid = score(req, splits, explicit, spec)        # every split in one numpy pass (predict.Grid, slo checks)
    est, kv = refine(req, split, est, spec)           # one split's percentiles from simulating both pools
"""

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from planner import kvtransfer, perf, predict, simulate, slo, steady
from planner.candidates import Sized
from planner.plan import DecodePool, Disaggregation, Dist, OfferedLoad, PrefillPool
from planner.specs import Dtype, Request

BISECTIONS = 24  # closed loop: the throughput X with X x E2E(X) = concurrency, to 2^-24 of the bracket


@dataclass(frozen=True)
class Split:
    """One xPyD candidate: x prefill instances of one layout, y decode instances of another (the same formats)."""

    prefill: Sized  # sized with its own max_num_batched_tokens (prefill.mnbt)
    decode: Sized  # sized with the engine's default chunk; decode.seqs is its max_num_seqs
    x: int
    y: int
    link: kvtransfer.Link
    conn: kvtransfer.Connector
    expert_parallel: bool
    dtype: Dtype

    @property
    def gpus(self) -> int:
        return self.x * self.prefill.tp + self.y * self.decode.tp

    def disaggregation(self) -> Disaggregation:
        p, d = self.prefill, self.decode
        return Disaggregation(
            prefill=PrefillPool(replicas=self.x, tensor_parallel=p.tp,
                                expert_parallel=self.expert_parallel and p.tp > 1, gpus_per_replica=p.tp,
                                max_num_batched_tokens=p.mnbt),
            decode=DecodePool(replicas=self.y, tensor_parallel=d.tp, expert_parallel=self.expert_parallel and d.tp > 1,
                              gpus_per_replica=d.tp, max_num_seqs=int(d.seqs)),
            kv_connector=self.conn.name, kv_link=self.link.name)

    def summary(self) -> str:
        return (f"{self.x}P{self.y}D {self.prefill.quant.value} KV {self.prefill.kv.value}: prefill {self.x} x "
                f"TP{self.prefill.tp} (max_num_batched_tokens {self.prefill.mnbt}), decode {self.y} x "
                f"TP{self.decode.tp} (max_num_seqs {self.decode.seqs}), {self.conn.name} over {self.link.name}")


def step_model(req: Request, s: Split, t: Sized) -> perf.StepModel:
    return perf.StepModel(req.model, req.hw.gpu, req.hw, t.tp, t.pp, s.dtype, t.quant, t.kv,
                          expert_parallel=s.expert_parallel)


def prefill_pool(grid, prompt: float, budget, rate):
    """One prefill instance at `rate` requests/s (arrays: one entry per split): TTFT on it (queue and prompt, an M/D/1
    wait as steady.py's open loop) and its capacity. A prompt goes in ceil(P / budget) chunks; under load a step
    carries a full budget of prompt tokens, each attending to half its prompt on average."""
    chunk = np.minimum(prompt, budget)
    alone = np.ceil(prompt / budget) * grid.step_seconds(0.0, 0.0, chunk, chunk * prompt / 2)
    full = grid.step_seconds(0.0, 0.0, budget, budget * prompt / 2)
    capacity = budget / (prompt * full)
    rho = rate / capacity
    with np.errstate(divide="ignore", invalid="ignore"):
        ttft = np.where(rho < 1, (alone + 0.5 * full * rho) * (1 + rho / (2 * (1 - np.minimum(rho, 0.999)))), np.inf)
    return ttft, capacity


def decode_pool(req: Request, grid, seqs, budget, kv_seqs, rate, spec):
    """One decode instance at `rate` requests/s: the steady state with each prompt's KV loaded (one token left to
    compute), as vLLM's scheduler runs a request whose KV came through the connector (simulate.py remote_prefill)."""
    wl = req.workload
    return steady.steady_state(grid, wl.input_len, wl.output_len, max_num_seqs=seqs, max_num_batched_tokens=budget,
                               kv_capacity_seqs=kv_seqs, rate=rate, prefix_cached=wl.input_len - 1, spec=spec)


@dataclass(frozen=True)
class _Arrays:
    """The per-split constants of a score() call."""

    pgrid: perf.StepGrid
    dgrid: perf.StepGrid
    x: np.ndarray
    y: np.ndarray
    p_budget: np.ndarray
    d_budget: np.ndarray
    seqs: np.ndarray
    kv_seqs: np.ndarray
    xfer_s: np.ndarray
    gpus: np.ndarray


def _arrays(req: Request, splits: list[Split], mean_len: int) -> _Arrays:
    models_p = [step_model(req, s, s.prefill) for s in splits]
    models_d = [step_model(req, s, s.decode) for s in splits]
    idx = np.arange(len(splits))
    model, wl = req.model, req.workload
    xfer = np.array([kvtransfer.seconds(model, s.prefill.kv, s.dtype, wl.input_len, s.prefill.tp, s.decode.tp,
                                        s.link, s.conn) for s in splits])
    return _Arrays(pgrid=perf.StepGrid(models_p, idx), dgrid=perf.StepGrid(models_d, idx),
                   x=np.array([s.x for s in splits], dtype=float), y=np.array([s.y for s in splits], dtype=float),
                   p_budget=np.array([s.prefill.mnbt for s in splits], dtype=float),
                   d_budget=np.array([s.decode.mnbt for s in splits], dtype=float),
                   seqs=np.array([s.decode.seqs for s in splits], dtype=float),
                   kv_seqs=np.array([s.decode.mem.kv_cache_tokens / mean_len for s in splits], dtype=float),
                   xfer_s=xfer, gpus=np.array([s.gpus for s in splits], dtype=float))


def _at_rate(req: Request, a: _Arrays, rate, spec, prompt: float):
    """TTFT, TPOT (s) and served requests/s of every split when the deployment is offered `rate` requests/s."""
    ttft_p, cap_p = prefill_pool(a.pgrid, prompt, a.p_budget, rate / a.x)
    d = decode_pool(req, a.dgrid, a.seqs, a.d_budget, a.kv_seqs, rate / a.y, spec)
    ttft = ttft_p + a.xfer_s + np.asarray(d.ttft_s)
    served = np.minimum(rate, np.minimum(cap_p * a.x, np.asarray(d.request_rps) * a.y))
    return ttft, np.asarray(d.tpot_s), served, np.asarray(d.batch)


def _closed_rate(req: Request, a: _Arrays, conc, spec, prompt: float):
    """The throughput of a closed loop of `conc` requests: X with X x E2E(X) = conc (bisection below the capacity)."""
    _, _, top, _ = _at_rate(req, a, np.full(len(a.x), 1e9), spec, prompt)
    lo, hi = np.zeros_like(top), top * (1 - 1e-6)
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        ttft, tpot, _, _ = _at_rate(req, a, np.maximum(mid, 1e-9), spec, prompt)
        over = mid * (ttft + (req.workload.output_len - 1) * tpot) > conc
        hi, lo = np.where(over, mid, hi), np.where(over, lo, mid)
    return np.maximum(lo, 1e-9)


def score(req: Request, splits: list[Split], explicit: bool, spec: Optional[steady.Speculation],
          prefix_caching: bool, mean_len: int) -> predict.Grid:
    """The analytic steady state and SLO verdict of every split (deployment totals), as predict.score_grid does for
    aggregated candidates. The load: the inputs' rate (an open loop) or concurrency (a closed loop), or, for a
    throughput objective with no load given, full decode batches (y x max_num_seqs requests in flight)."""
    wl = req.workload
    a = _arrays(req, splits, mean_len)
    prompt = max(wl.input_len - (wl.shared_prefix_len if prefix_caching else 0), 1)
    rate, conc, _ = slo.deployment_load(req) if explicit else (None, None, "")
    if rate is None:
        conc = a.y * a.seqs if conc is None else np.full(len(splits), float(conc))
        rate = _closed_rate(req, a, conc, spec, prompt)
    rate = np.broadcast_to(np.asarray(rate, dtype=float), a.x.shape)
    ttft, tpot, served, batch = _at_rate(req, a, rate, spec, prompt)
    ttft_ms, tpot_ms = ttft * 1e3, tpot * 1e3
    e2e = ttft_ms + (wl.output_len - 1) * tpot_ms
    tok = served * wl.output_len
    price = req.hw.gpu.price_usd_per_hour
    with np.errstate(divide="ignore", invalid="ignore"):
        usd = np.where(tok > 0, price * a.gpus / (tok * 3600) * 1e6, np.nan) if price else np.full_like(tok, np.nan)
    checks = slo.check(req.target, slo.Observed(ttft_ms=ttft_ms, tpot_ms=tpot_ms, e2e_latency_ms=e2e,
                                                request_rate_rps=served, output_throughput_tok_s=tok,
                                                usd_per_hour=a.gpus * price if price else None))
    meets = np.logical_and.reduce([np.asarray(c.passed) for c in checks]) if checks else np.ones(len(splits), bool)
    return predict.Grid(ttft_ms=ttft_ms, tpot_ms=tpot_ms, e2e_ms=e2e, output_tok_s=tok,
                        output_tok_s_per_gpu=tok / a.gpus, request_rps=served, batch=batch * a.y, gpus=a.gpus,
                        usd_per_mtok=usd, checks=checks, meets=meets)


def memoized(step_time, resolution: float = 0.005):
    """`step_time` evaluated once per 0.5% band of the decode and prefill context (a decode step adds one token per
    sequence, so neighbouring steps share a band): the same step model, ~20x fewer numpy evaluations per simulation;
    the attention term moves by at most 0.5% within a band."""
    cache: dict = {}
    scale = 1 / math.log1p(resolution)

    def band(tokens: int) -> int:
        return int(math.log1p(tokens) * scale)

    def step(st) -> float:
        k = (st.decode_seqs, band(st.decode_context), st.prefill_tokens, band(st.prefill_context))
        if k not in cache:
            cache[k] = step_time(st)
        return cache[k]
    return step


def load(req: Request, explicit: bool, rate_rps: float) -> OfferedLoad:
    """The load a disaggregated plan is predicted under, offered to its router (one endpoint)."""
    rate, conc, source = slo.deployment_load(req) if explicit else (None, None, "")
    if rate:
        return OfferedLoad(rate, None, 1, f"{source}, through the router")
    if conc:
        return OfferedLoad(None, int(conc), 1, f"{source}, through the router")
    return OfferedLoad(rate_rps, None, 1, "full decode batches (throughput objective with no load given), simulated "
                                          "as the rate they sustain, through the router")


@dataclass(frozen=True)
class Simulated:
    """One prefill and one decode instance simulated together: each request's latencies (ms, in the decode
    instance's order) and how much of its offered rate each instance kept up with."""

    ttft_ms: np.ndarray
    tpot_ms: np.ndarray  # requests with more than one output token
    e2e_ms: np.ndarray
    prefill_ms: np.ndarray  # the prefill instance's part of each TTFT (its queue and the prompt)
    xfer_ms: np.ndarray  # the KV transfer's part
    prefill_kept_up: float
    decode_kept_up: float
    mean_output: float  # output tokens of a mean simulated request
    decode_batch: float  # the decode instance's mean running batch

    def observed(self, p: float) -> slo.Observed:
        """The latencies at percentile `p` (slo.check's input)."""
        def at(v: np.ndarray) -> float:
            return float(np.percentile(v, p))
        return slo.Observed(ttft_ms=at(self.ttft_ms), tpot_ms=at(self.tpot_ms), e2e_latency_ms=at(self.e2e_ms))


def simulate_pools(req: Request, s: Split, spec: Optional[steady.Speculation], prefix_caching: bool,
                   prefill_rps: float, decode_rps: float, n: int = 160) -> Simulated:
    """One prefill instance offered `prefill_rps` (prompts only: one output token), each prompt's KV over the link,
    then one decode instance offered `decode_rps`, from when each request's KV arrived (remote_prefill)."""
    wl = req.workload
    ins = simulate.lengths(wl.input_len, wl.range_ratio, n, seed=1)
    outs = simulate.lengths(wl.output_len, wl.range_ratio, n, seed=2)
    per_step = spec.tokens_per_step if spec else 1.0
    steps = np.maximum(np.ceil(outs / per_step), 1).astype(int)
    sm_p, sm_d = step_model(req, s, s.prefill), step_model(req, s, s.decode)
    prefix = wl.shared_prefix_len if prefix_caching else 0
    pre = simulate.simulate(memoized(lambda st: float(sm_p.step_seconds(st.decode_seqs, st.decode_context,
                                                                        st.prefill_tokens, st.prefill_context))),
                            ins, np.ones(n, dtype=int), simulate.Arrivals(prefill_rps, wl.burstiness),
                            max_num_seqs=int(s.prefill.seqs), max_num_batched_tokens=s.prefill.mnbt,
                            kv_blocks=s.prefill.mem.kv_cache_blocks, block_size=s.prefill.mem.block_size,
                            prefix_cached_tokens=prefix)
    xfer = kvtransfer.seconds(req.model, s.prefill.kv, s.dtype, ins, s.prefill.tp, s.decode.tp, s.link, s.conn)
    arrive = simulate.send_times(simulate.Arrivals(decode_rps, wl.burstiness), n, seed=3) + pre.ttft_s + xfer
    order = np.argsort(arrive, kind="stable")

    def decode_step(st) -> float:
        return float(steady._spec_step(sm_d, spec, st.decode_seqs, st.decode_context / max(st.decode_seqs, 1),
                                       st.prefill_tokens, st.prefill_context))

    dec = simulate.simulate(memoized(decode_step), ins[order], steps[order],
                            simulate.Arrivals(decode_rps, wl.burstiness),
                            max_num_seqs=int(s.decode.seqs), max_num_batched_tokens=s.decode.mnbt,
                            kv_blocks=s.decode.mem.kv_cache_blocks, block_size=s.decode.mem.block_size,
                            send_s=arrive[order], remote_prefill=True)
    before = (pre.ttft_s + xfer)[order]
    o = outs[order]
    ok = o > 1
    return Simulated(ttft_ms=(before + dec.ttft_s) * 1e3, tpot_ms=(dec.e2e_s - dec.ttft_s)[ok] * 1e3 / (o[ok] - 1),
                     e2e_ms=(before + dec.e2e_s) * 1e3, prefill_ms=pre.ttft_s[order] * 1e3,
                     xfer_ms=np.asarray(xfer, dtype=float) * np.ones(n) * 1e3,
                     prefill_kept_up=float(pre.kept_up()), decode_kept_up=float(dec.kept_up()),
                     mean_output=float(outs.mean()), decode_batch=float(dec.mean_batch))


def refine(req: Request, s: Split, est: predict.Estimate, spec: Optional[steady.Speculation],
           prefix_caching: bool, n: int = 160) -> tuple[predict.Estimate, Dist]:
    """One split's percentiles and verdict from simulating one prefill and one decode instance (simulate_pools), each
    at its share of the rate. A closed loop is simulated as the open loop at the throughput the analytic model gives
    it (Little's law), Poisson, so its tails are no better than the closed loop's. Returns the refined estimate and
    the KV transfer times."""
    p = req.target.percentile
    rate = est.request_rps if not (req.workload.request_rate or req.target.min_request_rate) else \
        slo.deployment_load(req)[0]
    sim = simulate_pools(req, s, spec, prefix_caching, rate / s.x, rate / s.y, n)
    rps = float(rate * min(sim.prefill_kept_up, sim.decode_kept_up))
    out = rps * sim.mean_output
    price = req.hw.gpu.price_usd_per_hour
    refined = replace(est, ttft_ms=predict._dist(sim.ttft_ms, p), tpot_ms=predict._dist(sim.tpot_ms, p),
                      e2e_ms=predict._dist(sim.e2e_ms, p), output_tok_s=out, output_tok_s_per_gpu=out / s.gpus,
                      request_rps=rps, batch=sim.decode_batch * s.y,
                      usd_per_mtok=price * s.gpus / (out * 3600) * 1e6 if price and out > 0 else None)
    return predict.verdict(req, refined), predict._dist(sim.xfer_ms, p)

"""Predict how a candidate serves the target's load, check it against the SLOs, and rank candidates.

The analytic steady state (planner/perf.py) ranks every candidate; the discrete-event simulation
(planner/simulate.py) gives the chosen plan's percentiles (TTFT under load is a queueing problem:
shared/reference/perf-anchors.md).
"""

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from planner import perf, slo, steady
from planner.plan import Brief, Dist, OfferedLoad, Prediction, Violation
from planner.specs import Objective, Request

MODEL = ("analytic roofline step model + discrete-event simulation of continuous batching "
         "(planner/perf.py, planner/simulate.py)")


@dataclass(frozen=True)
class Estimate:
    """One candidate's predicted service (deployment totals) and its verdict against the target. Latencies are
    Dists: means only from the analytic steady state, percentiles too once the simulation refined it."""

    ttft_ms: Dist
    tpot_ms: Dist
    e2e_ms: Dist
    output_tok_s: float
    output_tok_s_per_gpu: float
    request_rps: float
    batch: float
    gpus: int
    usd_per_mtok: Optional[float]
    violations: tuple[Violation, ...] = ()

    @property
    def meets(self) -> bool:
        return not self.violations

    def brief(self) -> Brief:
        return Brief(ttft_ms=self.ttft_ms.mean, tpot_ms=self.tpot_ms.mean,
                     output_tok_s_per_gpu=self.output_tok_s_per_gpu, meets_target=self.meets)


@dataclass(frozen=True)
class Grid:
    """Every candidate of a search, one array entry each (deployment totals, like Estimate's fields)."""

    ttft_ms: object
    tpot_ms: object
    e2e_ms: object
    output_tok_s: object
    output_tok_s_per_gpu: object
    request_rps: object
    batch: object
    gpus: object
    usd_per_mtok: object  # nan where the hardware has no price
    checks: tuple  # slo.Check with arrays
    meets: object

    def __len__(self) -> int:
        return len(self.meets)

    def score(self, objective: Objective):
        """The objective's sort key (smaller is better): latency TPOT + TTFT/50, cost $/Mtok, else -tok/s/GPU."""
        if objective is Objective.latency:
            return self.tpot_ms + self.ttft_ms / 50
        if objective is Objective.cost and not np.all(np.isnan(self.usd_per_mtok)):
            return self.usd_per_mtok
        return -self.output_tok_s_per_gpu

    def estimate(self, i: int) -> Estimate:
        bad = tuple(Violation(c.metric, float(c.observed[i]), c.limit) for c in self.checks if not c.passed[i])
        usd = float(self.usd_per_mtok[i])
        return Estimate(ttft_ms=Dist(float(self.ttft_ms[i])), tpot_ms=Dist(float(self.tpot_ms[i])),
                        e2e_ms=Dist(float(self.e2e_ms[i])), output_tok_s=float(self.output_tok_s[i]),
                        output_tok_s_per_gpu=float(self.output_tok_s_per_gpu[i]),
                        request_rps=float(self.request_rps[i]), batch=float(self.batch[i]), gpus=int(self.gpus[i]),
                        usd_per_mtok=None if math.isnan(usd) else usd, violations=bad)


def score_grid(req: Request, grid: perf.StepGrid, *, replicas, max_num_seqs, max_num_batched_tokens,
               kv_capacity_seqs, prefix_caching: bool, explicit: bool,
               spec: Optional[steady.Speculation] = None, mixed=True) -> Grid:
    """The analytic steady state and the SLO verdict of every candidate in one numpy pass. Arrays have an entry per
    candidate; the load each replica sees is the workload's split over its replicas (`explicit`) or, for a
    throughput objective with no load given, a full batch (max_num_seqs requests in flight), as slo.offered."""
    wl = req.workload
    replicas = np.asarray(replicas, dtype=float)
    seqs = np.asarray(max_num_seqs, dtype=float)
    conc = rate = None
    if not explicit:
        conc = seqs
    else:
        total_rate, total_conc, _ = slo.deployment_load(req)
        if total_rate:
            rate = total_rate / replicas
        else:
            conc = np.ceil(total_conc / replicas)
    prefix = wl.shared_prefix_len if prefix_caching else 0
    s = steady.steady_state(grid, wl.input_len, wl.output_len, max_num_seqs=seqs,
                          max_num_batched_tokens=np.asarray(max_num_batched_tokens, dtype=float),
                          kv_capacity_seqs=np.asarray(kv_capacity_seqs, dtype=float), concurrency=conc, rate=rate,
                          prefix_cached=prefix, spec=spec, mixed=mixed)
    gpus = grid.tp * grid.pp * replicas
    tok = s.output_tok_s * replicas
    ttft, tpot = s.ttft_s * 1e3, s.tpot_s * 1e3
    e2e = ttft + (wl.output_len - 1) * tpot
    rps = s.request_rps * replicas
    price = req.hw.gpu.price_usd_per_hour
    with np.errstate(divide="ignore", invalid="ignore"):
        usd = np.where(tok > 0, price * gpus / (tok * 3600) * 1e6, np.nan) if price else np.full_like(tok, np.nan)
    checks = slo.check(req.target, slo.Observed(ttft_ms=ttft, tpot_ms=tpot, e2e_latency_ms=e2e, request_rate_rps=rps,
                                                output_throughput_tok_s=tok,
                                                usd_per_hour=gpus * price if price else None))
    meets = np.logical_and.reduce([np.asarray(c.passed) for c in checks]) if checks else \
        np.ones(len(seqs), dtype=bool)
    return Grid(ttft_ms=ttft, tpot_ms=tpot, e2e_ms=e2e, output_tok_s=tok, output_tok_s_per_gpu=tok / gpus,
                request_rps=rps, batch=np.asarray(s.batch, dtype=float), gpus=gpus, usd_per_mtok=usd,
                checks=checks, meets=meets)


def verdict(req: Request, est: Estimate) -> Estimate:
    """The estimate with its violations: every SLO at the target's percentile (slo.check)."""
    p = req.target.percentile
    price = req.hw.gpu.price_usd_per_hour
    observed = slo.Observed(ttft_ms=est.ttft_ms.at(p), tpot_ms=est.tpot_ms.at(p), e2e_latency_ms=est.e2e_ms.at(p),
                            request_rate_rps=est.request_rps, output_throughput_tok_s=est.output_tok_s,
                            usd_per_hour=price * est.gpus if price else None)
    return replace(est, violations=slo.violations(slo.check(req.target, observed)))


def _dist(values: np.ndarray, percentile: float) -> Dist:
    qs = sorted({50.0, 90.0, 99.0, float(percentile)})
    return Dist(mean=float(np.mean(values)), quantiles=tuple((q, float(np.percentile(values, q))) for q in qs))


def sim_step_time(sm: perf.StepModel, spec: Optional[steady.Speculation], slow: float = 1.0):
    """The simulation's step-time model: the step model (with speculation's verify and draft work), times the CPU
    host's front-end slowdown `slow` (steady.host_slowdown; 1 on a GPU host)."""
    def step_time(st) -> float:
        return slow * float(steady._spec_step(sm, spec, st.decode_seqs, st.decode_context / max(st.decode_seqs, 1),
                                              st.prefill_tokens, st.prefill_context))
    return step_time


def run_length(load: OfferedLoad, batch: float) -> tuple[int, int, int]:
    """(requests simulated, warm-up requests dropped, drain requests dropped) for a steady-state run: the running
    batch reaches what Little's law gives only after about one batch of requests has gone through, and the last
    batch drains at a falling load, so both are dropped and enough requests remain between them."""
    inflight = max(1, int(load.concurrency or math.ceil(batch)))
    n = int(min(max(120, 3 * inflight + 120), 3000))
    edge = min(inflight, n // 3)
    return n, edge, edge


def _steady_rates(res, outs: np.ndarray, warm: int, drain: int) -> tuple[float, float]:
    """Requests and output tokens per second between the warm-th and the (n - drain)-th completion (in time):
    the steady part of a closed loop, without its ramp and drain."""
    order = np.argsort(res.done_s, kind="stable")
    lo, hi = warm, res.done_s.size - 1 - drain
    if hi <= lo or res.done_s[order[hi]] <= res.done_s[order[lo]]:
        return res.request_throughput(), res.output_throughput()
    span = float(res.done_s[order[hi]] - res.done_s[order[lo]])
    return (hi - lo) / span, float(outs[order[lo + 1:hi + 1]].sum()) / span


def simulate_percentiles(req: Request, sm: perf.StepModel, est: Estimate, *, load: OfferedLoad,
                         server: "simulate.Server", spec: Optional[steady.Speculation] = None) -> Estimate:
    """Refine a candidate with the discrete-event simulation of one replica under `load`, scheduled as its engine
    schedules (server.engine): the steady-state distributions of TTFT, TPOT and E2E (the target's percentile among
    them), throughput, and the verdict at that percentile."""
    from planner import simulate

    wl = req.workload
    replicas = load.replicas
    n, warm, drain = run_length(load, est.batch)
    ins = simulate.lengths(wl.input_len, wl.range_ratio, n, seed=1)
    outs = simulate.lengths(wl.output_len, wl.range_ratio, n, seed=2)
    per_step = spec.tokens_per_step if spec else 1.0
    steps = np.maximum(np.ceil(outs / per_step), 1).astype(int)  # with speculation a decode step emits E tokens
    slow = float(steady.host_slowdown(sm, est.output_tok_s / replicas, est.request_rps / replicas))
    arrivals = simulate.Arrivals(request_rate=load.request_rate_rps, burstiness=wl.burstiness,
                                 max_concurrency=load.concurrency)
    res = simulate.run(sim_step_time(sm, spec, slow), ins, steps, arrivals, server,
                       shared_prefix_len=wl.shared_prefix_len, num_prefixes=wl.num_prefixes)
    keep = slice(warm, n - drain)  # requests in send order: the steady part of the run
    p = req.target.percentile
    ttft, e2e = res.ttft_s[keep] * 1e3, res.e2e_s[keep] * 1e3
    gaps = (res.e2e_s - res.ttft_s)[keep] * 1e3
    ok = outs[keep] > 1
    tpot = gaps[ok] / (outs[keep][ok] - 1)  # per emitted token (speculation emits more than one per step)
    rps, out = _steady_rates(res, outs, warm, drain)
    rps, out = rps * replicas, out * replicas
    if load.request_rate_rps:  # an open loop: what the replica sustains, not the run's ramp and drain
        rps = load.request_rate_rps * res.kept_up() * replicas
        out = rps * float(outs.mean())
    gpus = est.gpus
    price = req.hw.gpu.price_usd_per_hour
    refined = replace(est, ttft_ms=_dist(ttft, p), tpot_ms=_dist(tpot, p), e2e_ms=_dist(e2e, p), output_tok_s=out,
                      output_tok_s_per_gpu=out / gpus, request_rps=rps, batch=res.mean_batch,
                      usd_per_mtok=price * gpus / (out * 3600) * 1e6 if price and out > 0 else None)
    return verdict(req, refined)


def prediction(est: Estimate, req: Request, load: OfferedLoad) -> Prediction:
    """The plan's typed prediction (DESIGN.md `prediction:`), with the constraint that binds (slo.binding)."""
    return Prediction(model=MODEL, load=load, ttft_ms=est.ttft_ms, tpot_ms=est.tpot_ms, e2e_latency_ms=est.e2e_ms,
                      output_throughput_tok_s=est.output_tok_s, output_throughput_tok_s_per_gpu=est.output_tok_s_per_gpu,
                      request_throughput_rps=est.request_rps, concurrency=est.batch,
                      cost_usd_per_mtok=est.usd_per_mtok, percentile=req.target.percentile,
                      violations=est.violations,
                      binding_constraint=slo.describe(slo.binding(est.violations), req.target.percentile))

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
    # the steady state is one engine's: a server with attention DP runs dp engines (schedulers, KV caches) in step
    ranks = replicas * np.asarray(grid.dp, dtype=float)
    seqs = np.asarray(max_num_seqs, dtype=float)
    conc = rate = None
    if not explicit:
        conc = seqs
    else:
        total_rate, total_conc, _ = slo.deployment_load(req)
        if total_rate:
            rate = total_rate / ranks
        else:
            conc = np.ceil(total_conc / ranks)
    prefix = wl.shared_prefix_len if prefix_caching else 0
    s = steady.steady_state(grid, wl.input_len, wl.output_len, max_num_seqs=seqs,
                          max_num_batched_tokens=np.asarray(max_num_batched_tokens, dtype=float),
                          kv_capacity_seqs=np.asarray(kv_capacity_seqs, dtype=float), concurrency=conc, rate=rate,
                          prefix_cached=prefix, spec=spec, mixed=mixed)
    gpus = grid.tp * grid.pp * ranks
    tok = s.output_tok_s * ranks
    ttft, tpot = s.ttft_s * 1e3, s.tpot_s * 1e3
    e2e = ttft + (wl.output_len - 1) * tpot
    rps = s.request_rps * ranks
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


def sim_step_time(sm: perf.StepModel, spec: Optional[steady.Speculation], slow: float = 1.0,
                  others: Optional[float] = None, input_len: float = 0.0):
    """The simulation's step-time model: the step model (with speculation's verify and draft work, and with
    attention DP the busiest other rank's prefill `others` of prompts `input_len` long), times the CPU host's
    front-end slowdown `slow` (steady.host_slowdown; 1 on a GPU host)."""
    busy = (None, None) if others is None else (others, others * input_len / 2)

    def step_time(st) -> float:
        return slow * float(steady._spec_step(sm, spec, st.decode_seqs, st.decode_context / max(st.decode_seqs, 1),
                                              st.prefill_tokens, st.prefill_context, *busy))
    return step_time


def outside_s(sm: perf.StepModel, spec: Optional[steady.Speculation], slow: float, batch: float,
              ctx: float, frontend: float = 0.0) -> float:
    """Seconds every request spends outside the simulated engine: admission and the first token's way back
    (`request_ms`), on a CPU host its wait behind the front end (`frontend`, steady.frontend_wait), and under async
    scheduling the step a new request waits because the next one was scheduled before it came (a decode step at the
    running batch)."""
    cal = sm._consts["cal"]
    return cal.request_s + frontend + float(steady.async_wait_steps(sm)) * slow * float(
        steady._spec_step(sm, spec, max(batch, 1.0), ctx, 0, 0))


def loop_delay_s(sm: perf.StepModel, frontend: float = 0.0) -> float:
    """A closed loop's gap between a request's last token at the engine and its successor's arrival there: the
    token's way to the client and the new request's way in (`request_ms`, measured as both ways around one request),
    and on a CPU host the wait behind the front end (steady.frontend_wait). The async-scheduling step of outside_s is
    not in it: that one is the engine's, and the simulation's step boundaries already give it its place."""
    return sm._consts["cal"].request_s + frontend


def run_length(concurrency: Optional[int], rate: Optional[float], num_prompts: int, batch: float
               ) -> tuple[int, slice]:
    """(requests simulated, the measured ones) of a steady-state run. A closed loop as verify sends it
    (LoadSpec.settle): `concurrency` requests fill the loop, the measured ones follow, and up to twice the loop more
    keep it full until they end. An open loop: the running batch reaches what Little's law gives only after about
    one batch of requests, and the last batch drains at a falling load, so both are dropped and enough remain
    between them."""
    if concurrency and not rate:
        warm = int(concurrency)
        measured = int(min(num_prompts, 1024))
        return warm + measured + 2 * warm, slice(warm, warm + measured)
    inflight = max(1, math.ceil(batch))
    n = int(min(max(120, 3 * inflight + 120), 3000))
    edge = min(inflight, n // 3)
    return n, slice(edge, n - edge)


def simulate_percentiles(req: Request, sm: perf.StepModel, est: Estimate, *, load: OfferedLoad,
                         server: "simulate.Server", spec: Optional[steady.Speculation] = None) -> Estimate:
    """Refine a candidate with the discrete-event simulation of one engine under its share of `load`, scheduled as
    its engine schedules (server.engine: vLLM, TensorRT-LLM or SGLang, planner/sched/): the steady-state
    distributions of TTFT, TPOT and E2E (the target's percentile among them), throughput, and the verdict at that
    percentile."""
    from planner import simulate

    wl = req.workload
    # one engine simulated: a server with attention DP runs sm.dp of them, each with its share of the load
    dp = sm.dp
    replicas = load.replicas * dp
    concurrency = math.ceil(load.concurrency / dp) if load.concurrency else None
    rate = load.request_rate_rps / dp if load.request_rate_rps else None
    n, m = run_length(concurrency, rate, wl.num_prompts, est.batch)
    ins = simulate.lengths(wl.input_len, wl.range_ratio, n, seed=1)
    outs = simulate.lengths(wl.output_len, wl.range_ratio, n, seed=2)
    per_step = spec.tokens_per_step if spec else 1.0
    steps = np.maximum(np.ceil(outs / per_step), 1).astype(int)  # with speculation a decode step emits E tokens

    batch = max(est.batch, 1.0) * per_step
    slow, wait = steady.host_terms(sm, est.output_tok_s / replicas, est.request_rps / replicas, batch)
    # attention DP: the other ranks' busiest prefill chunk in a step, which this rank waits for (moe.py)
    prefill = wl.input_len - (wl.shared_prefix_len if server.prefix_caching else 0)
    others = steady.other_ranks_prefill(sm, est.batch, prefill, wl.output_len, server.max_num_batched_tokens)
    arrivals = simulate.Arrivals(request_rate=rate, burstiness=wl.burstiness, max_concurrency=concurrency)
    res = simulate.run(sim_step_time(sm, spec, slow, others, wl.input_len), ins, steps, arrivals, server,
                       shared_prefix_len=wl.shared_prefix_len, num_prefixes=wl.num_prefixes,
                       loop_delay_s=loop_delay_s(sm, wait))
    p = req.target.percentile
    around = outside_s(sm, spec, slow, est.batch, wl.input_len + wl.output_len / 2, wait)
    ttft = (res.ttft_s[m] + around) * 1e3
    e2e = (res.e2e_s[m] + around) * 1e3
    ok = outs[m] > 1
    tpot = (e2e - ttft)[ok] / (outs[m][ok] - 1)  # per emitted token (speculation emits several per step)
    out = res.output_throughput() * replicas * (float(outs.sum()) / float(steps.sum()))
    rps = res.request_throughput() * replicas
    if concurrency and not rate:  # a full loop: Little's law, as verify computes it (LoadResult.in_flight)
        rps = concurrency / float(np.mean(e2e)) * 1e3 * replicas
        out = rps * float(outs[m].mean())
    if rate:  # an open loop: what the engine sustains, not the run's ramp and drain
        rps = rate * res.kept_up() * replicas
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

"""Predict how a candidate serves the target's load, check it against the SLOs, and rank candidates.

The analytic steady state (planner/perf.py) ranks every candidate; the discrete-event simulation
(planner/simulate.py) gives the chosen plan's percentiles (TTFT under load is a queueing problem:
shared/reference/perf-anchors.md).
"""

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from planner import perf
from planner.specs import Objective, Request


@dataclass(frozen=True)
class Load:
    """The offered load one replica sees."""

    concurrency: Optional[float]  # closed loop: requests in flight
    rate: Optional[float]  # open loop: requests/s
    describe: str


def offered(req: Request) -> tuple[Optional[float], Optional[int], str]:
    """The deployment's load: (requests/s, None) for an open loop, the workload's rate or else a QPS target's; or
    (None, requests in flight) for a closed loop; and where it comes from."""
    wl, target = req.workload, req.target
    if wl.request_rate:
        return wl.request_rate, None, "workload.request_rate"
    if target.min_request_rate:
        return target.min_request_rate, None, "target.min_request_rate"
    if wl.max_concurrency:
        return None, wl.max_concurrency, "workload.max_concurrency"
    return None, target.min_concurrency, "target.min_concurrency"


def load_per_replica(req: Request, replicas: int) -> Load:
    rate, conc, source = offered(req)
    if rate:
        return Load(None, rate / replicas, f"{rate:g} req/s" + (f" ({source})" if source.startswith("target") else "")
                    + f" over {replicas} replica(s)")
    return Load(math.ceil(conc / replicas), None, f"{conc} concurrent requests ({source}) over {replicas} replica(s)")


@dataclass(frozen=True)
class Estimate:
    """One candidate's predicted service (deployment totals) and its verdict against the target."""

    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    output_tok_s: float
    output_tok_s_per_gpu: float
    request_rps: float
    batch: float
    gpus: int
    usd_per_mtok: Optional[float]
    violations: tuple = ()  # (constraint, predicted, limit)
    percentiles: dict = field(default_factory=dict)  # metric -> {p50, p90, p99} from the simulation

    @property
    def meets(self) -> bool:
        return not self.violations


def explicit_load(req: Request) -> bool:
    """Does the request fix the load (a rate or a concurrency), or is the replica's batch the planner's to choose?"""
    return bool(req.workload.request_rate or req.workload.max_concurrency or req.target.min_request_rate
                or req.target.objective is Objective.latency)


def saturated_load(max_num_seqs: int, replicas: int) -> Load:
    return Load(float(max_num_seqs), None, f"{max_num_seqs} concurrent requests per replica (the batch limit: "
                                           f"throughput objective with no workload rate or concurrency)")


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
    violated: dict  # constraint -> (predicted array, limit): where predicted breaks the limit
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
        bad = tuple((name, float(v[i]), limit) for name, (v, limit, broken) in self.violated.items() if broken[i])
        usd = float(self.usd_per_mtok[i])
        return Estimate(ttft_ms=float(self.ttft_ms[i]), tpot_ms=float(self.tpot_ms[i]), e2e_ms=float(self.e2e_ms[i]),
                        output_tok_s=float(self.output_tok_s[i]),
                        output_tok_s_per_gpu=float(self.output_tok_s_per_gpu[i]),
                        request_rps=float(self.request_rps[i]), batch=float(self.batch[i]), gpus=int(self.gpus[i]),
                        usd_per_mtok=None if math.isnan(usd) else usd, violations=bad)


def score_grid(req: Request, grid: perf.StepGrid, *, replicas, max_num_seqs, max_num_batched_tokens,
               kv_capacity_seqs, prefix_caching: bool, explicit: bool,
               spec: Optional[perf.Speculation] = None) -> Grid:
    """The analytic steady state and the SLO verdict of every candidate in one numpy pass. Arrays have an entry per
    candidate; the load each replica sees is the workload's split over its replicas (`explicit`) or, for a
    throughput objective with no load given, a full batch (max_num_seqs requests in flight)."""
    wl, t = req.workload, req.target
    replicas = np.asarray(replicas, dtype=float)
    seqs = np.asarray(max_num_seqs, dtype=float)
    conc = rate = None
    if not explicit:
        conc = seqs
    else:
        total_rate, total_conc, _ = offered(req)
        if total_rate:
            rate = total_rate / replicas
        else:
            conc = np.ceil(total_conc / replicas)
    prefix = wl.shared_prefix_len if prefix_caching else 0
    s = perf.steady_state(grid, wl.input_len, wl.output_len, max_num_seqs=seqs,
                          max_num_batched_tokens=np.asarray(max_num_batched_tokens, dtype=float),
                          kv_capacity_seqs=np.asarray(kv_capacity_seqs, dtype=float), concurrency=conc, rate=rate,
                          prefix_cached=prefix, spec=spec)
    gpus = grid.tp * grid.pp * replicas
    tok = s.output_tok_s * replicas
    ttft, tpot = s.ttft_s * 1e3, s.tpot_s * 1e3
    e2e = ttft + (wl.output_len - 1) * tpot
    rps = s.request_rps * replicas
    price = req.hw.gpu.price_usd_per_hour
    with np.errstate(divide="ignore", invalid="ignore"):
        usd = np.where(tok > 0, price * gpus / (tok * 3600) * 1e6, np.nan) if price else np.full_like(tok, np.nan)
    checks = {"ttft_ms": (ttft, t.ttft_ms, True), "tpot_ms": (tpot, t.tpot_ms, True),
              "e2e_latency_ms": (e2e, t.e2e_latency_ms, True),
              "min_request_rate": (rps, t.min_request_rate, False),
              "min_output_throughput_tok_s": (tok, t.min_output_throughput_tok_s, False),
              "max_usd_per_hour": (gpus * (price or 0.0), t.max_usd_per_hour if price else None, True)}
    violated = {name: (v, limit, v > limit if upper else v < limit)
                for name, (v, limit, upper) in checks.items() if limit is not None}
    meets = ~np.logical_or.reduce([broken for _, _, broken in violated.values()]) if violated else \
        np.ones(len(seqs), dtype=bool)
    return Grid(ttft_ms=ttft, tpot_ms=tpot, e2e_ms=e2e, output_tok_s=tok, output_tok_s_per_gpu=tok / gpus,
                request_rps=rps, batch=np.asarray(s.batch, dtype=float), gpus=gpus, usd_per_mtok=usd,
                violated=violated, meets=meets)


def _with_verdict(req: Request, est: Estimate, use_percentile: bool = False) -> Estimate:
    from dataclasses import replace

    t = req.target
    p = f"p{t.percentile:g}"

    def at(metric: str, mean: float) -> float:
        return est.percentiles.get(metric, {}).get(p, mean) if use_percentile else mean

    checks = [("ttft_ms", at("ttft_ms", est.ttft_ms), t.ttft_ms), ("tpot_ms", at("tpot_ms", est.tpot_ms), t.tpot_ms),
              ("e2e_latency_ms", at("e2e_latency_ms", est.e2e_ms), t.e2e_latency_ms)]
    bad = [(name, value, limit) for name, value, limit in checks if limit is not None and value > limit]
    if t.min_request_rate is not None and est.request_rps < t.min_request_rate:
        bad.append(("min_request_rate", est.request_rps, t.min_request_rate))
    if t.min_output_throughput_tok_s is not None and est.output_tok_s < t.min_output_throughput_tok_s:
        bad.append(("min_output_throughput_tok_s", est.output_tok_s, t.min_output_throughput_tok_s))
    price = req.hw.gpu.price_usd_per_hour
    if t.max_usd_per_hour is not None and price is not None and price * est.gpus > t.max_usd_per_hour:
        bad.append(("max_usd_per_hour", price * est.gpus, t.max_usd_per_hour))
    return replace(est, violations=tuple(bad))


def simulate_percentiles(req: Request, sm: perf.StepModel, est: Estimate, *, replicas: int, max_num_seqs: int,
                         max_num_batched_tokens: int, kv_blocks: int, block_size: int,
                         prefix_caching: bool, load: Optional[Load] = None,
                         spec: Optional[perf.Speculation] = None) -> Estimate:
    """Refine a candidate with the discrete-event simulation of one replica: p50/p90/p99 of TTFT, TPOT, E2E."""
    from dataclasses import replace

    import numpy as np

    from planner import simulate

    wl = req.workload
    load = load or load_per_replica(req, replicas)
    # Steady state, not the cold start: a closed loop begins with `concurrency` requests at once, a burst whose
    # queued prefills would dominate the percentiles of a short run; those first requests are dropped.
    warm = int(load.concurrency) if load.concurrency else 0
    n = int(min(max(120, 2 * warm), 1024))
    warm = min(warm, n // 2)
    ins = simulate.lengths(wl.input_len, wl.range_ratio, n, seed=1)
    outs = simulate.lengths(wl.output_len, wl.range_ratio, n, seed=2)
    per_step = spec.tokens_per_step if spec else 1.0
    steps = np.maximum(np.ceil(outs / per_step), 1).astype(int)  # with speculation a decode step emits E tokens

    def step_time(st) -> float:
        return float(perf._spec_step(sm, spec, st.decode_seqs, st.decode_context / max(st.decode_seqs, 1),
                                     st.prefill_tokens, st.prefill_context))

    arrivals = simulate.Arrivals(request_rate=load.rate, burstiness=wl.burstiness,
                                 max_concurrency=int(load.concurrency) if load.concurrency else None)
    res = simulate.simulate(step_time, ins, steps, arrivals, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max_num_batched_tokens, kv_blocks=kv_blocks,
                            block_size=block_size, prefix_cached_tokens=wl.shared_prefix_len if prefix_caching else 0)
    pct = {}
    for key, metric in (("ttft_ms", "ttft"), ("tpot_ms", "tpot"), ("e2e_latency_ms", "e2e")):
        values = getattr(res, f"{metric}_s")[warm:] * 1e3
        if metric == "tpot" and spec:  # per emitted token, not per step
            ok = outs > 1
            values = (getattr(res, "e2e_s") - getattr(res, "ttft_s"))[ok][warm:] * 1e3 / (outs[ok][warm:] - 1)
        pct[key] = {f"p{q:g}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}
        pct[key]["mean"] = round(float(np.mean(values)), 3)
    out = res.output_throughput() * replicas * (float(outs.sum()) / float(steps.sum()))
    rps = res.request_throughput() * replicas
    if load.rate:  # an open loop: what the replica sustains, not the run's ramp and drain
        rps = load.rate * res.kept_up() * replicas
        out = rps * float(outs.mean())
    gpus = est.gpus
    price = req.hw.gpu.price_usd_per_hour
    refined = replace(est, ttft_ms=pct["ttft_ms"]["mean"], tpot_ms=pct["tpot_ms"]["mean"],
                      e2e_ms=pct["e2e_latency_ms"]["mean"], output_tok_s=out, output_tok_s_per_gpu=out / gpus,
                      request_rps=rps, batch=res.mean_batch,
                      usd_per_mtok=price * gpus / (out * 3600) * 1e6 if price and out > 0 else None,
                      percentiles=pct)
    return _with_verdict(req, refined, use_percentile=True)


def document(est: Estimate, req: Request, load: Load) -> dict:
    """The plan document's `prediction:` block (DESIGN.md keys)."""
    p = est.percentiles or {}

    def dist(key: str, mean: float) -> dict:
        return p.get(key) or {"p50": round(mean, 3), "p90": None, "p99": None, "mean": round(mean, 3)}

    binding = None
    if est.violations:
        name, value, limit = max(est.violations, key=lambda v: v[1] / v[2] if v[2] else 0)
        binding = f"{name}: predicted {value:,.1f} vs target {limit:,.1f}"
    return {
        "model": "analytic roofline step model + discrete-event simulation of continuous batching "
                 "(planner/perf.py, planner/simulate.py)",
        "load": load.describe,
        "ttft_ms": dist("ttft_ms", est.ttft_ms),
        "tpot_ms": dist("tpot_ms", est.tpot_ms),
        "e2e_latency_ms": dist("e2e_latency_ms", est.e2e_ms),
        "output_throughput_tok_s": round(est.output_tok_s, 1),
        "output_throughput_tok_s_per_gpu": round(est.output_tok_s_per_gpu, 1),
        "request_throughput_rps": round(est.request_rps, 3),
        "concurrency": round(est.batch, 1),
        "cost_usd_per_mtok": None if est.usd_per_mtok is None else round(est.usd_per_mtok, 3),
        "meets_target": est.meets,
        "binding_constraint": binding,
        "percentile": req.target.percentile,
    }

"""A mix of GPU types for one workload (hw=any with a request rate): short requests on cheaper GPUs, long ones on
bigger, after Mélange (Griggs et al. 2024, "Mélange: Cost Efficient Large Language Model Serving by Exploiting GPU
Heterogeneity", arXiv:2404.14527: up to 77% lower cost than one GPU type on conversational traffic). Mélange profiles
each GPU per request size; here each GPU type's capacity per size bucket comes from our own step model and steady
state (no profiling run), and the mix the assignment picks is checked by the simulation.

    m = best_mix(req, options)   # Mix: each size bucket's GPU type, replicas per type, $/hour; None: no rate or no gain

The workload's lengths are uniform in [mean(1-r), mean(1+r)] (vllm bench serve's random dataset); the buckets are its
input and output halves (4 buckets of 25% of the requests each). Each bucket is served wholly by one GPU type (its
requests routed by length); every assignment of buckets to types is priced, the cheapest kept.
"""

import itertools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner import perf, simulate, slo, steady
from planner.pools import memoized
from planner.specs import Request, length_range

RATES = np.geomspace(0.01, 2000.0, 200)  # requests/s per replica tried for each bucket's capacity
CHECKED = 4  # mixes (two GPU types or more), cheapest by the analytic capacities, whose counts the simulation sets


@dataclass(frozen=True)
class Bucket:
    """A slice of the workload's request sizes: mean lengths and share of the requests."""

    input_len: int
    output_len: int
    share: float
    label: str


@dataclass(frozen=True)
class Share:
    """One GPU type's part of a mix: the buckets it serves, its replicas and their cost."""

    option: object  # hardware.Option (its layout and price)
    buckets: tuple[Bucket, ...]
    replicas: int
    rate_rps: float
    usd_per_hour: float


@dataclass(frozen=True)
class Mix:
    shares: tuple[Share, ...]
    usd_per_hour: float
    single_usd_per_hour: float  # the cheapest single GPU type that meets the target

    @property
    def saving(self) -> float:
        return 1 - self.usd_per_hour / self.single_usd_per_hour

    def summary(self) -> str:
        return " + ".join(f"{s.replicas} x {s.option.hw.gpu.name} TP{s.option.compiled.plan.tensor_parallel} "
                          f"({', '.join(b.label for b in s.buckets)})" for s in self.shares)


def buckets(req: Request) -> tuple[Bucket, ...]:
    """The input halves x output halves of the workload's uniform lengths (one bucket when fixed lengths)."""
    wl = req.workload

    def halves(mean: int) -> list[tuple[int, str]]:
        lo, hi = length_range(mean, wl.range_ratio)
        if hi - lo < 2:
            return [(mean, f"{mean}")]
        mid = (lo + hi) / 2
        return [(round((lo + mid) / 2), f"{lo}-{int(mid)}"), (round((mid + hi) / 2), f"{int(mid)}-{hi}")]

    ins, outs = halves(wl.input_len), halves(wl.output_len)
    share = 1 / (len(ins) * len(outs))
    return tuple(Bucket(i, o, share, f"in {li}, out {lo}") for (i, li), (o, lo) in itertools.product(ins, outs))


def _model(req: Request, o) -> tuple[perf.StepModel, Optional[steady.Speculation]]:
    p = o.compiled.plan
    sm = perf.StepModel(req.model, o.hw.gpu, o.hw, p.tensor_parallel, p.pipeline_parallel, p.dtype, p.quantization,
                        p.kv_cache_dtype, expert_parallel=p.expert_parallel, dp=p.data_parallel,
                        stream_interval=p.stream_interval)
    return sm, steady.speculation(p.speculative, o.hw.gpu.name)


def capacity(req: Request, o, b: Bucket) -> float:
    """Requests/s one replica of option `o`'s layout serves of bucket `b` within the SLOs (the analytic steady
    state at the mean, over a ladder of rates; 0 when none holds)."""
    p, mem = o.compiled.plan, o.compiled.memory
    sm, spec = _model(req, o)
    s = steady.steady_state(sm, b.input_len, b.output_len, max_num_seqs=np.full(len(RATES), p.max_num_seqs),
                            max_num_batched_tokens=np.full(len(RATES), p.max_num_batched_tokens),
                            kv_capacity_seqs=np.full(len(RATES), mem.kv_cache_tokens / (b.input_len + b.output_len)),
                            rate=RATES, spec=spec)
    ttft, tpot = np.asarray(s.ttft_s) * 1e3, np.asarray(s.tpot_s) * 1e3
    checks = slo.check(req.target, slo.Observed(ttft_ms=ttft, tpot_ms=tpot,
                                                e2e_latency_ms=ttft + (b.output_len - 1) * tpot))
    ok = np.logical_and.reduce([np.asarray(c.passed) for c in checks] + [~np.asarray(s.saturated, dtype=bool)])
    # attention DP: each of the server's data_parallel ranks schedules its own share (the step model is one rank's)
    return float(RATES[ok].max()) * p.data_parallel if ok.any() else 0.0


def _cost(o, replicas: int) -> float:
    return replicas * o.compiled.plan.gpus_per_replica * o.hw.gpu.price_usd_per_hour


def best_mix(req: Request, options: list) -> Optional[Mix]:
    """The cheapest mix of GPU types: each size bucket on one type (at that type's own best layout), every
    assignment of two types or more priced by the analytic capacities, the CHECKED cheapest given replica counts by
    the simulation; None without a request rate, with one bucket, or when no mix beats the best single type."""
    rate = req.workload.request_rate or req.target.min_request_rate
    met = [o for o in options if o.meets and o.compiled.plan.disaggregation is None]
    bs = buckets(req)
    if not rate or len(bs) < 2 or not met:
        return None
    single = min(o.usd_per_hour for o in met)
    # every planned GPU type, even one whose plan misses the target on the whole workload: it may serve the short
    # requests (Mélange's point); its own layout; the 8 cheapest replicas
    types = sorted((o for o in options if o.compiled is not None and o.compiled.plan.disaggregation is None),
                   key=lambda o: _cost(o, 1))[:8]
    cap = np.array([[capacity(req, o, b) for o in types] for b in bs])  # bucket x type
    priced = []
    for assign in itertools.product(range(len(types)), repeat=len(bs)):
        if len(set(assign)) < 2 or any(cap[i, t] <= 0 for i, t in enumerate(assign)):
            continue
        load = {t: sum(bs[i].share * rate / cap[i, t] for i, tt in enumerate(assign) if tt == t) for t in set(assign)}
        priced.append((sum(_cost(types[t], math.ceil(x - 1e-9)) for t, x in load.items()), assign))
    best = None
    for _, assign in sorted(priced)[:CHECKED]:  # the analytic mean is optimistic: the simulation sets the counts
        shares = _checked(req, types, bs, assign, rate)
        total = sum(s.usd_per_hour for s in shares)
        if best is None or total < best.usd_per_hour:
            best = Mix(shares=shares, usd_per_hour=total, single_usd_per_hour=single)
    return best if best is not None and best.usd_per_hour < single else None


def _checked(req: Request, types: list, bs: tuple[Bucket, ...], assign: tuple, rate: float) -> tuple[Share, ...]:
    """Each type's share with the fewest replicas whose simulated replica (its buckets' lengths mixed, Poisson at its
    share of the rate) meets the SLOs at the target's percentile, starting from the analytic count."""
    out = []
    for t in sorted(set(assign)):
        mine = tuple(b for b, tt in zip(bs, assign) if tt == t)
        share_rate = rate * sum(b.share for b in mine)
        o = types[t]
        replicas = max(1, math.ceil(share_rate / max(sum(capacity(req, o, b) * b.share for b in mine)
                                                     / sum(b.share for b in mine), 1e-9) - 1e-9))
        while replicas < 64 and not _meets(req, o, mine, share_rate / replicas):
            replicas += 1
        out.append(Share(o, mine, replicas, share_rate, _cost(o, replicas)))
    return tuple(out)


def _meets(req: Request, o, mine: tuple[Bucket, ...], rate: float, n: int = 160) -> bool:
    """One replica of `o` simulated at `rate` with requests drawn from `mine` (equal shares, each its half's width)."""
    return replica_meets(req, o, mine, rate, req.workload.range_ratio / 2, n)


def replica_meets(req: Request, o, mine: tuple[Bucket, ...], rate: float, spread: float, n: int = 160) -> bool:
    """One replica of option `o` (its layout and limits), simulated at `rate` requests/s (Poisson, the workload's
    burstiness; one attention-DP rank at its share) with lengths uniform within `spread` of each bucket's means, meets
    the target's latency SLOs at its percentile and keeps up with the rate."""
    p, mem = o.compiled.plan, o.compiled.memory
    sm, spec = _model(req, o)
    per = max(1, n // len(mine))
    ins = np.concatenate([simulate.lengths(b.input_len, spread, per, seed=1 + i) for i, b in enumerate(mine)])
    outs = np.concatenate([simulate.lengths(b.output_len, spread, per, seed=11 + i) for i, b in enumerate(mine)])
    order = np.random.default_rng(0).permutation(ins.size)
    ins, outs = ins[order], outs[order]
    steps = np.maximum(np.ceil(outs / (spec.tokens_per_step if spec else 1.0)), 1).astype(int)
    res = simulate.simulate(
        memoized(lambda st: float(steady._spec_step(sm, spec, st.decode_seqs,
                                                    st.decode_context / max(st.decode_seqs, 1),
                                                    st.prefill_tokens, st.prefill_context))),
        ins, steps, simulate.Arrivals(rate / p.data_parallel, req.workload.burstiness), max_num_seqs=p.max_num_seqs,
        max_num_batched_tokens=p.max_num_batched_tokens, kv_blocks=mem.kv_cache_blocks, block_size=mem.block_size)
    q = req.target.percentile
    ok = outs > 1
    tpot = (res.e2e_s - res.ttft_s)[ok] * 1e3 / (outs[ok] - 1)
    observed = slo.Observed(ttft_ms=float(np.percentile(res.ttft_s * 1e3, q)), tpot_ms=float(np.percentile(tpot, q)),
                            e2e_latency_ms=float(np.percentile(res.e2e_s * 1e3, q)))
    return not slo.violations(slo.check(req.target, observed)) and res.kept_up() >= 1 - slo.RATE_TOLERANCE


def note(m: Mix) -> str:
    """The mix as a plan note: what serves which sizes, its cost against the single type's, and what it needs."""
    return (f"A mix of GPU types would cost ${m.usd_per_hour:,.2f}/h against ${m.single_usd_per_hour:,.2f}/h for the "
            f"cheapest single type ({m.saving:.0%} less): {m.summary()}, each type's share checked by the simulation "
            "at the target's percentile (after Mélange, Griggs et al. 2024, arXiv:2404.14527; capacities from this "
            "planner's step model, no profiling run). It needs a router that sends requests by prompt and answer "
            "length (not rendered); plan each type with hw=<its preset> to render it.")

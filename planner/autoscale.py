"""Autoscaling hints: for target.request_rate_range (the day's low and peak requests/s), how many replicas each rate
band needs, per pool (plan.autoscaling), from what one replica sustains within the SLOs.

An aggregated replica's capacity is the highest rate at which the analytic steady state meets the SLOs (the same
capacity mix.py prices), stepped down by 10% until the simulation of one replica at that rate meets them at the
target's percentile. A disaggregated plan scales each pool by what one of its instances sustains within the SLOs,
the other pool loaded to its own capacity (planner/poolscale.py: the pools' analytic models, then both instances
simulated together, stepping down the pool that misses). Replicas for a rate R = ceil(R / replica capacity).
"""

import math
from typing import Optional

from planner import mix, poolscale
from planner.errors import InputError
from planner.plan import Band, CompiledPlan, ScaleRule
from planner.specs import Request

STEP_DOWN = 0.9  # each simulation that rejects a capacity tries 10% less
TRIES = 8  # simulations at most per capacity


def rate_range(req: Request) -> Optional[tuple[float, float]]:
    """target.request_rate_range as (low, high) req/s, or InputError naming what is wrong with it."""
    rr = req.target.request_rate_range
    if rr is None:
        return None
    if len(rr) != 2 or not 0 < rr[0] <= rr[1]:
        raise InputError(f"target.request_rate_range={list(rr)}: needs [low, high] requests/s with 0 < low <= high "
                         "(the day's quietest and busiest rate). Fix: e.g. target.request_rate_range=[5,60].")
    return float(rr[0]), float(rr[1])


def rule(pool: str, replica_rps: float, low: float, high: float) -> ScaleRule:
    """Replicas per band: band n covers rates up to n x replica_rps (from the range's low to its high)."""
    n_low = max(1, math.ceil(low / replica_rps - 1e-9))
    n_high = max(n_low, math.ceil(high / replica_rps - 1e-9))
    bands = tuple(Band(low_rps=max(low, (n - 1) * replica_rps), high_rps=min(high, n * replica_rps), replicas=n)
                  for n in range(n_low, n_high + 1))
    return ScaleRule(pool=pool, replica_rps=replica_rps, min_replicas=n_low, max_replicas=n_high, bands=bands)


def replica_rps(req: Request, compiled: CompiledPlan) -> float:
    """Requests/s one replica of an aggregated plan sustains within the SLOs (module docstring)."""
    from planner.hardware import Option

    wl = req.workload
    o = Option(req.hw, compiled, True)
    whole = (mix.Bucket(wl.input_len, wl.output_len, 1.0, "all"),)
    cap = mix.capacity(req, o, whole[0])
    for _ in range(TRIES):
        if cap <= 0 or mix.replica_meets(req, o, whole, cap, wl.range_ratio):
            break
        cap *= STEP_DOWN
    if cap <= 0:
        raise InputError(f"target.request_rate_range: no request rate meets target={req.target.name} on one replica of "
                         "this plan, so there is nothing to scale. Fix: relax the target's SLOs or plan bigger "
                         "replicas (plan.tensor_parallel).")
    return cap


def rules(req: Request, compiled: CompiledPlan, split: Optional[poolscale.Priced] = None) -> tuple[ScaleRule, ...]:
    """plan.autoscaling for `compiled` (() without target.request_rate_range); a disaggregated plan needs `split`,
    the split its disaggregation came from as the search priced it."""
    span = rate_range(req)
    if span is None:
        return ()
    if compiled.plan.disaggregation is None:
        return (rule("replicas", replica_rps(req, compiled), *span),)
    if split is None:
        raise ValueError("autoscale.rules: a disaggregated plan's pools are scaled from the split it came from")
    prefill, decode = poolscale.capacities(req, split, compiled.prediction.request_throughput_rps)
    return (rule("prefill", prefill, *span), rule("decode", decode, *span))

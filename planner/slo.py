"""One truth for service levels: the load a plan is offered, whether an observation meets the target, and which
constraint binds. Planning (each candidate, vectorised), the exit-3 explanation and verification all call this.

An observation is what a prediction or a measurement says at the target's percentile; `check` works the same on
floats and on numpy arrays (one entry per candidate).
"""

import math
from dataclasses import dataclass
from typing import Any, Optional

from planner.plan import OfferedLoad, Violation
from planner.specs import Objective, Request, TargetSpec

# Floors on rates pass within this relative tolerance: a measured open loop that kept up with 19.99 of 20 req/s
# sustained the rate (the last requests of a run are still in flight when it ends).
RATE_TOLERANCE = 0.001
# metric -> (TargetSpec field, an upper bound?)
LIMITS = {"ttft_ms": ("ttft_ms", True), "tpot_ms": ("tpot_ms", True), "e2e_latency_ms": ("e2e_latency_ms", True),
          "request_rate_rps": ("min_request_rate", False),
          "output_throughput_tok_s": ("min_output_throughput_tok_s", False),
          "usd_per_hour": ("max_usd_per_hour", True)}


@dataclass(frozen=True)
class Observed:
    """A deployment's service at the target's percentile, predicted or measured; None where not observed (that
    check is skipped). Values are floats, or numpy arrays with one entry per candidate."""

    ttft_ms: Any = None
    tpot_ms: Any = None
    e2e_latency_ms: Any = None
    request_rate_rps: Any = None  # sustained, deployment total
    output_throughput_tok_s: Any = None  # deployment total
    usd_per_hour: Any = None  # None where the hardware has no price


@dataclass(frozen=True)
class Check:
    """One bounded SLO: the observed value, the limit, and whether it holds (arrays for a grid)."""

    metric: str
    observed: Any
    limit: float
    upper: bool
    passed: Any


def check(target: TargetSpec, observed: Observed) -> tuple[Check, ...]:
    """Every SLO the target bounds and the observation has a value for, in LIMITS order."""
    out = []
    for metric, (target_field, upper) in LIMITS.items():
        limit, value = getattr(target, target_field), getattr(observed, metric)
        if limit is None or value is None:
            continue
        passed = value <= limit if upper else value >= limit * (1 - RATE_TOLERANCE)
        out.append(Check(metric, value, float(limit), upper, passed))
    return tuple(out)


def violations(checks: tuple[Check, ...]) -> tuple[Violation, ...]:
    """The checks that failed (scalar checks)."""
    return tuple(Violation(c.metric, float(c.observed), c.limit) for c in checks if not c.passed)


def factor(v: Violation) -> float:
    """How far a violation is from its limit, as a factor > 1 (an upper bound exceeded or a floor missed)."""
    upper = LIMITS[v.metric][1]
    if upper:
        return v.value / v.limit if v.limit else math.inf
    return v.limit / v.value if v.value > 0 else math.inf


def binding(found: tuple[Violation, ...]) -> Optional[Violation]:
    """The constraint that binds: the violation furthest from its limit (None when all hold)."""
    return max(found, key=factor) if found else None


def describe(v: Optional[Violation], percentile: float) -> Optional[str]:
    if v is None:
        return None
    at = f" (p{percentile:g})" if v.metric in ("ttft_ms", "tpot_ms", "e2e_latency_ms") else ""
    return f"{v.metric}{at}: {v.value:,.1f} vs target {v.limit:,.1f}"


def upper_bound(metric: str) -> bool:
    return LIMITS[metric][1]


# --- the load ---------------------------------------------------------------------------------------------------

def explicit_load(req: Request) -> bool:
    """Does the request fix the load (a rate or a concurrency), or is the replica's batch the planner's to choose?"""
    return bool(req.workload.request_rate or req.workload.max_concurrency or req.target.min_request_rate
                or req.target.objective is Objective.latency)


def deployment_load(req: Request) -> tuple[Optional[float], Optional[int], str]:
    """The deployment's load as the inputs give it: (requests/s, None, source) for an open loop (the workload's
    rate, else a QPS target's), or (None, requests in flight, source) for a closed loop."""
    wl, target = req.workload, req.target
    if wl.request_rate:
        return wl.request_rate, None, "workload.request_rate"
    if target.min_request_rate:
        return target.min_request_rate, None, "target.min_request_rate"
    if wl.max_concurrency:
        return None, wl.max_concurrency, "workload.max_concurrency"
    return None, target.min_concurrency, "target.min_concurrency"


def offered(req: Request, replicas: int, max_num_seqs: int, data_parallel: int = 1) -> OfferedLoad:
    """The load one replica of a plan is predicted under, and the load verification offers it: the inputs' load
    split over the replicas, or, for a throughput objective with no load given, a full batch (max_num_seqs
    requests in flight on each of the server's data_parallel engines: the planner chose the batch)."""
    if not explicit_load(req):
        return OfferedLoad(None, int(max_num_seqs) * data_parallel, replicas,
                           "plan.max_num_seqs: throughput objective with no workload rate or concurrency"
                           + (f" (x {data_parallel} data-parallel ranks)" if data_parallel > 1 else ""))
    rate, conc, source = deployment_load(req)
    if rate:
        return OfferedLoad(rate / replicas, None, replicas, source)
    return OfferedLoad(None, math.ceil(conc / replicas), replicas, source)

"""What one instance of each pool of a disaggregated (xPyD) plan sustains within the target's SLOs: plan.autoscaling's
replica_rps per pool, from the pools' own models (planner/pools.py), as autoscale.replica_rps is for an aggregated
replica.

    priced = poolscale.priced(req, cons, sp, outcome.split)       # the split as the search priced it
    prefill_rps, decode_rps = poolscale.capacities(req, priced, planned_rps)

An autoscaler may run both pools at the top of their bands at once, so the two capacities are found together:
1. decode: the highest rate offered to one decode instance (a ladder of LADDER rates up to what it serves at all) at
   which its steady state (pools.decode_pool, each prompt's KV already there) keeps up and TPOT, TTFT (the prefill
   instance at its planned share of the rate, the KV transfer, the decode's first token) and E2E meet the target;
2. prefill: the highest rate offered to one prefill instance (below its capacity, pools.prefill_pool) at which TTFT
   and E2E still meet it with the decode instance at the capacity of 1;
3. one instance of each simulated together at those rates (pools.simulate_pools) and checked at the target's
   percentile: where it misses, the pool that causes it tries 10% less (STEP_DOWN, at most TRIES simulations, as the
   aggregated replica does): the decode pool for TPOT or a decode instance that falls behind, the prefill pool for a
   prefill instance that falls behind, and for TTFT or E2E the pool with the larger share of the mean TTFT (the other
   once that one is at its floor).
Neither capacity goes below the rate the plan puts on one of its instances (planned rate / count), the point the
search simulated the split at.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner import kvtransfer, perf, pools, slo, steady
from planner.specs import Request

LADDER = 400  # rates tried per pool, geometric (1.7% apart) over three decades below what one instance serves at all
STEP_DOWN = 0.9  # each simulation that misses the target tries 10% less on the pool that causes it
TRIES = 8  # simulations at most


@dataclass(frozen=True)
class Priced:
    """A disaggregated plan's split and how the search priced it (planner/disagg.py consider)."""

    split: pools.Split
    spec: Optional[steady.Speculation]
    prefix_caching: bool
    mean_len: int  # input + output tokens of a mean request (the decode instance's KV cache holds its tokens / this)


def priced(req: Request, cons, sp, split: pools.Split) -> Priced:
    """`split` with the speculation, prefix caching and mean length of the search's space `sp` under `cons`."""
    return Priced(split, steady.speculation(cons.setting("speculative"), req.hw.gpu.name), sp.enable_prefix_caching,
                  sp.mean_len)


def _grid(req: Request, s: pools.Split, pool, n: int) -> perf.StepGrid:
    return perf.StepGrid([pools.step_model(req, s, pool)], np.zeros(n, dtype=int))


def _prefill(req: Request, m: Priced, rates: np.ndarray):
    """(TTFT s, capacity req/s) of one prefill instance at each of `rates` (pools.prefill_pool)."""
    wl, s = req.workload, m.split
    prompt = max(wl.input_len - (wl.shared_prefix_len if m.prefix_caching else 0), 1)
    return pools.prefill_pool(_grid(req, s, s.prefill, rates.size), prompt, np.full(rates.size, float(s.prefill.mnbt)),
                              rates)


def _decode(req: Request, m: Priced, rates: np.ndarray) -> steady.SteadyState:
    """The steady state of one decode instance at each of `rates` (pools.decode_pool)."""
    s, n = m.split, rates.size
    return pools.decode_pool(req, _grid(req, s, s.decode, n), np.full(n, float(s.decode.seqs)),
                             np.full(n, float(s.decode.mnbt)), np.full(n, s.decode.mem.kv_cache_tokens / m.mean_len),
                             rates, m.spec)


def _meets(req: Request, ttft_s, tpot_s, bound_tpot: bool) -> np.ndarray:
    """The analytic latencies meet the target (TPOT checked only where `bound_tpot`: the prefill pool moves TTFT and
    E2E, not TPOT)."""
    ttft, tpot = np.asarray(ttft_s) * 1e3, np.asarray(tpot_s) * 1e3
    checks = slo.check(req.target, slo.Observed(ttft_ms=ttft, tpot_ms=tpot if bound_tpot else None,
                                                e2e_latency_ms=ttft + (req.workload.output_len - 1) * tpot))
    return np.logical_and.reduce([np.asarray(c.passed) for c in checks] + [np.isfinite(ttft)])


def _xfer_s(req: Request, s: pools.Split) -> float:
    return float(kvtransfer.seconds(req.model, s.prefill.kv, s.dtype, req.workload.input_len, s.prefill.tp,
                                    s.decode.tp, s.link, s.conn))


def decode_meets(req: Request, m: Priced, prefill_rps: float, rates: np.ndarray) -> np.ndarray:
    """One decode instance offered each of `rates` keeps up and meets the target, the prefill instance offered
    `prefill_rps` (the analytic models of step 1)."""
    d = _decode(req, m, rates)
    before = float(_prefill(req, m, np.array([prefill_rps]))[0][0]) + _xfer_s(req, m.split)
    return _meets(req, before + np.asarray(d.ttft_s), d.tpot_s, True) & ~np.asarray(d.saturated, dtype=bool)


def prefill_meets(req: Request, m: Priced, decode_rps: float, rates: np.ndarray) -> np.ndarray:
    """TTFT and E2E meet the target with one prefill instance offered each of `rates` (below its capacity) and the
    decode instance offered `decode_rps` (the analytic models of step 2)."""
    d = _decode(req, m, np.array([decode_rps]))
    ttft, _ = _prefill(req, m, rates)
    after = _xfer_s(req, m.split) + float(np.asarray(d.ttft_s)[0])
    return _meets(req, ttft + after, np.full(rates.size, float(np.asarray(d.tpot_s)[0])), False)


def _highest(rates: np.ndarray, ok: np.ndarray) -> float:
    return float(rates[ok].max()) if ok.any() else 0.0


def decode_rps(req: Request, m: Priced, prefill_rps: float) -> float:
    """Step 1 of the module docstring: one decode instance's analytic capacity (0 when no rate holds)."""
    top = float(np.asarray(_decode(req, m, np.array([1e9])).request_rps)[0])
    rates = np.geomspace(top * 1e-3, top, LADDER)
    return _highest(rates, decode_meets(req, m, prefill_rps, rates))


def prefill_rps(req: Request, m: Priced, decode_rps: float) -> float:
    """Step 2 of the module docstring: one prefill instance's analytic capacity (0 when no rate holds)."""
    top = float(_prefill(req, m, np.array([1.0]))[1][0])
    rates = np.geomspace(top * 1e-3, top * (1 - 1e-6), LADDER)
    return _highest(rates, prefill_meets(req, m, decode_rps, rates))


def blame(req: Request, sim: pools.Simulated) -> tuple[str, ...]:
    """The pools whose lower rate may mend a simulated miss, the likelier first (() when the target is met): step 3's
    order. TTFT and E2E add up both pools' parts, so either may give way; TPOT and falling behind are one pool's."""
    failed = {c.metric for c in slo.check(req.target, sim.observed(req.target.percentile)) if not c.passed}
    behind = 1 - slo.RATE_TOLERANCE
    if sim.decode_kept_up < behind or "tpot_ms" in failed:  # the decode instance's own: no prefill rate mends it
        return ("decode",)
    if sim.prefill_kept_up < behind:
        return ("prefill",)
    if failed & {"ttft_ms", "e2e_latency_ms"}:
        decode_ms = float(np.mean(sim.ttft_ms - sim.prefill_ms - sim.xfer_ms))
        return ("prefill", "decode") if float(np.mean(sim.prefill_ms)) >= decode_ms else ("decode", "prefill")
    return ()


def capacities(req: Request, m: Priced, planned_rps: float) -> tuple[float, float]:
    """(prefill, decode) requests/s one instance of each pool sustains within the SLOs (module docstring), the plan
    having been simulated at `planned_rps` through the router."""
    s = m.split
    floor = {"prefill": planned_rps / s.x, "decode": planned_rps / s.y}
    rate = {"decode": max(decode_rps(req, m, floor["prefill"]), floor["decode"])}
    rate["prefill"] = max(prefill_rps(req, m, rate["decode"]), floor["prefill"])
    for _ in range(TRIES):
        sim = pools.simulate_pools(req, s, m.spec, m.prefix_caching, rate["prefill"], rate["decode"])
        movable = [p for p in blame(req, sim) if rate[p] > floor[p]]
        if not movable:
            break
        rate[movable[0]] = max(rate[movable[0]] * STEP_DOWN, floor[movable[0]])
    return rate["prefill"], rate["decode"]

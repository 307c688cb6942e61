"""Estimate and choose: score every fitting candidate with the analytic step model in one numpy pass, order them
by one rank key, refine the finalists with the simulation, and keep the Pareto front.

The rank key, most significant first (np.lexsort takes it reversed):
  1. meets the target (analytic estimate at the mean; the simulation re-checks the finalists at the percentile);
  2. the quantization the rules prefer, then the KV dtype they prefer (formats are preferences, "quantize late");
  3. for a QPS target, the fewest GPUs;
  4. the objective (predict.Grid.score), a chunk budget other than the engine default paying a 1% toll;
  5. the fewest GPUs; then the narrowest TP (the widest for a `parallelism: wide` rule).
"""

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from planner import perf, predict, simulate, slo, steady
from planner.candidates import Sized, Space, fits, seqs_cap, size
from planner.plan import FrontPoint, SearchStats
from planner.rules import Constraints
from planner.specs import KvPrecision, Request

CHUNK_TOLL = 0.01  # a non-default max_num_batched_tokens must buy at least 1% of the objective
FINALISTS = 3  # candidates the simulation refines, best first
QPS_FINALISTS = 12  # for a QPS target: on to more replicas when the simulation rejects the fewest


@dataclass(frozen=True)
class Ranked:
    """One layout and format's best candidate with its estimate (analytic, or refined by the simulation)."""

    cand: Sized
    est: predict.Estimate


def step_model(req: Request, sp: Space, t: Sized) -> perf.StepModel:
    return perf.StepModel(req.model, req.hw.gpu, req.hw, t.tp, t.pp, sp.dtype, t.quant, t.kv,
                          expert_parallel=t.ep, dp=t.dp, stream_interval=sp.stream_interval)


def seq_ladder(cap: int, explicit: bool) -> list[int]:
    """max_num_seqs values to try: the cap alone when the load is given; else the cap and its halvings down to 8
    (a throughput target takes the largest batch whose latency still meets the SLOs)."""
    if explicit:
        return [cap]
    ladder, s = [], cap
    while s >= 8:
        ladder.append(s)
        s //= 2
    return ladder or [cap]


def chunk_ladder(req: Request, cons: Constraints, t: Sized) -> list[int]:
    """max_num_batched_tokens to try for candidate `t`: its engine's default and larger chunks (fewer prefill steps
    for long prompts), up to the first that holds the longest prompt whole; the default alone when pinned, set by a
    rule, or on CPU."""
    from planner.specs import DeviceKind

    default = t.limits.default_mnbt
    if req.pins.max_num_batched_tokens or cons.setting("max_num_batched_tokens") or \
            req.hw.gpu.kind is DeviceKind.cpu:
        return [default]
    ladder = [default]
    while ladder[-1] < req.workload.max_input_len and len(ladder) < 3:
        ladder.append(ladder[-1] * 2)
    return ladder


def rank(req: Request, cons: Constraints, sp: Space, fitting: list[Sized]
         ) -> tuple[list[Ranked], tuple[FrontPoint, ...], SearchStats]:
    """Score the whole space in one vectorised pass: each fitting layout and format x chunk budget x replicas
    (a QPS target) x max_num_seqs ladder. Returns each layout and format's best candidate in rank-key order, the
    Pareto front of output tok/s per GPU against TPOT, and counts of what was scored."""
    explicit = slo.explicit_load(req)
    spec = steady.speculation(cons.setting("speculative"), req.hw.gpu.name)
    qps = req.target.min_request_rate is not None
    layouts, models, rows = [], [], []  # rows: (layout, replicas, seqs)
    for t in fitting:
        for mnbt in chunk_ladder(req, cons, t):
            lay = t if mnbt == t.mnbt else replace(
                size(req, sp, t.quant, t.kv, t.tp, t.pp, mnbt, t.engine, t.dp, t.ep), backend=t.backend,
                unsupported=t.unsupported)
            if lay is not t and not fits(req, sp, lay):
                continue
            most = max(1, req.hw.total_gpus // t.world)
            reps = [req.pins.replicas] if req.pins.replicas else range(1, most + 1) if qps else [most]
            cap = req.pins.max_num_seqs or seqs_cap(sp, lay)
            layouts.append(lay)
            models.append(step_model(req, sp, lay))
            rows += [(len(layouts) - 1, r, s_) for r in reps for s_ in seq_ladder(cap, explicit or
                                                                                 bool(req.pins.max_num_seqs))]
    idx = np.array([r[0] for r in rows])
    replicas = np.array([r[1] for r in rows], dtype=float)
    seqs = np.array([r[2] for r in rows], dtype=float)
    mnbt = np.array([lay.mnbt for lay in layouts], dtype=float)[idx]
    kv_seqs = np.array([lay.mem.kv_cache_tokens / sp.mean_len for lay in layouts])[idx]
    g = predict.score_grid(req, perf.StepGrid(models, idx), replicas=replicas, max_num_seqs=seqs,
                           max_num_batched_tokens=mnbt, kv_capacity_seqs=kv_seqs,
                           prefix_caching=sp.enable_prefix_caching, explicit=explicit, spec=spec,
                           mixed=np.array([lay.engine.mixed_batches for lay in layouts])[idx])
    quant_rank = {q: i for i, q in enumerate(cons.choices["quantization"])}
    kv_rank = {k: i for i, k in enumerate(cons.choices["kv_cache_dtype"])}
    fmt_q = np.array([quant_rank.get(lay.quant.value, 99) for lay in layouts])[idx]
    fmt_kv = np.array([kv_rank.get("fp8" if lay.kv is KvPrecision.fp8 else "auto", 99) for lay in layouts])[idx]
    tps = np.array([lay.tp for lay in layouts])[idx]
    score = g.score(req.target.objective)
    default_mnbt = np.array([lay.limits.default_mnbt for lay in layouts], dtype=float)[idx]
    penalty = 1.0 + CHUNK_TOLL * (mnbt != default_mnbt)
    score = np.where(score > 0, score * penalty, score / penalty)
    wide = cons.setting("parallelism") == "wide"
    keys = (-tps if wide else tps, g.gpus, score) + ((g.gpus,) if qps else ()) + (fmt_kv, fmt_q, ~g.meets)
    seen, ranked = set(), []
    for i in np.lexsort(keys):  # one entry per layout and format (and replica count for QPS): its best chunk, batch
        lay = layouts[idx[i]]
        k = (lay.quant, lay.kv, lay.tp, lay.pp, lay.dp, lay.ep) + ((int(replicas[i]),) if qps else ())
        if k not in seen:
            seen.add(k)
            ranked.append(Ranked(replace(lay, seqs=int(seqs[i]), replicas=int(replicas[i])), g.estimate(int(i))))
    stats = SearchStats(candidates_scored=len(rows), layouts_fitting_memory=len(fitting),
                        meeting_target_analytic=int(g.meets.sum()))
    return ranked, pareto(g, layouts, idx, replicas, seqs), stats


def offered(req: Request, sp: Space, t: Sized) -> "slo.OfferedLoad":
    replicas = t.replicas or req.pins.replicas or max(1, req.hw.total_gpus // t.world)
    return slo.offered(req, replicas, t.seqs or t.limits.want_seqs, t.dp)


def refine(req: Request, cons: Constraints, sp: Space, r: Ranked) -> Ranked:
    """The candidate's percentiles and verdict from the simulation under the load it is offered."""
    t = r.cand
    seqs = t.seqs or req.pins.max_num_seqs or seqs_cap(sp, t)
    server = simulate.Server(t.engine, seqs, t.mnbt, t.mem.kv_cache_blocks, t.mem.block_size,
                             chunked_prefill=sp.enable_chunked_prefill, prefix_caching=sp.enable_prefix_caching)
    est = predict.simulate_percentiles(
        req, step_model(req, sp, t), r.est, load=offered(req, sp, replace(t, seqs=seqs)), server=server,
        spec=steady.speculation(cons.setting("speculative"), req.hw.gpu.name))
    return Ranked(t, est)


def choose(req: Request, cons: Constraints, sp: Space, ranked: list[Ranked]) -> tuple[Ranked, Optional[Ranked]]:
    """The first finalist the simulation confirms meets the target (else the top one, refined), and its analytic
    estimate (what the alternatives were compared with). For a QPS target the finalists run on into larger counts
    (QPS_FINALISTS): the analytic mean can take a replica count whose percentiles the simulation rejects, and the
    next count is then the answer, not exit 3."""
    best, analytic = None, None
    finalists = QPS_FINALISTS if req.target.min_request_rate is not None else FINALISTS
    for r in ranked[:finalists]:
        refined = refine(req, cons, sp, r)
        if refined.est.meets or r is ranked[0]:
            best, analytic = refined, r
        if refined.est.meets:
            break
    return best, analytic


def pareto(g: predict.Grid, layouts: list[Sized], idx, replicas, seqs, points: int = 8) -> tuple[FrontPoint, ...]:
    """The candidates no other beats on both TPOT and output tok/s per GPU, fastest TPOT first (at most `points`,
    spread along the front)."""
    order = np.lexsort((-g.output_tok_s_per_gpu, g.tpot_ms))
    front, best = [], -np.inf
    for i in order:
        if g.output_tok_s_per_gpu[i] > best:
            best = g.output_tok_s_per_gpu[i]
            front.append(int(i))
    if len(front) > points:
        front = [front[round(j * (len(front) - 1) / (points - 1))] for j in range(points)]
    out = []
    for i in front:
        lay = layouts[idx[i]]
        out.append(FrontPoint(
            summary=f"{lay.summary()}, max_num_seqs {int(seqs[i])}, max_num_batched_tokens {lay.mnbt}, "
                    f"{int(replicas[i])} replica{'s' if replicas[i] > 1 else ''}",
            tpot_ms=float(g.tpot_ms[i]), ttft_ms=float(g.ttft_ms[i]),
            output_tok_s_per_gpu=float(g.output_tok_s_per_gpu[i]), meets_target=bool(g.meets[i])))
    return tuple(out)

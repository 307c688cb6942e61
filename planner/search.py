"""Choose the plan, in SkyPilot's optimizer shape: fill the candidates, estimate them, choose, then decide.

    space    = candidates.space(req, cons)          the choices the rules allow, the limits they set
    tried    = candidates.fill(req, cons, space)    every format x layout, sized, with the backend that serves it
    ranked   = rank.rank(...)                       every fitting candidate scored in one numpy pass, in rank order
    chosen   = rank.choose(...)                     the finalists refined by the simulation; the first that meets
    compiled = decide.decide(...)                   the Plan and the decision behind each field

Messages (why candidates lost, exit 3) live in planner/explain.py; the SLO truth in planner/slo.py.
"""

from dataclasses import replace
from typing import Optional

from backends import get
from planner import candidates, decide, disagg, explain, perf, pools, poolscale, predict, rank, slo
from planner.errors import NoFeasiblePlan
from planner.plan import Alternative, CompiledPlan, settled
from planner.rules import Constraints, constraints_for
from planner.specs import Request

# Re-exported: the public entry points others (benchmarks, tests) call.
choose_max_model_len = candidates.choose_max_model_len
batch_defaults = candidates.batch_defaults


def compile_plan(req: Request, cons: Optional[Constraints] = None) -> CompiledPlan:
    """The plan for `req` under the rules' constraints, or NoFeasiblePlan with the arithmetic of the closest try
    (and the closest plan, when one fits but misses the target)."""
    cons = cons or constraints_for(req)
    sp = candidates.space(req, cons)
    tried = candidates.fill(req, cons, sp)
    fitting = [t for t in tried if candidates.fits(req, sp, t)]
    if not fitting:
        raise NoFeasiblePlan(explain.explain_no_fit(req, cons, tried, sp.want_tokens, sp.mean_len, sp.concurrency))
    servable = [t for t in fitting if t.backend is not None]
    if not servable:
        raise candidates.no_backend(sp, fitting)
    ranked, front, stats = rank.rank(req, cons, sp, servable)
    best, analytic = rank.choose(req, cons, sp, ranked)
    split = disagg.consider(req, cons, sp, servable, best)
    chosen = replace(split.split.decode, replicas=split.split.y) if split.wins else best.cand
    est = split.est if split.wins else best.est
    lim = chosen.limits
    batch_why = lim.batch_why if chosen.mnbt == lim.default_mnbt else \
        f"{lim.batch_why} is {lim.default_mnbt}; the search took {chosen.mnbt}: " \
        f"{explain.chunk_gain(req, ranked[0].est.ttft_ms.mean)}"
    moe_why = explain.layout_choice(req, analytic, ranked) if req.model.is_moe else ""
    compiled = decide.decide(req, cons, sp, chosen, batch_why, tried, moe_why)
    compiled = replace(compiled, decisions=compiled.decisions + (disagg.decision(split),),
                       notes=compiled.notes + get(chosen.backend).notes(compiled.plan)  # e.g. TRT-LLM's memory
                       + perf.borrowed_note(req.hw.gpu)  # fraction; efficiencies borrowed from another vendor,
                       + perf.transferred_note(req.hw.gpu)  # or transferred from the closest measured GPU
                       + disagg.kv_note(split))
    others = tuple(Alternative(summary=r.cand.summary(), rejected_because=explain.lost(req, r.est, analytic.est),
                               prediction=r.est.brief()) for r in ranked[1:4] if r.cand is not best.cand)
    if split.wins:
        compiled = disagg.as_plan(req, compiled, split)
        others = (disagg.aggregated_alternative(req, best),) + split.runner_up + others
        prediction = replace(predict.prediction(est, req, pools.load(req, slo.explicit_load(req), est.request_rps)),
                             kv_transfer_ms=split.kv_ms)
    else:
        others += disagg.split_alternative(split) + split.runner_up
        prediction = predict.prediction(est, req, rank.offered(req, sp, chosen))
    compiled = settled(replace(compiled, prediction=prediction,
                               alternatives=others + candidates.backend_alternatives(chosen) + compiled.alternatives,
                               pareto_front=front, search=stats))
    if not est.meets:
        message, fixes = explain.explain_slo(req, est, [r.est for r in ranked], chosen.quant)
        if not candidates.layout_pinned(req):
            raise NoFeasiblePlan(message, closest=with_autoscaling(req, compiled, meets=False), fixes=fixes,
                                 request=req)
        # The user fixed the layout and the engine can start it: the plan is theirs, the miss a warning (exit 3 is
        # for what cannot start at all).
        compiled = replace(compiled, notes=compiled.notes + (f"The pinned layout misses the target: {message}",))
        return with_autoscaling(req, compiled, meets=False)
    return with_autoscaling(req, compiled, poolscale.priced(req, cons, sp, split.split) if split.wins else None)


def with_autoscaling(req: Request, compiled: CompiledPlan, split: Optional[poolscale.Priced] = None,
                     meets: bool = True) -> CompiledPlan:
    """The plan with its replicas per rate band over target.request_rate_range (planner/autoscale.py; a disaggregated
    plan's pools from `split`, the split it came from) and the decision that explains them (none for a plan that
    misses its target)."""
    from planner import autoscale
    from planner.plan import Decision

    scale = autoscale.rules(req, compiled, split) if meets else ()
    why = "; ".join(f"{r.pool}: one sustains {r.replica_rps:,.2f} req/s within the SLOs, so {r.min_replicas} at "
                    f"{req.target.request_rate_range[0]:g} req/s to {r.max_replicas} at "
                    f"{req.target.request_rate_range[1]:g} req/s" for r in scale) or \
        ("no target.request_rate_range: a fixed replica count" if req.target.request_rate_range is None else
         "not computed: the plan misses its target")
    value = ", ".join(f"{r.pool} {r.min_replicas}-{r.max_replicas}" for r in scale) or None
    decision = Decision("autoscaling", value, "search", why, "planner/autoscale.py")
    return settled(replace(compiled, plan=replace(compiled.plan, autoscaling=scale),
                           decisions=compiled.decisions + (decision,)))

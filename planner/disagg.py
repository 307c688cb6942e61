"""Disaggregated prefill/decode (xPyD) as a searched alternative to the aggregated plan.

    splits  = enumerate_splits(req, sp, fitting, chosen)   # prefill pool x decode pool layouts, counts and limits
    outcome = consider(req, cons, sp, fitting, best)        # scored (pools.score), finalists simulated, compared
    compiled = as_plan(req, cons, sp, outcome, ...)          # when the split wins: the plan with its disaggregation

Both sides are priced by the same step model and simulation (planner/pools.py), under the same load and SLOs, and
ranked by rank.py's key (meets the target, then the objective, then fewer GPUs). A disaggregated plan runs a router,
a KV connector and two pools, so it must buy at least DISAGG_TOLL of the objective to replace the aggregated one.
"""

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from planner import kvtransfer, pools, rank, slo, steady
from planner.candidates import Sized, Space, fits, seqs_cap, size
from planner.errors import InputError
from planner.plan import Alternative, CompiledPlan, Decision, Dist
from planner.predict import Estimate
from planner.rules import Constraints
from planner.specs import DeviceKind, Objective, Request

DISAGG_TOLL = 0.05  # a split must beat the aggregated objective by 5% (or meet a target the aggregated plan misses)
FINALISTS = 2  # splits the simulation refines, best first (it stops at the first that meets the target)


@dataclass(frozen=True)
class Outcome:
    """The comparison of the best split with the aggregated choice."""

    split: Optional[pools.Split]  # None: no split possible (why says so)
    est: Optional[Estimate]  # its prediction, refined by the simulation
    kv_ms: Optional[Dist]  # KV transfer per request
    wins: bool
    why: str  # the disaggregation decision's text: both predictions and the reason
    runner_up: tuple[Alternative, ...] = ()  # other splits the search ranked (xPyD alternatives)


def not_possible(req: Request, sp: Space, chosen: Sized) -> Optional[str]:
    """Why no split is searched for this request (None: search them)."""
    from backends import get

    if req.pins.disaggregation is False:
        return "given as plan.disaggregation=false"
    if req.hw.gpu.kind is DeviceKind.cpu:
        return "a CPU plan: the KV connectors move GPU memory"
    if req.hw.total_gpus < 2:
        return f"hw={req.hw.name} has one GPU: a prefill and a decode pool need two at least"
    support = get(chosen.backend).capabilities.disaggregation
    if not support.supported:
        return f"backend={chosen.backend.value}: {support.note or 'no disaggregated serving rendered'} " \
               f"[source: {support.source}]"
    return None


def _connector(req: Request, backend) -> kvtransfer.Connector:
    conn = kvtransfer.connector(req.pins.kv_connector)
    if getattr(conn, backend.value, None) is None:
        raise InputError(f"plan.kv_connector={conn.name}: backend={backend.value} has no such connector (known: "
                         f"{', '.join(n for n, c in kvtransfer.connectors().items() if getattr(c, backend.value))}). "
                         "Fix: pick one of those, or leave plan.kv_connector unset (nixl).")
    return conn


def enumerate_splits(req: Request, cons: Constraints, sp: Space, fitting: list[Sized], chosen: Sized
                     ) -> list[pools.Split]:
    """Every split in the chosen plan's formats (so the comparison isolates the layout): one-node layouts for each
    pool, x prefill and y decode instances using every GPU (a QPS target: at most every GPU), the prefill chunk
    budget on the chunk ladder, the decode batch on the max_num_seqs ladder."""
    conn = _connector(req, chosen.backend)
    # one-node layouts without attention DP (pools.py prices one scheduler per instance), experts as chosen
    layouts = [t for t in fitting if (t.quant, t.kv, t.pp, t.dp, t.ep, t.backend) ==
               (chosen.quant, chosen.kv, 1, 1, chosen.ep, chosen.backend)]
    total, qps = req.hw.total_gpus, req.target.min_request_rate is not None
    explicit = slo.explicit_load(req) or bool(req.pins.max_num_seqs)
    ep = chosen.ep
    prefill = [_prefill(req, sp, t, mnbt) for t in layouts for mnbt in rank.chunk_ladder(req, cons, t)]
    prefill = [p for p in prefill if p is not None]
    out = []
    for d in layouts:
        cap = req.pins.max_num_seqs or seqs_cap(sp, d)
        for p in prefill:
            for x in _counts(total // p.tp):
                rest = total - x * p.tp
                # a QPS target may leave GPUs idle; otherwise the decode pool takes exactly the rest
                ys = _counts(rest // d.tp) if qps else [rest // d.tp] if rest >= d.tp and rest % d.tp == 0 else []
                for y in ys:
                    used = x * p.tp + y * d.tp
                    path = kvtransfer.link(req.hw, used, conn)
                    if path is None:
                        continue
                    out += [pools.Split(p, replace(d, seqs=s), x, y, path, conn, ep, sp.dtype)
                            for s in rank.seq_ladder(cap, explicit)]
    return out


def _counts(n: int) -> list[int]:
    """Instance counts to try for a pool of at most `n`: every count up to 32, then steps of about 1/8 and `n`
    itself, so a QPS search over thousands of GPUs (every x for every y) stays in seconds; below 33 instances a pool
    is sized exactly."""
    out = list(range(1, min(n, 32) + 1))
    while out and out[-1] < n:
        out.append(min(n, max(out[-1] + 1, int(out[-1] * 1.125))))
    return out


def _prefill(req: Request, sp: Space, t: Sized, mnbt: int) -> Optional[Sized]:
    """Layout `t` sized as a prefill instance with chunk budget `mnbt` (None when it does not fit)."""
    p = t if mnbt == t.mnbt else replace(size(req, sp, t.quant, t.kv, t.tp, t.pp, mnbt, t.engine), backend=t.backend)
    if p is not t and not fits(req, sp, p):
        return None
    return replace(p, seqs=seqs_cap(sp, p))


def _order(req: Request, g) -> np.ndarray:
    """rank.py's key over splits: meets, (QPS: fewer GPUs), the objective, fewer GPUs."""
    qps = req.target.min_request_rate is not None
    keys = (g.gpus, g.score(req.target.objective)) + ((g.gpus,) if qps else ()) + (~g.meets,)
    return np.lexsort(keys)


def key(req: Request, e: Estimate) -> tuple:
    """An estimate's rank key at the target's percentile (smaller is better)."""
    p = req.target.percentile
    obj = req.target.objective
    if obj is Objective.latency:
        score = e.tpot_ms.at(p) + e.ttft_ms.at(p) / 50
    elif obj is Objective.cost and e.usd_per_mtok is not None:
        score = e.usd_per_mtok
    else:
        score = -e.output_tok_s_per_gpu
    return (not e.meets, e.gpus if req.target.min_request_rate is not None else 0, score, e.gpus)


def beats(req: Request, split: Estimate, aggregated: Estimate) -> bool:
    """The split replaces the aggregated plan: it meets a target the other misses, or (both the same) it needs fewer
    GPUs for a QPS target, or it is better on the objective by DISAGG_TOLL."""
    ks, ka = key(req, split), key(req, aggregated)
    if ks[0] and ka[0]:  # neither meets: the closest plan stays aggregated
        return False
    if ks[:2] != ka[:2]:
        return ks[:2] < ka[:2]
    margin = DISAGG_TOLL * abs(ka[2])
    return ks[2] < ka[2] - margin


def consider(req: Request, cons: Constraints, sp: Space, fitting: list[Sized], best: "rank.Ranked") -> Outcome:
    """The best split, refined by the simulation, and whether it replaces the aggregated choice `best`."""
    reason = not_possible(req, sp, best.cand)
    splits = [] if reason else enumerate_splits(req, cons, sp, fitting, best.cand)
    if not splits:
        reason = reason or (f"no two single-node layouts of the chosen format fit hw={req.hw.name}'s "
                            f"{req.hw.total_gpus} GPUs side by side")
        if req.pins.disaggregation:  # a pin that cannot hold is bad input, not a silently aggregated plan
            raise InputError(f"plan.disaggregation=true: no disaggregated plan is possible here: {reason}. Fix: drop "
                             "the pin, or pick a backend and hardware that serve one (vLLM or SGLang, a prefill and a "
                             "decode instance each within one node).")
        return Outcome(None, None, None, False, f"not searched: {reason}")
    spec = steady.speculation(cons.setting("speculative"), req.hw.gpu.name)
    g = pools.score(req, splits, slo.explicit_load(req), spec, sp.enable_prefix_caching, sp.mean_len)
    order, seen, ranked = _order(req, g), set(), []
    for i in order:  # one entry per layout pair and counts: its best chunk and batch
        s = splits[int(i)]
        k = (s.prefill.tp, s.decode.tp, s.x, s.y)
        if k not in seen:
            seen.add(k)
            ranked.append((s, g.estimate(int(i))))
    top = None
    for s, e in ranked[:FINALISTS]:
        est, kv = pools.refine(req, s, e, spec, sp.enable_prefix_caching)
        if top is None or key(req, est) < key(req, top[1]):
            top = (s, est, kv)
        if est.meets:
            break
    split, est, kv = top
    wins = bool(req.pins.disaggregation) or beats(req, est, best.est)
    others = tuple(Alternative(summary=s.summary(), rejected_because="ranked below the best split (analytic)",
                               prediction=e.brief(), layout="xPyD") for s, e in ranked[1:3] if s is not split)
    return Outcome(split, est, kv, wins, explain(req, cons, sp, best, split, est, kv, wins), others)


def interference(req: Request, cons: Constraints, sp: Space, best: "rank.Ranked") -> tuple[float, float]:
    """(prompt tokens an aggregated decode step carries, their share of its step time): chunked prefill of the
    arriving requests rides on the running batch's decode steps (steady.py's step), which a decode pool never has."""
    wl = req.workload
    spec = steady.speculation(cons.setting("speculative"), req.hw.gpu.name)
    sm = rank.step_model(req, sp, best.cand)
    b = max(float(best.est.batch), 1.0)
    prefill = max(wl.input_len - (wl.shared_prefix_len if sp.enable_prefix_caching else 0), 1)
    steps_out = max(wl.output_len / (spec.tokens_per_step if spec else 1.0), 1.0)
    p = min(b * prefill / steps_out, max(best.cand.mnbt - b, 1.0))
    ctx = wl.input_len + wl.output_len / 2
    mixed = float(steady._spec_step(sm, spec, b, ctx, p, p * prefill / 2))
    pure = float(steady._spec_step(sm, spec, b, ctx, 0.0, 0.0))
    return p, 1 - pure / mixed if mixed > 0 else 0.0


def _line(req: Request, e: Estimate) -> str:
    p = req.target.percentile
    return (f"TTFT p{p:g} {e.ttft_ms.at(p):,.0f} ms, TPOT p{p:g} {e.tpot_ms.at(p):,.1f} ms, "
            f"{e.output_tok_s_per_gpu:,.0f} tok/s/GPU{'' if e.meets else ' (misses the target)'}")


def prompt_ms(req: Request, sm, budget: int) -> float:
    """One mean prompt alone on a server of step model `sm`: ceil(P / budget) prefill steps (pools.prefill_pool)."""
    prompt = req.workload.input_len
    chunk = min(prompt, budget)
    return float(-(-prompt // budget) * sm.step_seconds(0.0, 0.0, chunk, chunk * prompt / 2)) * 1e3


def explain(req: Request, cons: Constraints, sp: Space, best, split: pools.Split, est: Estimate, kv: Dist,
            wins: bool) -> str:
    """Both predictions and why one wins: what disaggregation removes (the prefill chunks in decode steps) against
    what it costs (GPUs moved to prefill, a prompt's prefill on fewer GPUs, the KV transfer)."""
    wl, p = req.workload, req.target.percentile
    tokens, share = interference(req, cons, sp, best)
    both = (f"aggregated {best.cand.summary()}: {_line(req, best.est)}; xPyD {split.summary()}: {_line(req, est)}, "
            f"KV transfer p{p:g} {kv.at(p):,.1f} ms ({split.link.why})")
    cause = (f"with {wl.input_len:,}-token prompts and {wl.output_len:,}-token answers each aggregated decode step "
             f"carries ~{tokens:,.0f} prompt tokens of chunked prefill, {share:.0%} of its step time")
    if req.pins.disaggregation:
        return f"xPyD as pinned (plan.disaggregation=true); {cause}. Predicted: {both}"
    objective = f"objective={req.target.objective.value}"
    ks, ka = key(req, est), key(req, best.est)
    if wins:
        if ka[0]:
            edge = f"the aggregated plan misses {slo.describe(slo.binding(best.est.violations), p)}"
        elif ks[1] != ka[1]:
            edge = f"it meets the target on {est.gpus} GPUs against {best.est.gpus}"
        else:
            edge = f"it is better on {objective}"
        return f"xPyD wins: {edge}; its decode steps carry no prefill chunks ({cause}). Predicted: {both}"
    if ks[0] and not ka[0]:
        lost = f"the best split misses {slo.describe(slo.binding(est.violations), p)}"
    elif ks[1] != ka[1]:
        lost = f"the best split needs {est.gpus} GPUs for the rate, the aggregated plan {best.est.gpus}"
    else:
        lost = f"the best split is not {DISAGG_TOLL:.0%} better on {objective}"
    costs = (f"a prompt takes {prompt_ms(req, pools.step_model(req, split, split.prefill), split.prefill.mnbt):,.0f} "
             f"ms on a TP{split.prefill.tp} prefill instance against "
             f"{prompt_ms(req, rank.step_model(req, sp, best.cand), best.cand.mnbt):,.0f} ms on an aggregated "
             f"TP{best.cand.tp} replica, and {split.x * split.prefill.tp} of {split.gpus} GPUs only prefill")
    return (f"aggregated wins: {lost}. Disaggregation would take the prefill chunks out of decode steps ({cause}), "
            f"but {costs}. Predicted: {both}")


def as_plan(req: Request, compiled: CompiledPlan, o: Outcome) -> CompiledPlan:
    """The decode pool's plan (top-level fields) with its disaggregation, decisions that say so, and the aggregated
    plan as the alternative it replaced."""
    s = o.split
    plan = replace(compiled.plan, disaggregation=s.disaggregation())
    decisions = tuple(
        Decision("replicas", s.y, "search", f"the decode pool: {s.y} instance(s); the prefill pool has {s.x} "
                 f"(plan.disaggregation)") if d.field == "replicas" else d for d in compiled.decisions)
    return replace(compiled, plan=plan, decisions=decisions)


def aggregated_alternative(req: Request, best: "rank.Ranked") -> Alternative:
    """The aggregated plan a winning split replaced."""
    return Alternative(summary=best.cand.summary(), rejected_because="the disaggregated split predicts better "
                       f"(plan.disaggregation's decision); this one: {_line(req, best.est)}",
                       prediction=best.est.brief(), layout="aggregated")


def split_alternative(o: Outcome) -> tuple[Alternative, ...]:
    """The best split when the aggregated plan kept its place."""
    if o.split is None:
        return ()
    return (Alternative(summary=o.split.summary(), rejected_because=o.why.split(". Predicted:")[0],
                        prediction=o.est.brief(), layout="xPyD"),)


def decision(o: Outcome) -> Decision:
    return Decision("disaggregation", o.split.disaggregation().summary() if o.wins else None, "search", o.why,
                    "planner/pools.py (step model + simulation of both pools); conf/calibration/kv-transfer.yaml")


def kv_note(o: Outcome) -> tuple[str, ...]:
    if not o.wins or o.split.conn.measured:
        return ()
    return (f"KV connector {o.split.conn.name}: its per-transfer overhead and RDMA efficiency are Mooncake's published "
            "figures, borrowed (conf/calibration/kv-transfer.yaml); the KV transfer times are estimates.",)


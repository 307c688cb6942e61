"""Choose the plan: take what the rules allow, keep what fits memory, score everything left, pick by the target.

The rules (planner/rules) narrow and order the choices (backend, dtype, quantization, KV dtype) and set the
scalar limits. The search sizes each quantization x KV dtype x (TP, PP) layout with the memory model and keeps
those whose KV cache holds the target's concurrency; then it scores every remaining candidate (layout x chunk
budget x replicas x max_num_seqs) with the analytic step model in one numpy pass (predict.score_grid) and ranks
them: meeting the target first, then the formats the rules prefer, then the fewest GPUs for a QPS target, then the
objective. The discrete-event simulation refines the finalists' percentiles; the plan keeps what was scored, the
Pareto front of tok/s per GPU against TPOT, and the alternatives with why each lost.
"""

import math
from dataclasses import dataclass, replace
from typing import Iterator, Optional

from planner import memory, perf
from planner.errors import InputError, NoFeasiblePlan
from planner.plan import Alternative, CompiledPlan, Decision, Plan
from planner.rules import Constraints, constraints_for
from planner.rules.model import Rule
from planner.specs import BackendName, DeviceKind, Dtype, GpuSpec, KvPrecision, Quantization, Request

GIB = memory.GIB


def choose_max_model_len(req: Request) -> tuple[int, str]:
    model, wl = req.model, req.workload
    limit = model.max_position_embeddings
    if req.pins.max_model_len:
        need, why = req.pins.max_model_len, "given as plan.max_model_len"
        if need < wl.input_len + wl.output_len:
            raise InputError(
                f"plan.max_model_len={need}: shorter than the workload's mean request ({wl.input_len} in + "
                f"{wl.output_len} out tokens, workload={wl.name}), so most requests would be refused. Fix: a larger "
                f"plan.max_model_len, or a workload with shorter requests (workload.input_len=...).")
    elif wl.max_model_len:
        need, why = wl.max_model_len, f"workload.max_model_len={wl.max_model_len}"
    else:
        longest = wl.max_input_len + wl.max_output_len
        need = math.ceil(longest / 256) * 256
        spread = f" +{wl.range_ratio:.0%}, range_ratio {wl.range_ratio:g}" if wl.range_ratio else ""
        why = (f"workload={wl.name}'s longest request, {wl.max_input_len:,} in + {wl.max_output_len:,} out = "
               f"{longest:,} tokens (means {wl.input_len:,} and {wl.output_len:,}{spread}), rounded up to a "
               f"multiple of 256: {need:,}; vLLM refuses longer ones (the model allows {limit:,}): "
               "workload.max_model_len=N serves them")
        if need > limit >= wl.input_len + wl.output_len:
            return limit, f"{why}, capped at the model's {limit} (the longest requests will be cut)"
    if need > limit:
        raise InputError(
            f"workload={wl.name} needs a context of {need:,} tokens ({why}), but {model.name} supports "
            f"{limit:,} (max_position_embeddings in its config.json). Fix: a model with a longer context, "
            f"shorter requests (workload.input_len/output_len), or plan.max_model_len={limit}.")
    return need, why


def _batch_defaults(gpu: GpuSpec) -> tuple[dict, str]:
    d = memory.engine_constants()["batch_defaults"]
    if gpu.kind is DeviceKind.cpu:
        return d["cpu_per_worker"], "vLLM 0.32's CPU server default (arg_utils.get_batch_defaults)"
    if gpu.memory_gib >= 160:
        return d["gpu_160gib_plus"], "vLLM 0.32's server default for GPUs with >= 160 GiB"
    if gpu.memory_gib >= 70 and not gpu.name.startswith("a100"):
        return d["gpu_70gib_plus"], "vLLM 0.32's server default for >= 70 GiB GPUs other than A100"
    return d["gpu_other"], "vLLM 0.32's server default for other GPUs"


def parallel_layouts(req: Request, cons: Constraints) -> Iterator[tuple[int, int]]:
    """(TP, PP) in the order the target prefers. TP stays within a node and divides the attention heads; PP is
    only added on top of a full node of TP, across nodes, where it costs one activation transfer per stage
    instead of two all-reduces per layer."""
    hw, model, pins = req.hw, req.model, req.pins
    max_tp = int(cons.setting("max_tensor_parallel") or hw.gpus_per_node)
    tps = [t for t in (1, 2, 4, 8, 16) if t <= min(hw.gpus_per_node, max_tp) and model.num_attention_heads % t == 0]
    if pins.tensor_parallel:
        tps = [pins.tensor_parallel]
    if pins.pipeline_parallel:
        layouts = [(t, pins.pipeline_parallel) for t in tps]
    else:
        layouts = [(t, 1) for t in tps]
        if tps:
            layouts += [(tps[-1], p) for p in range(2, hw.nodes + 1) if p <= model.num_hidden_layers]
    if cons.setting("parallelism") == "wide":
        one_node = sorted((lay for lay in layouts if lay[1] == 1), key=lambda lay: -lay[0])
        yield from one_node + [lay for lay in layouts if lay[1] > 1]
    else:
        yield from sorted(layouts, key=lambda lay: (lay[0] * lay[1], lay[1]))


def _choice(cons: Constraints, field: str, pinned: Optional[str]) -> list[str]:
    """The allowed values of a choice field in order (a pin must be among them), or InputError naming the
    rules that asked for something and the rules that ruled it out."""
    allowed = list(cons.choices[field])
    shaped = list({r.id: r for r in cons.choice_rules[field]}.values())  # in priority order, once each
    if pinned is not None and pinned in allowed:
        return [pinned]
    if allowed and pinned is None:
        return allowed
    askers = [r for r in shaped if field in r.then.allow]
    lists = [{str(v) for v in r.then.allow[field] if not str(v).startswith("=")} for r in askers]
    common = set.intersection(*lists) if lists else set()
    wanted = [pinned] if pinned is not None else sorted(common or set().union(*lists))
    blockers = [r for r in shaped if set(r.then.exclude.get(field, ())) & set(wanted)]
    asked = f"plan.{field}={pinned} was pinned" if pinned is not None else \
        f"{', '.join(r.id for r in askers)} ask{'s' if len(askers) == 1 else ''} for {field} in {wanted}"
    why_not = "; ".join(f"{r.id} rules it out: {r.why}" for r in blockers) or \
        f"no remaining {field} satisfies every rule ({', '.join(r.id for r in shaped)})"
    raise InputError(f"{asked}, but {why_not} Fix: choose a {field} this hardware and backend support (with "
                     f"precision=auto the planner picks one), or disable the rule with rules.disable=[id].")


def _rule_for(cons: Constraints, field: str, value: str) -> Optional[Rule]:
    """The highest-priority rule that put `value` on the list for `field` (allowed or preferred it)."""
    for r in cons.choice_rules[field]:
        if value in r.then.allow.get(field, ()) or value in r.then.prefer.get(field, ()) or \
                any(str(v).startswith("=") for v in r.then.allow.get(field, ())):
            return r
    return cons.choice_rules[field][0] if cons.choice_rules[field] else None


@dataclass(frozen=True)
class _Try:
    quant: Quantization
    kv: KvPrecision
    tp: int
    pp: int
    mem: memory.MemoryBreakdown
    cpu_space: Optional[int] = None
    seqs: Optional[int] = None  # max_num_seqs the ranking chose for this candidate
    mnbt: Optional[int] = None  # max_num_batched_tokens the ranking chose
    replicas: Optional[int] = None  # replicas the ranking chose


def compile_plan(req: Request, cons: Optional[Constraints] = None) -> CompiledPlan:
    """The plan for `req` under the rules' constraints, or NoFeasiblePlan with the arithmetic of the closest try."""
    cons = cons or constraints_for(req)
    gpu, model, wl, pins = req.hw.gpu, req.model, req.workload, req.pins
    on_cpu = gpu.kind is DeviceKind.cpu
    consts = memory.engine_constants()

    backends = [BackendName(b) for b in _choice(cons, "backend", pins.backend.value if pins.backend else None)]
    dtype = Dtype(_choice(cons, "dtype", pins.dtype.value if pins.dtype else None)[0])
    quants = [Quantization(q) for q in _choice(cons, "quantization",
                                               pins.quantization.value if pins.quantization else None)]
    pinned_kv = None if pins.kv_cache_dtype is None else ("fp8" if pins.kv_cache_dtype is KvPrecision.fp8 else "auto")
    kvs = [KvPrecision(dtype.value) if k == "auto" else KvPrecision.fp8 for k in _choice(cons, "kv_cache_dtype",
                                                                                       pinned_kv)]
    max_model_len, len_why = choose_max_model_len(req)
    batch, batch_why = _batch_defaults(gpu)
    max_num_batched_tokens = pins.max_num_batched_tokens or cons.setting("max_num_batched_tokens") \
        or batch["max_num_batched_tokens"]
    image_tokens = model.image_tokens * wl.images_per_prompt
    if image_tokens > max_num_batched_tokens and not pins.max_num_batched_tokens:
        max_num_batched_tokens = image_tokens  # an image's encoder output is scheduled whole (vLLM encoder budget)
    util = None if on_cpu else (pins.gpu_memory_utilization or cons.setting("gpu_memory_utilization")
                                or consts["gpu_memory_utilization_default"])
    mean_len = wl.input_len + wl.output_len
    want_seqs = int(pins.max_num_seqs or cons.setting("max_num_seqs") or batch["max_num_seqs"])
    concurrency = min(req.target.min_concurrency, wl.max_concurrency or req.target.min_concurrency)
    want_tokens = max(max_model_len, concurrency * mean_len)

    def size(quant, kv, tp, pp, mnbt) -> _Try:
        world = tp * pp
        cpu_space = None
        if on_cpu:
            cpu_space = pins.kv_cache_space_gib or _cpu_kv_space(req, quant, kv, tp, pp, dtype, want_seqs,
                                                                 max_model_len)
        mem = memory.breakdown(model, gpu, tp=tp, pp=pp, dtype=dtype, quant=quant, kv_dtype=kv,
                               max_model_len=max_model_len, max_num_seqs=want_seqs * (world if on_cpu else 1),
                               max_num_batched_tokens=mnbt * (world if on_cpu else 1),
                               gpu_memory_utilization=util, cpu_kv_space_gib=cpu_space,
                               max_loras=wl.max_loras, max_lora_rank=wl.max_lora_rank)
        return _Try(quant, kv, tp, pp, mem, cpu_space, mnbt=mnbt)

    def fits(t: _Try) -> bool:
        return t.mem.fits and (t.mem.kv_cache_tokens >= want_tokens or bool(pins.tensor_parallel))

    tried = [size(quant, kv, tp, pp, max_num_batched_tokens)
             for quant in quants for kv in kvs for tp, pp in parallel_layouts(req, cons)]
    fitting = [t for t in tried if fits(t)]
    if not fitting:
        raise NoFeasiblePlan(_explain_no_fit(req, cons, tried, want_tokens, mean_len, concurrency))
    prefix = pins.enable_prefix_caching if pins.enable_prefix_caching is not None else \
        bool(cons.setting("enable_prefix_caching", True))
    chunk_ladder = [max_num_batched_tokens] if (pins.max_num_batched_tokens or cons.setting(
        "max_num_batched_tokens") or on_cpu) else _chunk_ladder(max_num_batched_tokens, wl.max_input_len)
    ranked, front, stats = _rank(req, cons, dtype, fitting, want_seqs, mean_len, chunk_ladder, prefix, size, fits)
    chosen, est = ranked[0]
    analytic = est
    for cand, first in ranked[:3]:  # the simulation has the last word on percentiles
        refined = _simulate(req, cons, dtype, cand, first, want_seqs, mean_len, prefix,
                            perf.speculation(cons.setting("speculative"), req.hw.gpu.name))
        if refined.meets or cand is ranked[0][0]:
            chosen, est, analytic = cand, refined, first
        if refined.meets:
            break
    compiled = _with_backend(req, cons, backends, dtype, chosen, max_model_len, len_why, chosen.mnbt,
                             batch_why if chosen.mnbt == max_num_batched_tokens else
                             f"{batch_why} is {max_num_batched_tokens}; the search took {chosen.mnbt}: "
                             f"{_chunk_gain(req, ranked)}",
                             util, want_seqs, mean_len, chosen.cpu_space, tried, concurrency)
    from planner import predict

    load = predict.load_per_replica(req, compiled.plan.replicas) if predict.explicit_load(req) else \
        predict.saturated_load(compiled.plan.max_num_seqs, compiled.plan.replicas)
    others = tuple(Alternative(summary=_summary(c), rejected_because=_lost(req, e, analytic),
                               prediction=_brief(e)) for c, e in ranked[1:4] if c is not chosen)
    compiled = replace(compiled, prediction=predict.document(est, req, load),
                       alternatives=others + compiled.alternatives, pareto_front=front,
                       search=stats)
    if not est.meets:
        raise NoFeasiblePlan(_explain_slo(req, est, ranked), closest=compiled)
    return compiled


def _summary(t: "_Try") -> str:
    return f"TP{t.tp} PP{t.pp} {t.quant.value} KV {t.kv.value}" + (f" x{t.replicas}" if t.replicas else "")


def _brief(e) -> dict:
    return {"ttft_ms": round(e.ttft_ms, 1), "tpot_ms": round(e.tpot_ms, 2),
            "output_tok_s_per_gpu": round(e.output_tok_s_per_gpu, 1), "meets_target": e.meets}


def _lost(req: Request, e, best) -> str:
    if not e.meets:
        name, value, limit = e.violations[0]
        return f"misses {name}: {value:,.1f} > {limit:,.1f} (predicted)"
    obj = req.target.objective.value
    if e.violations == best.violations and (e.tpot_ms < best.tpot_ms if obj == "latency" else
                                            e.output_tok_s_per_gpu > best.output_tok_s_per_gpu):
        return "less preferred format (the rules order formats: accuracy first, quantize late)"
    if obj == "latency":
        return f"slower: TPOT {e.tpot_ms:.2f} ms vs {best.tpot_ms:.2f} ms (objective latency, analytic estimates)"
    if obj == "cost" and e.usd_per_mtok and best.usd_per_mtok:
        return f"dearer: ${e.usd_per_mtok:.3f}/Mtok vs ${best.usd_per_mtok:.3f} (objective cost)"
    return (f"less throughput per GPU: {e.output_tok_s_per_gpu:,.0f} vs {best.output_tok_s_per_gpu:,.0f} tok/s "
            f"(objective {obj})")


def _step_model(req: Request, dtype: Dtype, t: "_Try", cons: Constraints):
    return perf.StepModel(req.model, req.hw.gpu, req.hw, t.tp, t.pp, dtype, t.quant, t.kv,
                          expert_parallel=bool(cons.setting("expert_parallel", False)))


def _seq_ladder(cap: int, explicit: bool) -> list[int]:
    """max_num_seqs values to try: the cap alone when the load is given; else the cap and its halvings down to 8
    (a throughput target takes the largest batch whose latency still meets the SLOs)."""
    if explicit:
        return [cap]
    ladder, s = [], cap
    while s >= 8:
        ladder.append(s)
        s //= 2
    return ladder or [cap]


def _chunk_ladder(default: int, max_input_len: int) -> list[int]:
    """max_num_batched_tokens to try: the engine's default and larger chunks (fewer prefill steps for long
    prompts), up to the first that holds the longest prompt whole."""
    ladder = [default]
    while ladder[-1] < max_input_len and len(ladder) < 3:
        ladder.append(ladder[-1] * 2)
    return ladder


def _rank(req, cons, dtype, fitting, want_seqs, mean_len, chunk_ladder, prefix, size, fits) -> tuple:
    """Score the whole space in one vectorised pass: each fitting layout and format x chunk budget
    (max_num_batched_tokens) x replicas (a QPS target) x max_num_seqs ladder. Returns each layout's best candidate
    (those meeting the target first, then the formats the rules prefer, then the objective), the Pareto front
    of output tok/s per GPU against TPOT, and counts of what was scored."""
    import numpy as np

    from planner import predict

    explicit = predict.explicit_load(req)
    spec = perf.speculation(cons.setting("speculative"), req.hw.gpu.name)
    qps = req.target.min_request_rate is not None
    layouts, models, rows = [], [], []  # rows: (layout, replicas, seqs)
    for t in fitting:
        for mnbt in chunk_ladder:
            lay = t if mnbt == t.mnbt else size(t.quant, t.kv, t.tp, t.pp, mnbt)
            if lay is not t and not fits(lay):
                continue
            world = t.tp * t.pp
            most = max(1, req.hw.total_gpus // world)
            reps = [req.pins.replicas] if req.pins.replicas else range(1, most + 1) if qps else [most]
            cap = req.pins.max_num_seqs or min(want_seqs, max(1, lay.mem.kv_cache_tokens // mean_len))
            ladder = _seq_ladder(cap, explicit or bool(req.pins.max_num_seqs))
            layouts.append(lay)
            models.append(_step_model(req, dtype, lay, cons))
            rows += [(len(layouts) - 1, r, s_) for r in reps for s_ in ladder]
    idx = np.array([r[0] for r in rows])
    replicas = np.array([r[1] for r in rows], dtype=float)
    seqs = np.array([r[2] for r in rows], dtype=float)
    mnbt = np.array([lay.mnbt for lay in layouts], dtype=float)[idx]
    kv_seqs = np.array([lay.mem.kv_cache_tokens / mean_len for lay in layouts])[idx]
    g = predict.score_grid(req, perf.StepGrid(models, idx), replicas=replicas, max_num_seqs=seqs,
                           max_num_batched_tokens=mnbt, kv_capacity_seqs=kv_seqs, prefix_caching=prefix,
                           explicit=explicit, spec=spec)
    # Formats are preferences the rules ordered (accuracy first, "quantize late"), not free variables: among
    # candidates that meet the target, the most preferred format wins, then the objective decides. A chunk budget
    # other than the engine's default must buy at least 1% of the objective.
    quant_rank = {q: i for i, q in enumerate(cons.choices["quantization"])}
    kv_rank = {k: i for i, k in enumerate(cons.choices["kv_cache_dtype"])}
    fmt_q = np.array([quant_rank.get(lay.quant.value, 99) for lay in layouts])[idx]
    fmt_kv = np.array([kv_rank.get("fp8" if lay.kv is KvPrecision.fp8 else "auto", 99) for lay in layouts])[idx]
    tps = np.array([lay.tp for lay in layouts])[idx]
    score = g.score(req.target.objective)
    penalty = 1.0 + 0.01 * (mnbt != chunk_ladder[0])
    score = np.where(score > 0, score * penalty, score / penalty)
    wide = cons.setting("parallelism") == "wide"
    keys = (-tps if wide else tps, g.gpus, score) + ((g.gpus,) if qps else ()) + (fmt_kv, fmt_q, ~g.meets)
    order = np.lexsort(keys)
    seen, ranked = set(), []
    for i in order:  # one entry per layout and format (and replica count, for a QPS target): its best chunk and batch
        lay = layouts[idx[i]]
        k = (lay.quant, lay.kv, lay.tp, lay.pp) + ((int(replicas[i]),) if qps else ())
        if k not in seen:
            seen.add(k)
            ranked.append((replace(lay, seqs=int(seqs[i]), replicas=int(replicas[i])), g.estimate(int(i))))
    stats = {"candidates_scored": len(rows), "layouts_fitting_memory": len(fitting),
             "meeting_target_analytic": int(g.meets.sum())}
    return ranked, _pareto(g, layouts, idx, replicas, seqs), stats


def _pareto(g, layouts, idx, replicas, seqs, points: int = 8) -> tuple:
    """The candidates no other beats on both TPOT and output tok/s per GPU, fastest TPOT first (at most `points`,
    spread along the front)."""
    import numpy as np

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
        out.append({"summary": f"{_summary(lay)}, max_num_seqs {int(seqs[i])}, max_num_batched_tokens {lay.mnbt}, "
                               f"{int(replicas[i])} replica{'s' if replicas[i] > 1 else ''}",
                    "tpot_ms": round(float(g.tpot_ms[i]), 2), "ttft_ms": round(float(g.ttft_ms[i]), 1),
                    "output_tok_s_per_gpu": round(float(g.output_tok_s_per_gpu[i]), 1),
                    "meets_target": bool(g.meets[i])})
    return tuple(out)


def _chunk_gain(req, ranked) -> str:
    return (f"a larger prefill chunk takes long prompts ({req.workload.max_input_len} tokens) in fewer steps "
            f"(predicted TTFT {ranked[0][1].ttft_ms:,.0f} ms)")


def _simulate(req, cons, dtype, t, est, want_seqs, mean_len, prefix, spec=None):
    from planner import predict

    replicas = t.replicas or req.pins.replicas or max(1, req.hw.total_gpus // (t.tp * t.pp))
    seqs = t.seqs or req.pins.max_num_seqs or min(want_seqs, max(1, t.mem.kv_cache_tokens // mean_len))
    load = None if predict.explicit_load(req) else predict.saturated_load(seqs, replicas)
    return predict.simulate_percentiles(req, _step_model(req, dtype, t, cons), est, replicas=replicas,
                                        max_num_seqs=seqs,
                                        max_num_batched_tokens=t.mnbt, kv_blocks=t.mem.kv_cache_blocks,
                                        block_size=t.mem.block_size, prefix_caching=prefix, load=load, spec=spec)


def _explain_slo(req: Request, est, ranked) -> str:
    t = req.target
    upper = {"ttft_ms", "tpot_ms", "e2e_latency_ms", "max_usd_per_hour"}  # the others are floors (rates)

    def off(v) -> float:  # how far a violation is from its limit, as a factor
        name, value, limit = v
        if not limit:
            return 0.0
        return value / limit if name in upper else limit / max(value, 1e-9)
    name, value, limit = max(est.violations, key=off)
    seen = [v for _, e in ranked for n, v, _lim in e.violations if n == name and math.isfinite(v)]
    best = (min(seen) if name in upper else max(seen)) if seen else value
    if not math.isfinite(best):
        reach, relax = ("every candidate is overloaded at this load (queues grow without bound)",
                        f"lower the load (workload.request_rate, target.min_request_rate={t.min_request_rate})"
                        if t.min_request_rate else "lower the load (workload.request_rate / max_concurrency)")
    else:
        suggest = math.ceil(best * 1.1) if name in upper else math.floor(best * 0.9 * 10) / 10
        reach = f"the best any candidate reaches is {best:,.1f}"
        relax = f"relax target.{name} (e.g. target.{name}={suggest:g}), lower the load (workload.request_rate / " \
                "max_concurrency)"
    return (f"No candidate meets target={t.name} on hw={req.hw.name} for {req.model.name}: the closest plan (shown "
            f"above) predicts {name} {value:,.1f} against the target's {limit:,.1f} (p{t.percentile:g}); {reach}. "
            f"Binding constraint: {name}. Fix: {relax}, use faster or more GPUs (e.g. hw=h100x8), or a lower "
            f"precision (precision=fp8 where the GPU has it).")


def _with_backend(req, cons, backends, *args) -> CompiledPlan:
    """The plan with the first allowed backend whose capability matrix can serve it (backends/base.py
    unsupported); the reasons of those that cannot are kept as alternatives, or raised when none can."""
    from backends import get, unsupported

    reasons = []
    for backend in backends:
        compiled = _finish(req, cons, backend, *args)
        reason = unsupported(backend, compiled.plan, req.hw.gpu)
        if reason is None:
            skipped = tuple(Alternative(summary=f"backend={b}", rejected_because=r) for b, r in reasons)
            return replace(compiled, alternatives=skipped + compiled.alternatives,
                           notes=compiled.notes + get(backend).notes(compiled.plan))  # e.g. TRT-LLM's memory fraction
        reasons.append((backend.value, reason))
    raise InputError("No allowed backend can serve this plan: " + "; ".join(f"{b}: {r}" for b, r in reasons)
                     + ". Fix: backend=auto (or another backend), or change the precision/layout pins the reason "
                     "names.")


def _cpu_kv_space(req, quant, kv, tp, pp, dtype, want_seqs, max_model_len) -> int:
    """Whole GiB of VLLM_CPU_KVCACHE_SPACE per worker: room for want_seqs full-length requests, within the
    machine's memory after the weights."""
    need = want_seqs * max_model_len * memory.kv_bytes_per_token(req.model, kv.value, tp, pp)
    return min(max(1, math.ceil(need / GIB)), _cpu_kv_room(req, quant, tp, pp, dtype))


def _cpu_kv_room(req, quant, tp, pp, dtype) -> int:
    """Whole GiB per worker the machine's memory leaves for KV cache after every worker's weights."""
    world = tp * pp
    room = (req.hw.gpu.memory_gib * memory.engine_constants()["cpu_memory_fraction"]
            - memory.weight_bytes_per_gpu(req.model, tp, pp, dtype, quant) * world / GIB)
    return max(0, math.floor(room / world))


def _decide(field: str, value, pinned: bool, rule: Optional[Rule], why: str = "", source: str = "") -> Decision:
    if pinned:
        return Decision(field, value, "pin", f"given as plan.{field}")
    if rule is not None:
        return Decision(field, value, rule.id, rule.why + (f" ({why})" if why else ""), rule.source)
    return Decision(field, value, "search", why, source)


def _finish(req, cons, backend, dtype, chosen: _Try, max_model_len, len_why, max_num_batched_tokens, batch_why,
            util, want_seqs, mean_len, cpu_space, tried, concurrency) -> CompiledPlan:
    hw, wl, pins, model = req.hw, req.workload, req.pins, req.model
    quant, kv, tp, pp, mem = chosen.quant, chosen.kv, chosen.tp, chosen.pp, chosen.mem
    world = tp * pp
    setting = cons.settings.get
    fired = {t.rule.id: t.rule for t in cons.trace if t.fired}
    layout_rules = [r for r in fired.values() if "tensor_parallel" in r.decides or
                    {"parallelism", "max_tensor_parallel"} & set(r.then.set)]
    fallback = (f"unquantized weights do not fit ({tried[0].mem.weights_gib:.1f} GiB per GPU at TP {tried[0].tp})"
                if quant is not Quantization.none and tried[0].quant is Quantization.none else "")
    kv_bound = max(1, mem.kv_cache_tokens // mean_len)
    max_num_seqs = pins.max_num_seqs or chosen.seqs or min(want_seqs, kv_bound)
    replicas = chosen.replicas or pins.replicas or max(1, hw.total_gpus // world)
    prefix = pins.enable_prefix_caching if pins.enable_prefix_caching is not None else \
        bool(cons.setting("enable_prefix_caching", True))
    chunked = pins.enable_chunked_prefill if pins.enable_chunked_prefill is not None else \
        bool(cons.setting("enable_chunked_prefill", True))
    spec = cons.setting("speculative")
    spec = {k: v for k, v in spec.items() if v is not None} if spec else None
    expert_parallel = bool(cons.setting("expert_parallel", False)) and model.is_moe and tp > 1
    layout_why = (f"{'widest' if cons.setting('parallelism') == 'wide' else 'smallest'} layout whose KV cache "
                  f"({mem.kv_cache_tokens:,} tokens) holds {concurrency} concurrent requests of {mean_len} tokens "
                  f"(target.min_concurrency, workload.max_concurrency); weights {mem.weights_gib:.1f} GiB/GPU of "
                  f"{mem.usable_gib:.1f} GiB usable; rules: {', '.join(r.id for r in layout_rules) or 'none'}")
    decisions = [
        _decide("backend", backend.value, pins.backend is not None, _rule_for(cons, "backend", backend.value)),
        Decision("model_path", model.path or model.hf_repo, "search",
                 "the model's local directory" if model.path else "the model's Hugging Face repo id", model.source),
        Decision("nodes", max(1, math.ceil(world / hw.gpus_per_node)), "search",
                 f"{world} GPUs per replica over {hw.gpus_per_node} GPUs per node"),
        Decision("gpus_per_replica", world, "search", f"TP {tp} x PP {pp}"),
        Decision("replicas", replicas, "pin" if pins.replicas else "search",
                 f"the fewest replicas that serve target.min_request_rate={req.target.min_request_rate:g} req/s "
                 f"within the SLOs (of {hw.total_gpus // world} that fit {hw.total_gpus} GPUs at {world} per replica)"
                 if req.target.min_request_rate is not None else
                 f"{hw.total_gpus} GPUs / {world} per replica: independent servers behind a load balancer"),
        Decision("tensor_parallel", tp, "pin" if pins.tensor_parallel else "search", layout_why,
                 "; ".join(r.source for r in layout_rules)),
        Decision("pipeline_parallel", pp, "pin" if pins.pipeline_parallel else "search",
                 "one stage" if pp == 1 else f"a full node of TP does not fit: {pp} stages across nodes"),
        _decide("expert_parallel", expert_parallel, False, setting("expert_parallel") and setting(
            "expert_parallel").rule, "" if expert_parallel else "dense model or TP 1",
            ) if setting("expert_parallel") else Decision("expert_parallel", False, "search",
                                                          "no rule asked for expert parallelism"),
        Decision("data_parallel", 1, "search", "replicas are separate servers (plan.replicas); no in-server DP"),
        _decide("dtype", dtype.value, pins.dtype is not None, _rule_for(cons, "dtype", dtype.value)),
        _decide("quantization", quant.value, pins.quantization is not None,
                _rule_for(cons, "quantization", quant.value), fallback),
        _decide("kv_cache_dtype", kv.value, pins.kv_cache_dtype is not None,
                _rule_for(cons, "kv_cache_dtype", "fp8" if kv is KvPrecision.fp8 else "auto")),
        Decision("max_model_len", max_model_len, "pin" if pins.max_model_len else "search", len_why),
        _decide("max_num_seqs", max_num_seqs, pins.max_num_seqs is not None,
                setting("max_num_seqs") and setting("max_num_seqs").rule,
                f"start {want_seqs}, bounded by KV capacity {mem.kv_cache_tokens:,} tokens / {mean_len} per request "
                f"= {kv_bound}" + ("" if not chosen.seqs or chosen.seqs == min(want_seqs, kv_bound) else
                                   f"; the search took {chosen.seqs}, the largest batch that meets the target")),
        _decide("max_num_batched_tokens", max_num_batched_tokens, pins.max_num_batched_tokens is not None,
                setting("max_num_batched_tokens") and setting("max_num_batched_tokens").rule, "",
                ) if setting("max_num_batched_tokens") or pins.max_num_batched_tokens else
        Decision("max_num_batched_tokens", max_num_batched_tokens,
                 "search" if max_num_batched_tokens > _batch_defaults(hw.gpu)[0]["max_num_batched_tokens"] else
                 "default", batch_why,
                 "vllm/engine/arg_utils.py get_batch_defaults"),
        Decision("gpu_memory_utilization", None, "search", "vLLM CPU sizes its KV cache by VLLM_CPU_KVCACHE_SPACE "
                 "(kv_cache_space_gib) instead") if util is None else
        _decide("gpu_memory_utilization", util, pins.gpu_memory_utilization is not None,
                setting("gpu_memory_utilization") and setting("gpu_memory_utilization").rule),
        _decide("enable_prefix_caching", prefix, pins.enable_prefix_caching is not None,
                setting("enable_prefix_caching") and setting("enable_prefix_caching").rule),
        _decide("enable_chunked_prefill", chunked, pins.enable_chunked_prefill is not None,
                setting("enable_chunked_prefill") and setting("enable_chunked_prefill").rule),
        _decide("speculative", spec, False, setting("speculative") and setting("speculative").rule)
        if setting("speculative") else Decision("speculative", None, "search",
                                                "no speculative-decoding rule fired (not a low-batch latency target)"),
    ]
    lora_rule = fired.get("lora.adapter-memory")
    decisions.append(Decision("max_loras", wl.max_loras, lora_rule.id if lora_rule else "search",
                              lora_rule.why if lora_rule else "no LoRA adapters in the workload (workload.max_loras)",
                              lora_rule.source if lora_rule else ""))
    decisions.append(Decision("max_lora_rank", wl.max_lora_rank if wl.max_loras else None,
                              lora_rule.id if lora_rule else "search",
                              f"workload.max_lora_rank={wl.max_lora_rank}" if wl.max_loras else "LoRA off"))
    if cpu_space is not None:
        decisions.append(Decision(
            "kv_cache_space_gib", cpu_space, "pin" if pins.kv_cache_space_gib else "search",
            "given as plan.kv_cache_space_gib" if pins.kv_cache_space_gib else
            f"room for {want_seqs} requests of {max_model_len} tokens in whole GiB (VLLM_CPU_KVCACHE_SPACE is an "
            "integer), within the machine's memory after the weights"))
    else:
        decisions.append(Decision("kv_cache_space_gib", None, "search", "GPU plans size the KV cache by "
                                  "gpu_memory_utilization"))
    plan = Plan(
        backend=backend, model_path=model.path or model.hf_repo, nodes=max(1, math.ceil(world / hw.gpus_per_node)),
        gpus_per_replica=world, replicas=replicas, tensor_parallel=tp, pipeline_parallel=pp,
        expert_parallel=expert_parallel, data_parallel=1, dtype=dtype, quantization=quant, kv_cache_dtype=kv,
        max_model_len=max_model_len, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
        gpu_memory_utilization=util, enable_prefix_caching=prefix, enable_chunked_prefill=chunked,
        speculative=spec, kv_cache_space_gib=cpu_space, max_loras=wl.max_loras,
        max_lora_rank=wl.max_lora_rank if wl.max_loras else None)
    for r in fired.values():  # rules that explain without setting (e.g. size.*) are listed on their fields
        decisions += [Decision(f, getattr(plan, f).value if hasattr(getattr(plan, f), "value") else getattr(plan, f),
                               r.id, r.why, r.source) for f in r.decides]
    unfit = [t for t in tried if not (t.mem.fits and t.mem.kv_cache_tokens >= concurrency * mean_len)]
    alternatives = tuple(Alternative(summary=_summary(t), rejected_because=_why_not(t.mem, concurrency, mean_len))
                         for t in unfit[:3])
    notes = tuple(text for _, text in cons.notes)
    return CompiledPlan(plan=plan, memory=mem, decisions=tuple(decisions), alternatives=alternatives, notes=notes,
                        rules_fired=tuple(t.rule.id for t in cons.trace if t.fired))


def _why_not(m: memory.MemoryBreakdown, concurrency: int, mean_len: int) -> str:
    if not m.startup_headroom_ok:
        return "gpu_memory_utilization leaves too little for the CUDA context: vLLM would refuse to start"
    if m.kv_cache_gib <= 0:
        return (f"weights {m.weights_gib:.1f} GiB + activations {m.activations_gib:.1f} + overhead "
                f"{m.runtime_overhead_gib:.1f} exceed the usable {m.usable_gib:.1f} GiB per GPU")
    return f"KV cache holds {m.kv_cache_tokens:,} tokens, fewer than {concurrency} requests x {mean_len} tokens"


def _explain_no_fit(req: Request, cons: Constraints, tried: list, want_tokens: int, mean_len: int,
                    concurrency: int) -> str:
    from planner.specs import Weights

    gpu, model = req.hw.gpu, req.model
    if not tried:
        return (f"No tensor/pipeline layout is possible for {model.name} on hw={req.hw.name} "
                f"({req.hw.total_gpus} x {gpu.name}). Fix: check plan.tensor_parallel/pipeline_parallel pins.")
    best = max(tried, key=lambda t: (t.mem.kv_cache_tokens, -t.mem.weights_gib))
    quant, tp, pp, m = best.quant, best.tp, best.pp, best.mem
    lines = [
        f"{model.name} does not fit hw={req.hw.name} ({req.hw.total_gpus} x {gpu.name}, {gpu.memory_gib:.1f} GiB "
        f"each) with precision={req.precision.name}: the closest layout, TP {tp} x PP {pp} with "
        f"{'unquantized' if quant is Quantization.none else quant.value} weights, puts {m.weights_gib:.1f} GiB of "
        f"weights, {m.activations_gib:.1f} GiB of activations and {m.runtime_overhead_gib:.1f} GiB of runtime on "
        f"each GPU against {m.usable_gib:.1f} GiB usable ({gpu.memory_gib:.1f} GiB x "
        f"{m.usable_gib / gpu.memory_gib:.2f}), leaving {max(m.kv_cache_gib, 0):.1f} GiB for a KV cache of "
        f"{m.kv_cache_tokens:,} tokens where {want_tokens:,} are needed ({concurrency} requests x {mean_len} tokens, "
        f"and at least max_model_len {m.max_model_len:,}).",
    ]
    fixes = []
    util = None if gpu.kind is DeviceKind.cpu else m.usable_gib / gpu.memory_gib

    def works(q: Quantization, t: int, p: int) -> Optional[memory.MemoryBreakdown]:
        space = _cpu_kv_room(req, q, t, p, Dtype.bf16) if gpu.kind is DeviceKind.cpu else None
        b = memory.breakdown(model, gpu, tp=t, pp=p, dtype=Dtype.bf16, quant=q, kv_dtype=KvPrecision.auto,
                             max_model_len=m.max_model_len, max_num_seqs=256, max_num_batched_tokens=8192,
                             gpu_memory_utilization=util, cpu_kv_space_gib=space)
        return b if b.fits and b.kv_cache_tokens >= want_tokens else None

    # What the hardware runs at all: the rules' choices for the same request with precision=auto.
    runs = constraints_for(replace(req, precision=replace(req.precision, weights=Weights.auto))).choices
    for q in (Quantization.fp8, Quantization.awq):
        if q is not quant and q.value in runs["quantization"] and (b := works(q, tp, pp)):
            fixes.append(f"precision={'fp8' if q is Quantization.fp8 else 'int4-awq'} ({b.weights_gib:.1f} GiB "
                         f"of weights per GPU at TP {tp}, KV cache {b.kv_cache_tokens:,} tokens)")
            break
    for t in (2, 4, 8, 16):
        if t * pp > req.hw.total_gpus and model.num_attention_heads % t == 0 and (b := works(quant, t, pp)):
            fixes.append(f"{t * pp} x {gpu.name} (TP {t}: {b.weights_gib:.1f} GiB of weights per GPU, KV cache "
                         f"{b.kv_cache_tokens:,} tokens)")
            break
    fixes.append(f"a smaller workload or target (target.min_concurrency={req.target.min_concurrency}, "
                 f"plan.max_model_len)")
    lines.append(f"Weights total {memory.param_counts(model).total / 1e9:.1f}B parameters. Binding constraint: "
                 f"memory (weights and KV cache per GPU). Fix: " + "; or ".join(fixes) + ".")
    return " ".join(lines)

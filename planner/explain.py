"""The search's messages: why a candidate lost, why a layout does not fit, and the exit-3 paragraphs (the
arithmetic of the closest try and what would satisfy the target)."""

import math
from dataclasses import dataclass, replace
from typing import Optional

from planner import memory, slo
from planner.candidates import cpu_kv_room
from planner.plan import MemoryBreakdown
from planner.predict import Estimate
from planner.rules import Constraints, constraints_for
from planner.specs import DeviceKind, Dtype, KvPrecision, Quantization, Request


def why_not(m: MemoryBreakdown, concurrency: int, mean_len: int) -> str:
    if not m.startup_headroom_ok and m.kv_cache_gib > 0:
        return ("gpu_memory_utilization leaves too little outside the engine's share (the CUDA context; SGLang: "
                "activations and CUDA graphs): the engine would refuse to start or run out of memory")
    if m.kv_cache_gib <= 0:
        return (f"weights {m.weights_gib:.1f} GiB + activations {m.activations_gib:.1f} + overhead "
                f"{m.runtime_overhead_gib:.1f} exceed the usable {m.usable_gib:.1f} GiB per GPU")
    return f"KV cache holds {m.kv_cache_tokens:,} tokens, fewer than {concurrency} requests x {mean_len} tokens"


def explain_no_fit(req: Request, cons: Constraints, tried: list, want_tokens: int, mean_len: int,
                   concurrency: int) -> str:
    """Exit 3 for nothing that fits: the closest layout's arithmetic and what would fit (each fix sized)."""
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

    def works(q: Quantization, t: int, p: int) -> Optional[MemoryBreakdown]:
        space = cpu_kv_room(req, q, t, p, Dtype.bf16) if gpu.kind is DeviceKind.cpu else None
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


def lost(req: Request, e: Estimate, best: Estimate) -> str:
    """Why a ranked candidate lost to the chosen one (analytic estimates)."""
    if not e.meets:
        v = slo.binding(e.violations)
        return f"misses {v.metric}: {v.value:,.1f} {'>' if slo.upper_bound(v.metric) else '<'} {v.limit:,.1f} (predicted)"
    obj = req.target.objective.value
    if e.violations == best.violations and (e.tpot_ms.mean < best.tpot_ms.mean if obj == "latency" else
                                            e.output_tok_s_per_gpu > best.output_tok_s_per_gpu):
        return "less preferred format (the rules order formats: accuracy first, quantize late)"
    if obj == "latency":
        return f"slower: TPOT {e.tpot_ms.mean:.2f} ms vs {best.tpot_ms.mean:.2f} ms (objective latency, analytic estimates)"
    if obj == "cost" and e.usd_per_mtok and best.usd_per_mtok:
        return f"dearer: ${e.usd_per_mtok:.3f}/Mtok vs ${best.usd_per_mtok:.3f} (objective cost)"
    return (f"less throughput per GPU: {e.output_tok_s_per_gpu:,.0f} vs {best.output_tok_s_per_gpu:,.0f} tok/s "
            f"(objective {obj})")


def chunk_gain(req: Request, ttft_ms: float) -> str:
    return (f"a larger prefill chunk takes long prompts ({req.workload.max_input_len} tokens) in fewer steps "
            f"(predicted TTFT {ttft_ms:,.0f} ms)")


@dataclass(frozen=True)
class Fix:
    """A change that might satisfy the target, as overrides; the app re-plans each and offers only those that do."""

    overrides: tuple[str, ...]
    says: str


def explain_slo(req: Request, est: Estimate, others: list[Estimate], quant: Quantization
                ) -> tuple[str, tuple[Fix, ...]]:
    """Exit 3 for a plan that fits but misses an SLO: the binding constraint (slo.binding, as the plan names it),
    the best any candidate reached, and the fixes to try (checked by re-planning before they are shown)."""
    t, wl = req.target, req.workload
    v = slo.binding(est.violations)
    name, value, limit = v.metric, v.value, v.limit
    field = slo.LIMITS[name][0]  # the target's field for this metric
    upper = slo.upper_bound(name)
    seen = [w.value for e in others for w in e.violations if w.metric == name and math.isfinite(w.value)]
    best = (min(seen) if upper else max(seen)) if seen else value
    fixes = []
    if not math.isfinite(best):
        reach = "every candidate is overloaded at this load (queues grow without bound)"
    else:
        suggest = math.ceil(best * 1.1) if upper else math.floor(best * 0.9 * 10) / 10
        reach = f"the best any candidate reaches is {best:,.1f}"
        fixes.append(Fix((f"target.{field}={suggest:g}",), f"relax target.{field} to {suggest:g}"))
    if wl.request_rate:
        fixes.append(Fix((f"workload.request_rate={wl.request_rate * 0.5:g}",), "halve the load"))
    elif t.min_request_rate:
        fixes.append(Fix((f"target.min_request_rate={t.min_request_rate * 0.5:g}",), "halve the rate to sustain"))
    elif wl.max_concurrency:
        fixes.append(Fix((f"workload.max_concurrency={max(1, wl.max_concurrency // 2)}",), "halve the concurrency"))
    if quant is Quantization.none and req.precision.weights.value == "auto":
        fixes.append(Fix(("precision=fp8",), "FP8 weights and KV cache"))
    message = (f"No candidate meets target={t.name} on hw={req.hw.name} for {req.model.name}: the closest plan "
               f"(shown above) predicts {name} {value:,.1f} against the target's {limit:,.1f}"
               f"{f' (p{t.percentile:g})' if name in ('ttft_ms', 'tpot_ms', 'e2e_latency_ms') else ''}; {reach}. "
               f"Binding constraint: {name}.")
    return message, tuple(fixes)


def _family(t) -> str:
    """A candidate's layout family: pure TP, TP attention + EP, or attention DP + EP."""
    return "attention DP + EP" if t.dp > 1 else "TP + EP" if t.ep else "pure TP"


def layout_choice(req: Request, chosen, ranked: list) -> str:
    """Why this MoE layout, with the numbers: the chosen candidate against the best of each other layout family
    (pure TP, TP + EP, attention DP + EP) in the same formats, as the ranking scored them (analytic steady state at
    the same target and its SLO bounds). `chosen` and `ranked` are rank.Ranked entries."""
    latency = req.target.objective.value == "latency"

    def metric(r) -> str:
        e = r.est
        return (f"TPOT {e.tpot_ms.mean:.1f} ms" if latency else f"{e.output_tok_s_per_gpu:,.0f} tok/s per GPU") + \
            (f" at TPOT {e.tpot_ms.mean:.1f} ms" if not latency else "") + ("" if e.meets else ", misses the target")

    c = chosen.cand
    same = [r for r in ranked if (r.cand.quant, r.cand.kv) == (c.quant, c.kv)]
    place = next((i for i, r in enumerate(same) if r.cand.summary() == c.summary()), len(same))
    rivals = {}
    for i, r in enumerate(same):
        if _family(r.cand) != _family(c) and _family(r.cand) not in rivals:
            rivals[_family(r.cand)] = (i, r)
    if not rivals:
        return f"{c.layout()}: {metric(chosen)} (no other MoE layout fits and is served here)"
    parts = []
    for family, (i, r) in rivals.items():
        a, b = chosen.est, r.est
        ratio = b.tpot_ms.mean / a.tpot_ms.mean if latency else \
            a.output_tok_s_per_gpu / max(b.output_tok_s_per_gpu, 1e-9)
        lost = "" if i > place else (f"; ranked first on these estimates, but the simulation puts its "
                                     f"p{req.target.percentile:g} past the target")
        parts.append(f"{ratio:.2f}x {'faster than' if latency else 'the tok/s per GPU of'} the best {family} "
                     f"({r.cand.layout()}: {metric(r)}{lost})")
    bounds = ", ".join(f"target.{f}={getattr(req.target, f):g}" for f in ("ttft_ms", "tpot_ms")
                       if getattr(req.target, f) is not None)
    weights = "unquantized" if c.quant is Quantization.none else c.quant.value
    return (f"{c.layout()} ({_family(c)}): {metric(chosen)}; " + "; ".join(parts)
            + f" (weights {weights}, KV {c.kv.value}, analytic estimates"
            + (f" within {bounds}" if bounds else "") + ")")

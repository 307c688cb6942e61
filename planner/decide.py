"""Decide: the chosen candidate as a Plan, and for every plan field the decision that set it (a pin, the rule that
fired, the search's numbers, or the engine default), with its reason and source."""

from dataclasses import replace
from typing import Optional

from planner.candidates import Sized, Space, layout_pinned, rule_for, seqs_cap, skeleton
from planner.explain import why_not
from planner import engines
from planner.plan import Alternative, CompiledPlan, Decision
from planner.rules import Constraints
from planner.rules.model import Rule
from planner.specs import KvPrecision, Quantization, Request
from planner.weights import checkpoint_method


def _decide(field: str, value, pinned: bool, rule: Optional[Rule], why: str = "", source: str = "") -> Decision:
    if pinned:
        return Decision(field, value, "pin", f"given as plan.{field}")
    if rule is not None:
        return Decision(field, value, rule.id, rule.why + (f" ({why})" if why else ""), rule.source)
    return Decision(field, value, "search", why, source)


def decide(req: Request, cons: Constraints, sp: Space, chosen: Sized, batch_why: str, tried: list[Sized],
           moe_why: str = "") -> CompiledPlan:
    """The chosen candidate as a Plan, every field with the decision that set it (pin, rule, search or default),
    and the layouts that did not fit as alternatives. `moe_why`: an MoE model's layout comparison
    (explain.layout_choice)."""
    pins = req.pins
    kv_bound = max(1, chosen.mem.kv_cache_tokens // sp.mean_len)
    plan = replace(skeleton(req, sp, chosen, chosen.backend),
                   replicas=chosen.replicas or pins.replicas or max(1, req.hw.total_gpus // chosen.world),
                   max_num_seqs=pins.max_num_seqs or chosen.seqs or seqs_cap(sp, chosen))
    decisions = _layout(req, cons, sp, chosen, plan, moe_why) + _formats(req, cons, sp, chosen, tried) + \
        _limits(req, cons, sp, chosen, plan, batch_why)
    pinned = set(pins.given())
    fired = {t.rule.id: t.rule for t in cons.trace if t.fired}
    for r in fired.values():  # rules that explain without setting (e.g. size.*) are listed on their fields; a pin
        # decided its field whatever the rule says, so the rule does not explain a pinned field
        decisions += [Decision(f, getattr(plan, f).value if hasattr(getattr(plan, f), "value") else getattr(plan, f),
                               r.id, r.why, r.source) for f in r.decides if f not in pinned]
    unfit = [t for t in tried if not (t.mem.fits and t.mem.kv_cache_tokens >= sp.kv_tokens_needed())]
    alternatives = tuple(Alternative(summary=t.summary(), rejected_because=why_not(t.mem, sp.concurrency,
                                                                                 sp.mean_len))
                         for t in unfit[:3])
    return CompiledPlan(plan=plan, memory=chosen.mem, decisions=tuple(decisions), alternatives=alternatives,
                        notes=tuple(text for _, text in cons.notes) + small_kv_notes(req, sp, chosen),
                        rules_fired=tuple(t.rule.id for t in cons.trace if t.fired))


def small_kv_notes(req: Request, sp: Space, chosen: Sized) -> tuple[str, ...]:
    """A pinned layout served with less KV cache than the target wants (or a raised memory fraction): say so."""
    if not layout_pinned(req) or chosen.kv_tokens_total >= sp.want_tokens and chosen.raised_from is None:
        return ()
    mem, pins = chosen.mem, req.pins
    pinned = ", ".join(f"plan.{k}={v}" for k, v in (("tensor_parallel", pins.tensor_parallel),
                                                    ("pipeline_parallel", pins.pipeline_parallel)) if v)
    raised = (f" at gpu_memory_utilization {chosen.limits.fraction:g} (raised from {chosen.raised_from:g}, "
              f"leaving {mem.total_gib - mem.usable_gib:.1f} GiB per GPU outside vLLM)"
              if chosen.raised_from is not None else "")
    small = (f": a small KV cache, {mem.kv_cache_tokens / sp.mean_len:.1f} requests of {sp.mean_len} tokens where the "
             f"target wants {sp.concurrency}, so requests will queue" if chosen.kv_tokens_total < sp.want_tokens else "")
    return (f"{pinned}: the KV cache gets {mem.kv_cache_gib:.1f} GiB per GPU, {mem.kv_cache_tokens:,} tokens "
            f"({mem.max_concurrency_at_max_len:.2f} requests of max_model_len {mem.max_model_len:,}){raised}{small}. "
            "Fix: more GPUs (a larger plan.tensor_parallel), quantized weights, or a shorter plan.max_model_len.",)


def _layout(req: Request, cons: Constraints, sp: Space, chosen: Sized, plan, moe_why: str) -> list[Decision]:
    """backend, model_path, nodes, gpus_per_replica, replicas, tensor/pipeline/expert/data parallel."""
    hw, pins, model, mem = req.hw, req.pins, req.model, chosen.mem
    tp, pp, dp = chosen.tp, chosen.pp, chosen.dp
    world = chosen.world
    fired = [t.rule for t in cons.trace if t.fired]
    layout_rules = [r for r in fired if "tensor_parallel" in r.decides or
                    {"parallelism", "max_tensor_parallel"} & set(r.then.set)]
    held = f"{mem.kv_cache_tokens:,} tokens" + (f" on each of {dp} DP ranks" if dp > 1 else "")
    layout_why = (f"{'widest' if cons.setting('parallelism') == 'wide' else 'smallest'} layout whose KV cache "
                  f"({held}) holds {sp.concurrency} concurrent requests of {sp.mean_len} "
                  f"tokens (target.min_concurrency, workload.max_concurrency); weights {mem.weights_gib:.1f} GiB/GPU "
                  f"of {mem.usable_gib:.1f} GiB usable; rules: {', '.join(r.id for r in layout_rules) or 'none'}")
    if model.is_moe and moe_why:
        layout_why = f"{layout_why}; {moe_why}"
    return [
        _decide("backend", plan.backend.value, pins.backend is not None,
                rule_for(cons, "backend", plan.backend.value)),
        Decision("model_path", plan.model_path, "search",
                 "the model's local directory" if model.path else "the model's Hugging Face repo id", model.source),
        Decision("nodes", plan.nodes, "search", f"{world} GPUs per replica over {hw.gpus_per_node} GPUs per node"),
        Decision("gpus_per_replica", world, "search", f"TP {tp} x PP {pp}" + (f" x DP {dp}" if dp > 1 else "")),
        Decision("replicas", plan.replicas, "pin" if pins.replicas else "search",
                 f"the fewest replicas that serve target.min_request_rate={req.target.min_request_rate:g} req/s "
                 f"within the SLOs (of {hw.total_gpus // world} that fit {hw.total_gpus} GPUs at {world} per replica)"
                 if req.target.min_request_rate is not None else
                 f"{hw.total_gpus} GPUs / {world} per replica: independent servers behind a load balancer"),
        Decision("tensor_parallel", tp, "pin" if pins.tensor_parallel else "search",
                 "given as plan.tensor_parallel" if pins.tensor_parallel else layout_why,
                 "" if pins.tensor_parallel else "; ".join(r.source for r in layout_rules)),
        Decision("pipeline_parallel", pp, "pin" if pins.pipeline_parallel else "search",
                 "given as plan.pipeline_parallel" if pins.pipeline_parallel else
                 "one stage" if pp == 1 else f"a full node of TP does not fit: {pp} stages across nodes"),
        *_moe_layout(req, cons, chosen, moe_why),
    ]


def _moe_layout(req: Request, cons: Constraints, chosen: Sized, moe_why: str) -> list[Decision]:
    """expert_parallel and data_parallel: searched for an MoE model (the numbers that chose the layout), a pin, or
    a rule's setting; a dense model has neither."""
    pins, model = req.pins, req.model
    if not model.is_moe:
        return [Decision("expert_parallel", False, "search", "dense model: no experts"),
                Decision("data_parallel", 1, "search", "dense model: replicas are separate servers (plan.replicas); "
                         "attention data parallel is planned for mixture-of-experts models")]
    source = ("vLLM --enable-expert-parallel / --data-parallel-size (engine/arg_utils.py); SGLang --ep-size / "
              "--enable-dp-attention; TensorRT-LLM moe_expert_parallel_size / enable_attention_dp; step model: "
              "planner/moe.py")
    ep_rule = cons.settings.get("expert_parallel")
    ep = (Decision("expert_parallel", chosen.ep, "pin", "given as plan.expert_parallel")
          if pins.expert_parallel is not None else
          _decide("expert_parallel", chosen.ep, False, ep_rule.rule) if ep_rule else
          Decision("expert_parallel", chosen.ep, "search", moe_why or "the only MoE layout that fits", source))
    dp = (Decision("data_parallel", chosen.dp, "pin", "given as plan.data_parallel") if pins.data_parallel else
          Decision("data_parallel", chosen.dp, "search", moe_why or "the only MoE layout that fits", source))
    return [ep, dp]


def _formats(req: Request, cons: Constraints, sp: Space, chosen: Sized, tried: list[Sized]) -> list[Decision]:
    """dtype, quantization, kv_cache_dtype: the rule that put the value first, or the pin."""
    pins, quant, kv = req.pins, chosen.quant, chosen.kv
    fallback = (f"unquantized weights do not fit ({tried[0].mem.weights_gib:.1f} GiB per GPU at TP {tried[0].tp})"
                if quant is not Quantization.none and tried[0].quant is Quantization.none else "")
    return [
        _decide("dtype", sp.dtype.value, pins.dtype is not None, rule_for(cons, "dtype", sp.dtype.value)),
        _decide("quantization", quant.value, pins.quantization is not None,
                rule_for(cons, "quantization", quant.value), fallback),
        _decide("kv_cache_dtype", kv.value, pins.kv_cache_dtype is not None,
                rule_for(cons, "kv_cache_dtype", "fp8" if kv is KvPrecision.fp8 else "auto")),
        Decision("quantization_method", checkpoint_method(req.model, quant), "search",
                 f"the checkpoint is stored as {quant.value} ({req.model.quant.method or quant.value}); the engine "
                 "reads its layout from the checkpoint's quantization_config, so no --quantization flag is passed"
                 if checkpoint_method(req.model, quant) else
                 "unquantized weights" if quant is Quantization.none else
                 f"the engine quantizes the {req.model.torch_dtype} checkpoint to {quant.value} as it loads",
                 req.model.source),
    ]


def _fraction(req: Request, cons: Constraints, chosen: Sized, plan) -> Decision:
    """gpu_memory_utilization: the engine's own memory fraction (vLLM gpu_memory_utilization, TensorRT-LLM
    free_gpu_memory_fraction, SGLang mem_fraction_static), pinned, set by a rule (vLLM's accounting only), or the
    engine's default."""
    value = plan.gpu_memory_utilization
    if value is None:
        return Decision("gpu_memory_utilization", None, "search", "vLLM CPU sizes its KV cache by "
                        "VLLM_CPU_KVCACHE_SPACE (kv_cache_space_gib) instead")
    rule = cons.settings.get("gpu_memory_utilization")
    if chosen.raised_from is not None:
        mem = chosen.mem
        return Decision("gpu_memory_utilization", value, "search",
                        f"the pinned layout (TP {chosen.tp} x PP {chosen.pp}) leaves the KV cache too little room at "
                        f"the default {chosen.raised_from:g}; {value:g} gives it {mem.kv_cache_gib:.1f} GiB "
                        f"({mem.kv_cache_tokens:,} tokens)",
                        "conf/calibration/vllm-memory.yaml pinned_max_gpu_memory_utilization")
    if req.pins.gpu_memory_utilization is not None or not chosen.limits.fraction_default:
        return _decide("gpu_memory_utilization", value, req.pins.gpu_memory_utilization is not None,
                       rule and rule.rule)
    e = chosen.engine
    meaning = {engines.KvBudget.free_after_peak: "kv_cache_config.free_gpu_memory_fraction: the KV cache gets this "
               "share of the memory the profiling run leaves (weights, activations and workspaces already counted)",
               engines.KvBudget.static_fraction: "--mem-fraction-static: weights plus KV pool are this share of the "
               "memory free before loading; the rest holds activations and CUDA graphs",
               engines.KvBudget.free_less_reserve: "memory_config reserve: the KV cache takes the memory free after "
               "the weights load less a fixed reserve (1 - this share of the GPU) that holds the activations",
               engines.KvBudget.total_fraction: "the engine's share of device memory"}[e.kv_budget]
    return Decision("gpu_memory_utilization", value, "default",
                    f"{e.backend.value} {e.version}'s default, in its own meaning ({meaning})", e.source)


def _limits(req: Request, cons: Constraints, sp: Space, chosen: Sized, plan, batch_why: str) -> list[Decision]:
    """Context, batch limits, memory fraction, features and LoRA: pin, the rule that set it, or the search."""
    pins, wl, mem, lim = req.pins, req.workload, chosen.mem, chosen.limits
    setting = cons.settings.get

    def by_rule(name: str):
        return setting(name) and setting(name).rule

    kv_bound = max(1, mem.kv_cache_tokens // sp.mean_len)
    mnbt = plan.max_num_batched_tokens
    out = [
        Decision("max_model_len", plan.max_model_len, "pin" if pins.max_model_len else "search", sp.len_why),
        _decide("max_num_seqs", plan.max_num_seqs, pins.max_num_seqs is not None, by_rule("max_num_seqs"),
                f"start {lim.want_seqs}, bounded by KV capacity {mem.kv_cache_tokens:,} tokens / {sp.mean_len} per "
                f"request = {kv_bound}" + ("" if not chosen.seqs or chosen.seqs == seqs_cap(sp, chosen) else
                                           f"; the search took {chosen.seqs}, the largest batch that meets the "
                                           "target")),
        _decide("max_num_batched_tokens", mnbt, pins.max_num_batched_tokens is not None,
                by_rule("max_num_batched_tokens"), "") if setting("max_num_batched_tokens") or
        pins.max_num_batched_tokens else
        Decision("max_num_batched_tokens", mnbt,
                 "search" if mnbt > chosen.limits.default_mnbt else "default",
                 batch_why, lim.batch_source),
        _fraction(req, cons, chosen, plan),
        _decide("enable_prefix_caching", plan.enable_prefix_caching, pins.enable_prefix_caching is not None,
                by_rule("enable_prefix_caching")),
        _decide("enable_chunked_prefill", plan.enable_chunked_prefill, pins.enable_chunked_prefill is not None,
                by_rule("enable_chunked_prefill")),
        _decide("stream_interval", plan.stream_interval, pins.stream_interval is not None, by_rule("stream_interval"))
        if pins.stream_interval or setting("stream_interval") else
        Decision("stream_interval", plan.stream_interval, "default", "every token streamed as the engine makes it "
                 "(the engines' default); a CPU host batches them (rule frontend.stream-interval-on-cpu)"),
        _decide("speculative", plan.speculative, False, by_rule("speculative")) if setting("speculative") else
        Decision("speculative", None, "search", "no speculative-decoding rule fired (not a low-batch latency target)"),
        Decision("max_loras", wl.max_loras, "search", f"workload.max_loras={wl.max_loras}" if wl.max_loras else
                 "no LoRA adapters in the workload (workload.max_loras)"),
        Decision("max_lora_rank", plan.max_lora_rank, "search",
                 f"workload.max_lora_rank={wl.max_lora_rank}" if wl.max_loras else "LoRA off"),
    ]
    if chosen.cpu_space is not None:
        out.append(Decision(
            "kv_cache_space_gib", chosen.cpu_space, "pin" if pins.kv_cache_space_gib else "search",
            "given as plan.kv_cache_space_gib" if pins.kv_cache_space_gib else
            f"room for {lim.want_seqs} requests of {sp.max_model_len} tokens in whole GiB (VLLM_CPU_KVCACHE_SPACE is "
            "an integer), within the machine's memory after the weights"))
    else:
        out.append(Decision("kv_cache_space_gib", None, "search", "GPU plans size the KV cache by "
                            "gpu_memory_utilization"))
    return out

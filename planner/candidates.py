"""Fill the search space: what the rules allow (backend, dtype, quantization, KV dtype, layouts), each candidate
sized with the memory model, and the backend that can serve it (the capability matrix, backends/base.py).

    space = candidates.space(req, cons)           # the choices and limits the rules and pins leave
    tried = candidates.fill(req, cons, space)     # every format x layout, sized, with its backend or why none
"""

import math
from dataclasses import dataclass, replace
from typing import Iterator, Optional

from planner import engines, memory, weights
from planner.engines import EngineModel
from planner.errors import InputError
from planner.plan import Alternative, MemoryBreakdown, Plan
from planner.rules import Constraints
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


def batch_defaults(gpu: GpuSpec, engine: EngineModel = engines.VLLM) -> tuple[dict, str]:
    """The engine's default max_num_seqs / max_num_batched_tokens on `gpu` (vLLM's unless another engine is given)."""
    d = engine.batch_defaults(gpu)
    return {"max_num_seqs": d.max_num_seqs, "max_num_batched_tokens": d.max_num_batched_tokens}, d.why


def parallel_layouts(req: Request, cons: Constraints) -> Iterator[tuple[int, int, int, bool]]:
    """(TP, PP, DP, EP) in the order the target prefers. TP stays within a node and divides the attention heads; PP
    is only added on top of a full node of TP, across nodes, where it costs one activation transfer per stage
    instead of two all-reduces per layer. A mixture-of-experts model also gets the layouts the engines serve MoE
    with (moe_layouts): its experts spread whole over the TP group (EP), and attention data parallel + EP."""
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
    full = [(t, p, 1, False) for t, p in layouts] if (pins.data_parallel or 1) == 1 else []
    if model.is_moe:
        full = moe_layouts(req, cons, full, tps)
    if cons.setting("parallelism") == "wide":
        one_node = sorted((lay for lay in full if lay[1] == 1), key=lambda lay: (-lay[0] * lay[2], lay[2], lay[3]))
        yield from one_node + [lay for lay in full if lay[1] > 1]
    else:
        yield from sorted(full, key=lambda lay: (lay[0] * lay[1] * lay[2], lay[1], lay[2], lay[3]))


def moe_layouts(req: Request, cons: Constraints, plain: list[tuple[int, int, int, bool]], tps: list[int]
                ) -> list[tuple[int, int, int, bool]]:
    """The MoE layouts to search, besides pure TP (`plain`): TP attention + EP (the experts spread whole over the
    TP group), and attention data parallel + EP on one node (dp ranks of `tps` TP each; vLLM --data-parallel-size
    with --enable-expert-parallel, SGLang --enable-dp-attention, TRT-LLM enable_attention_dp). Pins and an
    `expert_parallel` rule setting narrow them (true: only EP layouts; false: no EP, hence no attention DP)."""
    hw, pins = req.hw, req.pins
    want_ep = pins.expert_parallel if pins.expert_parallel is not None else cons.setting("expert_parallel")
    eps = [False, True] if want_ep is None else [bool(want_ep)]
    out = list(dict.fromkeys((t, p, 1, ep and t > 1) for t, p, _, _ in plain for ep in eps))
    if want_ep is None or want_ep:
        ep = True if want_ep is None else bool(want_ep)
        dps = [pins.data_parallel] if pins.data_parallel else [d for d in (2, 4, 8, 16) if d <= hw.gpus_per_node]
        out += [(t, 1, d, ep) for d in dps if (pins.pipeline_parallel or 1) == 1
                for t in tps if d > 1 and t * d <= hw.gpus_per_node]
    elif pins.data_parallel and pins.data_parallel > 1:
        out += [(t, 1, pins.data_parallel, False) for t in tps if t * pins.data_parallel <= hw.gpus_per_node]
    return out


def allowed(cons: Constraints, field: str, pinned: Optional[str]) -> list[str]:
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
    # A rule that asks for the value a config names (=backend.name ...): every excluding rule is a blocker
    blockers = [r for r in shaped if set(r.then.exclude.get(field, ())) & set(wanted)
                or (not wanted and field in r.then.exclude)]
    named = [str(v)[1:] for r in askers for v in r.then.allow[field] if str(v).startswith("=")]
    asked = f"plan.{field}={pinned} was pinned" if pinned is not None else \
        f"{', '.join(r.id for r in askers)} ask{'s' if len(askers) == 1 else ''} for {field} in " + \
        (str(wanted) if wanted or not named else f"the {', '.join(named)} given")
    why_not = "; ".join(f"{r.id} rules it out: {r.why}" for r in blockers) or \
        f"no remaining {field} satisfies every rule ({', '.join(r.id for r in shaped)})"
    raise InputError(f"{asked}, but {why_not} Fix: choose a {field} this hardware and backend support (with "
                     f"precision=auto the planner picks one), or disable the rule with rules.disable=[id].")


def rule_for(cons: Constraints, field: str, value: str) -> Optional[Rule]:
    """The highest-priority rule that put `value` on the list for `field` (allowed or preferred it)."""
    for r in cons.choice_rules[field]:
        if value in r.then.allow.get(field, ()) or value in r.then.prefer.get(field, ()) or \
                any(str(v).startswith("=") for v in r.then.allow.get(field, ())):
            return r
    return cons.choice_rules[field][0] if cons.choice_rules[field] else None


@dataclass(frozen=True)
class Space:
    """What the rules and pins leave to search, and the limits every candidate shares."""

    backends: tuple[BackendName, ...]  # allowed, most preferred first
    dtype: Dtype
    quants: tuple[Quantization, ...]
    kvs: tuple[KvPrecision, ...]
    max_model_len: int
    len_why: str
    seqs_asked: Optional[int]  # max_num_seqs pinned or set by a rule (None: each engine's default)
    mnbt_asked: Optional[int]  # max_num_batched_tokens pinned or set by a rule (None: each engine's default)
    mnbt_floor: int  # an image's encoder output is scheduled whole: the budget holds at least this
    fraction_pin: Optional[float]  # plan.gpu_memory_utilization: the engine's own memory fraction
    fraction_rule: Optional[float]  # a rule's vLLM gpu_memory_utilization (engines with vLLM's accounting)
    mean_len: int  # input + output tokens of a mean request
    concurrency: int  # requests of mean length the KV cache must hold at once
    want_tokens: int
    enable_prefix_caching: bool
    enable_chunked_prefill: bool
    speculative: Optional[dict]
    stream_interval: int = 1  # output tokens per streamed chunk (pin, rule, or every token)

    def kv_tokens_needed(self) -> int:
        return self.concurrency * self.mean_len


@dataclass(frozen=True)
class Limits:
    """What one engine starts a candidate from: its batch limits and memory fraction (pin, rule or default)."""

    want_seqs: int  # max_num_seqs to start from
    default_mnbt: int  # max_num_batched_tokens before the chunk ladder
    batch_why: str
    batch_source: str
    fraction: Optional[float]  # the engine's own memory fraction; None on CPU
    fraction_default: bool  # the engine's default (no pin, no rule)


def limits(req: Request, sp: Space, engine: EngineModel, tp: int, pp: int, dp: int = 1) -> Limits:
    """The candidate's starting limits under `engine`: pins first, then rules, then the engine's defaults (per
    attention-DP rank; `tp` is the server's tp x dp). A rule's gpu_memory_utilization is vLLM's and applies to
    engines with vLLM's accounting only."""
    gpu = req.hw.gpu
    d = engine.batch_defaults(gpu, tp, pp, dp)
    mnbt = max(sp.mnbt_asked or d.max_num_batched_tokens, sp.mnbt_floor if not req.pins.max_num_batched_tokens else 0)
    if dp > 1 and not req.pins.max_num_batched_tokens:
        # attention DP: the server's token budget (a rule's or the engine's default) split over its ranks, as SGLang
        # splits chunked_prefill_size (arg_groups/parallel_hook.py:187-202): every rank's tokens meet in the MoE
        # layers, so a step gathers what one TP server's would; the chunk ladder (rank.py) can still raise it
        mnbt = max(mnbt // dp, sp.mnbt_floor, 256)
    own = sp.fraction_pin or (sp.fraction_rule if engine.kv_budget is engines.KvBudget.total_fraction else None)
    fraction = None if gpu.kind is DeviceKind.cpu else own or engine.default_fraction(gpu, tp, pp, req.model)
    return Limits(want_seqs=int(sp.seqs_asked or d.max_num_seqs), default_mnbt=int(mnbt), batch_why=d.why,
                  batch_source=d.source, fraction=fraction, fraction_default=fraction is not None and not own)


@dataclass(frozen=True)
class Sized:
    """One candidate layout and format, sized by the memory model; `backend` is the first allowed backend that
    can serve it (None, with `unsupported` saying why, when none can). The ranking fills seqs/replicas."""

    quant: Quantization
    kv: KvPrecision
    tp: int
    pp: int
    mem: MemoryBreakdown
    mnbt: int  # max_num_batched_tokens it was sized with
    limits: Limits
    engine: EngineModel = engines.VLLM  # whose accounting sized it (the backend's, once one is chosen)
    cpu_space: Optional[int] = None
    backend: Optional[BackendName] = None
    unsupported: str = ""
    seqs: Optional[int] = None  # max_num_seqs the ranking chose for this candidate (per DP rank)
    replicas: Optional[int] = None  # replicas the ranking chose
    raised_from: Optional[float] = None  # a pinned layout that fits only above this default fraction
    dp: int = 1  # attention data-parallel ranks in one server (each its own scheduler and KV cache)
    ep: bool = False  # MoE experts spread whole over the server's tp x dp GPUs

    @property
    def world(self) -> int:
        """GPUs of one replica (server)."""
        return self.tp * self.pp * self.dp

    @property
    def kv_tokens_total(self) -> int:
        """KV tokens the server holds: every DP rank's cache (mem is one rank's)."""
        return self.mem.kv_cache_tokens * self.dp

    def layout(self) -> str:
        return f"TP{self.tp} PP{self.pp}" + (f" DP{self.dp}" if self.dp > 1 else "") + \
            (f" EP{self.tp * self.dp}" if self.ep else "")

    def summary(self) -> str:
        return f"{self.layout()} {self.quant.value} KV {self.kv.value}" + \
            (f" x{self.replicas}" if self.replicas else "")


def space(req: Request, cons: Constraints) -> Space:
    """The choices the rules allow (pins among them) and the limits the candidates share."""
    gpu, model, wl, pins = req.hw.gpu, req.model, req.workload, req.pins
    on_cpu = gpu.kind is DeviceKind.cpu
    backends = tuple(BackendName(b) for b in allowed(cons, "backend", pins.backend.value if pins.backend else None))
    dtype = Dtype(allowed(cons, "dtype", pins.dtype.value if pins.dtype else None)[0])
    quants = tuple(Quantization(q) for q in allowed(cons, "quantization",
                                                    pins.quantization.value if pins.quantization else None))
    pinned_kv = None if pins.kv_cache_dtype is None else ("fp8" if pins.kv_cache_dtype is KvPrecision.fp8 else "auto")
    kvs = tuple(KvPrecision(dtype.value) if k == "auto" else KvPrecision.fp8
                for k in allowed(cons, "kv_cache_dtype", pinned_kv))
    max_model_len, len_why = choose_max_model_len(req)
    mean_len = wl.input_len + wl.output_len
    concurrency = min(req.target.min_concurrency, wl.max_concurrency or req.target.min_concurrency)
    spec = cons.setting("speculative")
    return Space(
        backends=backends, dtype=dtype, quants=quants, kvs=kvs, max_model_len=max_model_len, len_why=len_why,
        seqs_asked=pins.max_num_seqs or cons.setting("max_num_seqs"),
        mnbt_asked=pins.max_num_batched_tokens or cons.setting("max_num_batched_tokens"),
        mnbt_floor=model.image_tokens * wl.images_per_prompt,  # vLLM's encoder budget holds an image whole
        fraction_pin=None if on_cpu else pins.gpu_memory_utilization,
        fraction_rule=None if on_cpu else cons.setting("gpu_memory_utilization"),
        mean_len=mean_len, concurrency=concurrency, want_tokens=max(max_model_len, concurrency * mean_len),
        enable_prefix_caching=pins.enable_prefix_caching if pins.enable_prefix_caching is not None else
        bool(cons.setting("enable_prefix_caching", True)),
        enable_chunked_prefill=pins.enable_chunked_prefill if pins.enable_chunked_prefill is not None else
        bool(cons.setting("enable_chunked_prefill", True)),
        speculative={k: v for k, v in spec.items() if v is not None} if spec else None,
        stream_interval=int(pins.stream_interval or cons.setting("stream_interval", 1)))


def size(req: Request, sp: Space, quant: Quantization, kv: KvPrecision, tp: int, pp: int,
         mnbt: Optional[int] = None, engine: EngineModel = engines.VLLM, dp: int = 1, ep: bool = False) -> Sized:
    """One candidate sized by `engine`'s memory accounting, at `mnbt` (None: the engine's default budget); CPU:
    with the VLLM_CPU_KVCACHE_SPACE it would be given. With attention DP (dp > 1): one DP rank's GPUs, each rank
    sizing its own KV cache (the engine's defaults are its server-wide ones: tp x dp GPUs). A layout the user pinned
    that does not fit at vLLM's default memory fraction gets the smallest higher fraction, in steps of 0.01 up to the
    safe ceiling, whose KV cache holds the target's requests (else the ceiling, if the engine can start there): the
    pin is respected wherever the engine can run it."""
    gpu, wl, pins = req.hw.gpu, req.workload, req.pins
    on_cpu = gpu.kind is DeviceKind.cpu
    world = tp * pp
    lim = limits(req, sp, engine, tp * dp, pp, dp)
    mnbt = mnbt or lim.default_mnbt
    cpu_space = None
    if on_cpu:
        cpu_space = pins.kv_cache_space_gib or _cpu_kv_space(req, quant, kv, tp, pp, sp.dtype, lim.want_seqs,
                                                             sp.max_model_len)

    def at(fraction: Optional[float]) -> MemoryBreakdown:
        return memory.breakdown(req.model, gpu, tp=tp, pp=pp, dtype=sp.dtype, quant=quant, kv_dtype=kv,
                                max_model_len=sp.max_model_len, max_num_seqs=lim.want_seqs * (world if on_cpu else 1),
                                max_num_batched_tokens=mnbt * (world if on_cpu else 1),
                                gpu_memory_utilization=fraction, cpu_kv_space_gib=cpu_space,
                                max_loras=wl.max_loras, max_lora_rank=wl.max_lora_rank, engine=engine, dp=dp, ep=ep)

    mem = at(lim.fraction)
    if (on_cpu or not layout_pinned(req) or sp.fraction_pin or mem.kv_cache_tokens * dp >= sp.want_tokens
            or engine.kv_budget is not engines.KvBudget.total_fraction):
        return Sized(quant, kv, tp, pp, mem, mnbt, lim, engine, cpu_space, dp=dp, ep=ep)
    ceiling = memory.engine_constants()["pinned_max_gpu_memory_utilization"]
    tries = [(u / 100, at(u / 100)) for u in range(round(lim.fraction * 100) + 1, round(ceiling * 100) + 1)]
    enough = [(u, m) for u, m in tries if m.fits and m.kv_cache_tokens * dp >= sp.want_tokens]
    starts = [(u, m) for u, m in tries if m.fits]
    if not (enough or starts):
        return Sized(quant, kv, tp, pp, mem, mnbt, lim, engine, cpu_space, dp=dp, ep=ep)
    fraction, mem = (enough or starts[-1:])[0]
    return Sized(quant, kv, tp, pp, mem, mnbt, replace(lim, fraction=fraction, fraction_default=False), engine,
                 cpu_space, raised_from=lim.fraction, dp=dp, ep=ep)


def layout_pinned(req: Request) -> bool:
    """The user fixed the parallel layout (plan.tensor_parallel or plan.pipeline_parallel)."""
    return bool(req.pins.tensor_parallel or req.pins.pipeline_parallel)


def fits(req: Request, sp: Space, t: Sized) -> bool:
    """Starts, and its KV cache (all DP ranks') holds the target's concurrency (a pinned layout only has to
    start)."""
    return t.mem.fits and (t.kv_tokens_total >= sp.want_tokens or layout_pinned(req))


def skeleton(req: Request, sp: Space, t: Sized, backend: BackendName) -> Plan:
    """The plan this candidate would be, with the engine's default batch limits: what the capability matrix is
    asked about, and what the chosen candidate's plan is made from (decide.py sets the searched numbers)."""
    world = t.world
    wl = req.workload
    return Plan(
        backend=backend, model_path=req.model.path or req.model.hf_repo,
        nodes=max(1, math.ceil(world / req.hw.gpus_per_node)), gpus_per_replica=world,
        replicas=req.pins.replicas or max(1, req.hw.total_gpus // world), tensor_parallel=t.tp, pipeline_parallel=t.pp,
        expert_parallel=t.ep, data_parallel=t.dp, dtype=sp.dtype,
        quantization=t.quant, kv_cache_dtype=t.kv, max_model_len=sp.max_model_len,
        max_num_seqs=req.pins.max_num_seqs or seqs_cap(sp, t),
        max_num_batched_tokens=t.mnbt, gpu_memory_utilization=t.limits.fraction,
        enable_prefix_caching=sp.enable_prefix_caching, enable_chunked_prefill=sp.enable_chunked_prefill,
        speculative=sp.speculative, kv_cache_space_gib=t.cpu_space, max_loras=wl.max_loras,
        max_lora_rank=wl.max_lora_rank if wl.max_loras else None,
        quantization_method=weights.checkpoint_method(req.model, t.quant), stream_interval=sp.stream_interval)


def seqs_cap(sp: Space, t: Sized) -> int:
    """max_num_seqs before the search's ladder: the engine's start, bounded by the requests of mean length the KV
    cache holds, and by the engine's own cap (SGLang lowers max_running_requests to its KV pool)."""
    asked = min(t.limits.want_seqs, max(1, t.mem.kv_cache_tokens // sp.mean_len))
    return t.engine.max_running(t.mem.kv_cache_tokens, sp.max_model_len, asked)


def with_backend(req: Request, sp: Space, t: Sized) -> Sized:
    """The candidate with the first allowed backend whose capability matrix serves it, or the reasons none does."""
    from backends import unsupported

    reasons = []
    for backend in sp.backends:
        reason = unsupported(backend, skeleton(req, sp, t, backend), req.hw.gpu, req.model)
        if reason is None:
            return replace(t, backend=backend, unsupported="; ".join(reasons))
        reasons.append(f"{backend.value}: {reason}")
    return replace(t, unsupported="; ".join(reasons))


def fill(req: Request, cons: Constraints, sp: Space) -> list[Sized]:
    """Every allowed format x layout, each with its backend (or why none), sized by that backend's engine model
    (planner/engines.py) at its default chunk budget."""
    first = engines.for_backend(sp.backends[0]) if sp.backends else engines.VLLM
    out = []
    for quant in sp.quants:
        for kv in sp.kvs:
            for tp, pp, dp, ep in parallel_layouts(req, cons):
                t = with_backend(req, sp, size(req, sp, quant, kv, tp, pp, engine=first, dp=dp, ep=ep))
                engine = engines.for_backend(t.backend) if t.backend else first
                if engine is not first:
                    t = replace(size(req, sp, quant, kv, tp, pp, engine=engine, dp=dp, ep=ep), backend=t.backend,
                                unsupported=t.unsupported)
                out.append(t)
    return out


def backend_alternatives(t: Sized) -> tuple[Alternative, ...]:
    """The backends passed over for candidate `t`, each with the capability that ruled it out."""
    return tuple(Alternative(summary=f"backend={r.split(':', 1)[0]}", rejected_because=r.split(": ", 1)[1])
                 for r in t.unsupported.split("; ") if r)


def no_backend(sp: Space, tried: list[Sized]) -> InputError:
    """No allowed backend serves any candidate that fits: the reasons, per backend."""
    reasons = dict.fromkeys(r for t in tried for r in t.unsupported.split("; ") if r)
    return InputError("No allowed backend can serve this plan: " + "; ".join(reasons)
                      + ". Fix: backend=auto (or another backend), or change the precision/layout pins the reason "
                      "names.")


def _cpu_kv_space(req, quant, kv, tp, pp, dtype, want_seqs, max_model_len) -> int:
    """Whole GiB of VLLM_CPU_KVCACHE_SPACE per worker: room for want_seqs full-length requests, within the
    machine's memory after the weights."""
    need = want_seqs * max_model_len * memory.kv_bytes_per_token(req.model, kv.value, tp, pp)
    return min(max(1, math.ceil(need / GIB)), cpu_kv_room(req, quant, tp, pp, dtype))


def cpu_kv_room(req, quant, tp, pp, dtype) -> int:
    """Whole GiB per worker the machine's memory leaves for KV cache after every worker's weights."""
    world = tp * pp
    room = (req.hw.gpu.memory_gib * memory.engine_constants()["cpu_memory_fraction"]
            - memory.weight_bytes_per_gpu(req.model, tp, pp, dtype, quant) * world / GIB)
    return max(0, math.floor(room / world))

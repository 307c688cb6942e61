"""Choose the plan: enumerate what is allowed, keep what fits memory, pick the smallest parallelism that fits.

This first search sizes by memory alone (the smallest tensor × pipeline parallel degree whose KV cache holds the
target's concurrency at the workload's mean length); the rule engine and the performance model refine it.
"""

import math
from typing import Iterator, Optional

from planner import memory
from planner.errors import InputError, NoFeasiblePlan
from planner.plan import Alternative, CompiledPlan, Decision, Plan
from planner.specs import (BackendName, DeviceKind, Dtype, GpuSpec, KvPrecision, ModelSpec, Quantization,
                           Request, Weights)

_ENGINE_DOC = "vLLM 0.32 (conf/calibration/vllm-memory.yaml)"
_EXPERT = "reference/llm-serving-expert.txt"
GIB = memory.GIB


def _needs(fmt: str, gpu: GpuSpec) -> Optional[str]:
    """Why `gpu` cannot run format `fmt`, or None when it can."""
    if gpu.kind is DeviceKind.cpu:
        return None if fmt in ("bf16", "fp16", "float32") else f"{fmt} is not planned on the CPU backend"
    minimum = {"bf16": 8.0, "fp8": 8.9, "int8": 7.5, "nvfp4": 10.0, "awq": 7.5, "gptq": 7.0}.get(fmt)
    if minimum is not None and gpu.compute_capability < minimum:
        return (f"{fmt} needs compute capability >= {minimum}, and {gpu.name} has {gpu.compute_capability} "
                f"({gpu.architecture.value})")
    return None


def choose_dtype(req: Request, decisions: list, notes: list) -> Dtype:
    gpu, pins, weights = req.hw.gpu, req.pins, req.precision.weights
    if pins.dtype is not None:
        decisions.append(Decision("dtype", pins.dtype.value, "pin", "given as plan.dtype"))
        return pins.dtype
    wanted = {Weights.fp16: Dtype.fp16, Weights.float32: Dtype.float32}.get(weights)
    if wanted is None:
        wanted = Dtype.fp16 if req.model.torch_dtype == "float16" else Dtype.bf16
    if wanted is Dtype.bf16 and _needs("bf16", gpu):
        if weights is Weights.bf16:
            notes.append(f"precision=bf16 asked, but {_needs('bf16', gpu)}: planning fp16 instead.")
        decisions.append(Decision("dtype", "fp16", "default",
                                  f"{gpu.name} ({gpu.architecture.value}) has no bf16 tensor cores: fp16 compute",
                                  _EXPERT + " §11 edge case 5"))
        return Dtype.fp16
    decisions.append(Decision("dtype", wanted.value, "default",
                              f"the checkpoint's dtype ({req.model.torch_dtype}), native on {gpu.name}",
                              req.model.source))
    return wanted


def quantization_options(req: Request) -> list[tuple[Quantization, str, str]]:
    """Allowed weight formats in order of preference, each with (why, source)."""
    gpu, pins, weights, model = req.hw.gpu, req.pins, req.precision.weights, req.model
    if pins.quantization is not None:
        return [(pins.quantization, "given as plan.quantization", "")]
    if model.quantization:
        q = Quantization(model.quantization) if model.quantization in Quantization.__members__ else None
        if q is None:
            raise InputError(
                f"model.quantization={model.quantization}: the checkpoint's quantization is not one the planner "
                f"models ({', '.join(m.value for m in Quantization)}). Fix: import an unquantized checkpoint.")
        return [(q, f"the checkpoint is already quantized ({model.quantization})", model.source)]
    if weights in (Weights.bf16, Weights.fp16, Weights.float32):
        return [(Quantization.none, f"precision={req.precision.name}: unquantized weights", "")]
    if weights is not Weights.auto:
        q = Quantization(weights.value)
        reason = _needs(q.value, gpu)
        if reason:
            raise InputError(
                f"precision.weights={weights.value}: {reason}. Fix: on {gpu.architecture.value} use "
                f"{'precision=int8 or precision=int4-awq' if gpu.compute_capability >= 8.0 else 'precision=fp16'}, "
                f"or pick hardware that has it (fp8: Ada, Hopper, Blackwell).")
        return [(q, f"precision={req.precision.name}", "")]
    options = [(Quantization.none, "bf16/fp16 weights are the accuracy baseline; quantize only if needed",
                _EXPERT + " §1.2 Precision gate")]
    if not _needs("fp8", gpu):
        options.append((Quantization.fp8, "unquantized weights do not fit: fp8 halves weight memory with minimal "
                        "loss on sm89+", _EXPERT + " §7.3"))
    if not _needs("awq", gpu):
        options.append((Quantization.awq, "smaller formats do not fit: weight-only int4 (AWQ) cuts weights ~4x",
                        _EXPERT + " §7.3"))
    return options


def choose_kv_dtype(req: Request, dtype: Dtype) -> tuple[KvPrecision, str]:
    asked = req.pins.kv_cache_dtype or req.precision.kv_cache
    if asked is KvPrecision.auto:
        return KvPrecision(dtype.value), "the compute dtype (no fp8 KV asked for)"
    if asked is KvPrecision.fp8 and _needs("fp8", req.hw.gpu):
        raise InputError(
            f"precision.kv_cache=fp8: {_needs('fp8', req.hw.gpu)}. Fix: precision.kv_cache=auto on this GPU.")
    return asked, "as asked"


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
        need = math.ceil((wl.max_input_len + wl.max_output_len) / 256) * 256
        why = (f"the workload's longest request ({wl.max_input_len} in + {wl.max_output_len} out tokens), "
               "rounded up to 256; a longer context would only cost KV cache")
        if need > limit >= wl.input_len + wl.output_len:
            return limit, f"{why}, capped at the model's {limit} (the longest requests will be cut)"
    if need > limit:
        raise InputError(
            f"workload={wl.name} needs a context of {need:,} tokens ({why}), but {model.name} supports "
            f"{limit:,} (max_position_embeddings in its config.json). Fix: a model with a longer context, "
            f"shorter requests (workload.input_len/output_len), or plan.max_model_len={limit}.")
    return need, why


def parallel_layouts(req: Request) -> Iterator[tuple[int, int]]:
    """(TP, PP) in order of GPUs used: TP within a node (a divisor of the attention heads, over NVLink); PP only
    on top of a full node of TP, across nodes, where it costs one activation transfer per stage instead of two
    all-reduces per layer (reference/llm-serving-expert.txt §2 Multi-GPU)."""
    hw, model, pins = req.hw, req.model, req.pins
    tps = [t for t in (1, 2, 4, 8, 16) if t <= hw.gpus_per_node and model.num_attention_heads % t == 0]
    if pins.tensor_parallel:
        tps = [pins.tensor_parallel]
    layouts = [(t, 1) for t in tps]
    pps = [p for p in range(2, hw.nodes + 1) if p <= model.num_hidden_layers]
    if pins.pipeline_parallel:
        layouts = [(t, pins.pipeline_parallel) for t in tps]
    elif tps:
        layouts += [(tps[-1], p) for p in pps]
    yield from sorted(layouts, key=lambda tp_pp: (tp_pp[0] * tp_pp[1], tp_pp[1]))


def _batch_defaults(gpu: GpuSpec) -> tuple[dict, str]:
    d = memory.engine_constants()["batch_defaults"]
    if gpu.kind is DeviceKind.cpu:
        return d["cpu_per_worker"], "vLLM 0.32's CPU server default (arg_utils.get_batch_defaults)"
    if gpu.memory_gib >= 160:
        return d["gpu_160gib_plus"], "vLLM 0.32's server default for GPUs with >= 160 GiB"
    if gpu.memory_gib >= 70 and not gpu.name.startswith("a100"):
        return d["gpu_70gib_plus"], "vLLM 0.32's server default for >= 70 GiB GPUs other than A100"
    return d["gpu_other"], "vLLM 0.32's server default for other GPUs"


def compile_plan(req: Request) -> CompiledPlan:
    """The plan for `req`, or NoFeasiblePlan with the arithmetic of the closest attempt."""
    decisions: list[Decision] = []
    notes: list[str] = []
    hw, gpu, model, wl, pins = req.hw, req.hw.gpu, req.model, req.workload, req.pins
    on_cpu = gpu.kind is DeviceKind.cpu
    consts = memory.engine_constants()

    backend = pins.backend or (req.backend.name if req.backend.name is not BackendName.auto else BackendName.vllm)
    decisions.append(Decision("backend", backend.value, "pin" if pins.backend else "default",
                              "vLLM: continuous batching, paged KV cache, runs on every GPU here and on CPU"
                              if backend is BackendName.vllm else f"backend={backend.value} as asked"))
    dtype = choose_dtype(req, decisions, notes)
    quant_options = quantization_options(req)
    kv_dtype, kv_why = choose_kv_dtype(req, dtype)
    max_model_len, len_why = choose_max_model_len(req)
    batch, batch_why = _batch_defaults(gpu)
    max_num_batched_tokens = pins.max_num_batched_tokens or batch["max_num_batched_tokens"]
    util = pins.gpu_memory_utilization or (None if on_cpu else consts["gpu_memory_utilization_default"])
    mean_len = wl.input_len + wl.output_len
    want_seqs = pins.max_num_seqs or (batch["max_num_seqs"] if on_cpu else 256)
    concurrency = min(req.target.min_concurrency, wl.max_concurrency or req.target.min_concurrency)
    want_tokens = max(max_model_len, concurrency * mean_len)

    tried = []
    for quant, q_why, q_src in quant_options:
        for tp, pp in parallel_layouts(req):
            world = tp * pp
            cpu_space = None
            if on_cpu and pins.kv_cache_space_gib:
                cpu_space = pins.kv_cache_space_gib
            elif on_cpu:
                need = want_seqs * max_model_len * memory.kv_bytes_per_token(model, kv_dtype.value, tp, pp)
                cpu_space = max(1, math.ceil(need / GIB))
                room = (gpu.memory_gib * consts["cpu_memory_fraction"]
                        - memory.weight_bytes_per_gpu(model, tp, pp, dtype, quant) * world / GIB)
                cpu_space = min(cpu_space, max(0, math.floor(room / world)))
            mem = memory.breakdown(model, gpu, tp=tp, pp=pp, dtype=dtype, quant=quant, kv_dtype=kv_dtype,
                                   max_model_len=max_model_len, max_num_seqs=want_seqs * (world if on_cpu else 1),
                                   max_num_batched_tokens=max_num_batched_tokens * (world if on_cpu else 1),
                                   gpu_memory_utilization=util, cpu_kv_space_gib=cpu_space)
            tried.append((quant, tp, pp, mem))
            if mem.fits and (mem.kv_cache_tokens >= want_tokens or pins.tensor_parallel):
                return _finish(req, decisions, notes, backend, dtype, quant, q_why, q_src, kv_dtype, kv_why,
                               max_model_len, len_why, max_num_batched_tokens, batch_why, util, tp, pp, mem,
                               want_seqs, mean_len, cpu_space, tried, concurrency)
    raise NoFeasiblePlan(_explain_no_fit(req, tried, want_tokens, mean_len, concurrency))


def _finish(req, decisions, notes, backend, dtype, quant, q_why, q_src, kv_dtype, kv_why, max_model_len, len_why,
            max_num_batched_tokens, batch_why, util, tp, pp, mem, want_seqs, mean_len, cpu_space, tried,
            concurrency):
    hw, wl, pins = req.hw, req.workload, req.pins
    world = tp * pp
    fit_why = (f"smallest layout whose KV cache ({mem.kv_cache_tokens:,} tokens) holds {concurrency} concurrent "
               f"requests of {mean_len} tokens (target.min_concurrency, workload.max_concurrency); weights "
               f"{mem.weights_gib:.1f} GiB/GPU of {mem.usable_gib:.1f} GiB usable")
    decisions.append(Decision("quantization", quant.value, "pin" if pins.quantization else "default", q_why, q_src))
    decisions.append(Decision("kv_cache_dtype", kv_dtype.value, "pin" if pins.kv_cache_dtype else "default",
                              kv_why))
    decisions.append(Decision("tensor_parallel", tp, "pin" if pins.tensor_parallel else "search", fit_why,
                              _EXPERT + " §1.2 Model Size gate"))
    decisions.append(Decision("pipeline_parallel", pp, "pin" if pins.pipeline_parallel else "search",
                              "one stage" if pp == 1 else "tensor parallel alone does not fit within a node: "
                              "pipeline stages across GPUs/nodes"))
    replicas = pins.replicas or max(1, hw.total_gpus // world)
    decisions.append(Decision("replicas", replicas, "pin" if pins.replicas else "search",
                              f"{hw.total_gpus} GPUs / {world} per replica: independent servers behind a load "
                              "balancer"))
    kv_bound = max(1, mem.kv_cache_tokens // mean_len)
    max_num_seqs = pins.max_num_seqs or min(want_seqs, kv_bound)
    decisions.append(Decision(
        "max_num_seqs", max_num_seqs, "pin" if pins.max_num_seqs else "default",
        f"start at {want_seqs}, bounded by KV capacity ({mem.kv_cache_tokens:,} tokens / {mean_len} per request "
        f"= {kv_bound})", _EXPERT + " §4.2"))
    decisions.append(Decision("max_model_len", max_model_len, "pin" if pins.max_model_len else "default", len_why))
    decisions.append(Decision("max_num_batched_tokens", max_num_batched_tokens,
                              "pin" if pins.max_num_batched_tokens else "default", batch_why))
    decisions.append(Decision("gpu_memory_utilization", util, "pin" if pins.gpu_memory_utilization else "default",
                              "vLLM CPU sizes its KV cache by VLLM_CPU_KVCACHE_SPACE instead" if util is None
                              else f"vLLM 0.32's default fraction of device memory ({util})"))
    prefix = pins.enable_prefix_caching if pins.enable_prefix_caching is not None else True
    decisions.append(Decision("enable_prefix_caching", prefix, "pin" if pins.enable_prefix_caching is not None
                              else "default", f"shared prefix of {wl.shared_prefix_len} tokens is reused"
                              if wl.shared_prefix_len else "vLLM's default; costs nothing without reuse",
                              _EXPERT + " §2"))
    chunked = pins.enable_chunked_prefill if pins.enable_chunked_prefill is not None else True
    decisions.append(Decision("enable_chunked_prefill", chunked, "pin" if pins.enable_chunked_prefill is not None
                              else "default", "long prefills are split so decode steps keep flowing",
                              _EXPERT + " §3 Prefill Stalls"))
    if cpu_space is not None:
        decisions.append(Decision("kv_cache_space_gib", cpu_space, "pin" if pins.kv_cache_space_gib else "default",
                                  "given as plan.kv_cache_space_gib" if pins.kv_cache_space_gib else
                                  f"room for {want_seqs} sequences of {max_model_len} tokens, whole GiB "
                                  "(VLLM_CPU_KVCACHE_SPACE takes an integer)"))
    plan = Plan(
        backend=backend, model_path=req.model.path or req.model.hf_repo, nodes=max(1, math.ceil(world /
                                                                                             hw.gpus_per_node)),
        gpus_per_replica=world, replicas=replicas, tensor_parallel=tp, pipeline_parallel=pp,
        expert_parallel=False, data_parallel=1, dtype=dtype, quantization=quant, kv_cache_dtype=kv_dtype,
        max_model_len=max_model_len, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
        gpu_memory_utilization=util, enable_prefix_caching=prefix, enable_chunked_prefill=chunked,
        speculative=None, kv_cache_space_gib=cpu_space)
    alternatives = tuple(
        Alternative(summary=f"TP{t} PP{p} {q.value}",
                    rejected_because=_why_not(m, concurrency, mean_len))
        for q, t, p, m in tried[:-1][-3:])
    return CompiledPlan(plan=plan, memory=mem, decisions=tuple(decisions), alternatives=alternatives,
                        notes=tuple(notes))


def _why_not(m: memory.MemoryBreakdown, concurrency: int, mean_len: int) -> str:
    if m.kv_cache_gib <= 0:
        return (f"weights {m.weights_gib:.1f} GiB + activations {m.activations_gib:.1f} + overhead "
                f"{m.runtime_overhead_gib:.1f} exceed the usable {m.usable_gib:.1f} GiB per GPU")
    return f"KV cache holds {m.kv_cache_tokens:,} tokens, fewer than {concurrency} requests x {mean_len} tokens"


def _explain_no_fit(req: Request, tried: list, want_tokens: int, mean_len: int, concurrency: int) -> str:
    gpu, model = req.hw.gpu, req.model
    if not tried:
        return (f"No tensor/pipeline layout is possible for {model.name} on hw={req.hw.name} "
                f"({req.hw.total_gpus} x {gpu.name}). Fix: check plan.tensor_parallel/pipeline_parallel pins.")
    best = max(tried, key=lambda t: (t[3].kv_cache_tokens, -t[3].weights_gib))
    quant, tp, pp, m = best
    total_w = memory.param_counts(model).total
    lines = [
        f"{model.name} does not fit hw={req.hw.name} ({req.hw.total_gpus} x {gpu.name}, {gpu.memory_gib:.1f} GiB "
        f"each) with precision={req.precision.name}: the closest layout, TP {tp} x PP {pp} with "
        f"{'unquantized' if quant is Quantization.none else quant.value} weights, puts {m.weights_gib:.1f} GiB of weights, {m.activations_gib:.1f} GiB of activations and "
        f"{m.runtime_overhead_gib:.1f} GiB of runtime on each GPU against {m.usable_gib:.1f} GiB usable "
        f"({gpu.memory_gib:.1f} GiB x {m.usable_gib / gpu.memory_gib:.2f}), leaving {max(m.kv_cache_gib, 0):.1f} GiB for a "
        f"KV cache of {m.kv_cache_tokens:,} tokens where {want_tokens:,} are needed "
        f"({concurrency} requests x {mean_len} tokens, and at least max_model_len "
        f"{m.max_model_len:,}).",
    ]
    fixes = []
    consts = memory.engine_constants()
    util = m.usable_gib / gpu.memory_gib if gpu.kind is not DeviceKind.cpu else None

    def works(q: Quantization, t: int, p: int) -> Optional[memory.MemoryBreakdown]:
        cpu_space = None
        if gpu.kind is DeviceKind.cpu:
            room = gpu.memory_gib * consts["cpu_memory_fraction"] - memory.weight_bytes_per_gpu(
                model, t, p, Dtype.bf16, q) * t * p / GIB
            cpu_space = max(0, math.floor(room / (t * p)))
        b = memory.breakdown(model, gpu, tp=t, pp=p, dtype=Dtype.bf16, quant=q, kv_dtype=KvPrecision.auto,
                             max_model_len=m.max_model_len, max_num_seqs=256, max_num_batched_tokens=8192,
                             gpu_memory_utilization=util, cpu_kv_space_gib=cpu_space)
        return b if b.fits and b.kv_cache_tokens >= want_tokens else None

    for q in (Quantization.fp8, Quantization.awq):
        if q is not quant and not _needs(q.value, gpu) and (b := works(q, tp, pp)):
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
    lines.append(f"Weights total {total_w / 1e9:.1f}B parameters. Fix: " + "; or ".join(fixes) + ".")
    return " ".join(lines)

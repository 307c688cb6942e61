"""The Backend protocol, the artifacts it renders, its capability matrix, and `unsupported()` over that matrix.

Every backend module (vllm, trtllm, tgi, sglang, mii) implements `Backend`; `backends.get(name)` returns it. The search
and the rules call `unsupported(backend, plan, gpu)` to reject a candidate with a reason that names the capability
and the source it was read from.
"""

from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol

from backends.table import FlagTable
from planner.engines import EngineModel
from planner.plan import Plan
from planner.specs import Arch, BackendName, DeviceKind, Dtype, GpuSpec, KvPrecision, ModelSpec, Quantization


@dataclass(frozen=True)
class Support:
    """Whether the engine (as this adapter renders it) has a feature, and where that was read."""

    supported: bool
    source: str
    note: str = ""


@dataclass(frozen=True)
class Precision:
    """A number format in one engine: the oldest NVIDIA GPU that runs it (None: no CUDA GPU does), whether its CPU
    build does, and the AMD architectures (no CUDA compute capability) its ROCm build runs it on."""

    min_compute_capability: Optional[float]
    source: str
    cpu: bool = False
    rocm: tuple[Arch, ...] = ()  # AMD architectures whose ROCm build runs it; (): not on AMD GPUs
    rocm_source: str = ""  # where the ROCm support (or its absence) was read


def on_rocm(gpu: GpuSpec) -> bool:
    """An AMD GPU: served by the engines' ROCm builds, judged by architecture instead of compute capability."""
    return gpu.kind is DeviceKind.gpu and gpu.vendor == "amd"


@dataclass(frozen=True)
class Capabilities:
    """What one engine release supports, as data with sources (the backend's capability matrix)."""

    backend: BackendName
    version: str  # the release the flags and this matrix were checked against
    status: str  # "active", or the project's maintenance status
    gpu: Precision  # the oldest GPU the release runs on at all; .cpu: a CPU build exists and is rendered
    dtypes: Mapping[Dtype, Precision]
    quantizations: Mapping[Quantization, Precision]
    kv_cache_dtypes: Mapping[KvPrecision, Precision]
    tensor_parallel: Support
    pipeline_parallel: Support
    data_parallel: Support
    expert_parallel: Support
    multi_node: Support
    prefix_caching: Support
    chunked_prefill: Support
    lora: Support
    vlm: Support
    speculative_methods: Mapping[str, str]  # plan.speculative["method"] (vLLM's names) → source; absent: unsupported
    engine: EngineModel  # how the engine sizes its KV cache and schedules (planner/engines.py): what is predicted
    # Attention data parallel (data_parallel > 1) by model: the HF architectures whose implementation in this engine
    # runs it (architecture → source); None: every MoE model the engine serves (a generic MoE layer)
    attention_dp_architectures: Optional[Mapping[str, str]] = None
    # The HF model_type values the engine implements (model_type → source); None: every model the planner sizes
    model_types: Optional[Mapping[str, str]] = None
    # prefill/decode pools with a KV connector (plan.disaggregation), rendered per role by backends/disagg.py
    disaggregation: Support = Support(False, "backends/disagg.py ROLES", "no disaggregated serving rendered here")


@dataclass(frozen=True)
class Metrics:
    """Prometheus metric names that matter for verification, as the engine exposes them (None: it has none)."""

    source: str
    kv_cache_usage: str
    running: Optional[str]
    waiting: Optional[str]
    preemptions: Optional[str]
    ttft_seconds: Optional[str]  # histogram
    inter_token_seconds: Optional[str]  # histogram (inter-token latency / time per output token)
    e2e_seconds: Optional[str]  # histogram
    kv_capacity: Optional[str] = None  # a gauge or info metric that carries the KV capacity
    requests_total: Optional[str] = None  # counter of finished requests, labelled model_name (autoscaling's rate)


@dataclass(frozen=True)
class Artifacts:
    """Native launch artifacts of one plan. Secrets appear only as `${NAME}` references, never as values."""

    backend: BackendName
    image: str  # the official image at a pinned tag
    argv: tuple[str, ...]  # the server command on this machine (config files relative to the artifact folder)
    env: Mapping[str, str]  # literal values, or `${NAME}` references for secrets
    docker: str  # `docker run ...` line(s): one per node role for a multi-node plan
    k8s: Mapping[str, str]  # manifest file name → YAML text
    files: Mapping[str, str]  # config file name → text (e.g. TRT-LLM's extra_llm_api_options.yaml)
    port: int
    health_path: str  # readiness: 200 once the engine serves
    metrics_path: str  # Prometheus exposition
    warnings: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: Optional[int] = None  # where metrics_path is served when not on `port` (Triton: 8002)


class Backend(Protocol):
    """One serving engine: its capability matrix, its plan-field → flag table, and how it renders a plan."""

    name: BackendName
    capabilities: Capabilities
    table: FlagTable
    image: str
    port: int
    health_path: str
    metrics_path: str
    metrics: Metrics
    warning: Optional[str]  # said whenever this backend is chosen (e.g. TGI's maintenance mode)

    def render(self, plan: Plan, name: str, api_key_env: Optional[str] = None,
               gpu: Optional[GpuSpec] = None) -> Artifacts:
        """The native artifacts for `plan` on `gpu` (None: an NVIDIA GPU, or the CPU when the plan is a CPU plan),
        Kubernetes objects named `name` (a DNS-1123 label); with `api_key_env`, the server requires the API key that
        environment variable holds (a `${NAME}` reference, never the value). An AMD `gpu` (on_rocm) gets the
        engine's ROCm image, /dev/kfd + /dev/dri in docker and amd.com/gpu in Kubernetes. Call `unsupported()`
        first: render assumes a supported plan."""
        ...

    def notes(self, plan: Plan) -> tuple[str, ...]:
        """What the user must know about serving `plan` on this engine (the search adds them to the plan's notes;
        render carries them as Artifacts.warnings). Pure: the same plan, the same notes."""
        ...

    def check(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        """Engine-specific constraints between plan values that the matrix cannot express (None: fine)."""
        ...

    def kv_cache_tokens(self, log: str) -> Optional[int]:
        """The KV-cache capacity in tokens from the engine's startup log (None: the line is not there yet)."""
        ...


def unsupported(backend: BackendName, plan: Plan, gpu: GpuSpec, model: Optional[ModelSpec] = None) -> Optional[str]:
    """Why `backend` cannot serve `plan` on `gpu` (of `model`, when given: some capabilities depend on the model's
    architecture), naming the capability and its source; None when it can."""
    from backends import get  # the registry imports the backend modules, which import this one

    impl = get(backend)
    return _matrix_reason(impl.capabilities, plan, gpu) or _model_reason(impl.capabilities, plan, model) or \
        impl.check(plan, gpu)


def _model_reason(caps: Capabilities, plan: Plan, model: Optional[ModelSpec]) -> Optional[str]:
    """A model type the engine does not implement; attention data parallel where the engine implements it only for
    some architectures."""
    types = caps.model_types
    if model is not None and types is not None and model.model_type not in types:
        return (f"backend={caps.backend.value} ({caps.version}) does not implement model_type {model.model_type!r} "
                f"({model.name}); it serves {', '.join(sorted(types))} [capability: model_types; source: "
                f"{sorted(set(types.values()))[0]}]")
    archs = caps.attention_dp_architectures
    if model is None or plan.data_parallel <= 1 or archs is None or model.architecture in archs:
        return None
    return (f"backend={caps.backend.value} ({caps.version}) runs attention data parallel (data_parallel="
            f"{plan.data_parallel}) only for {', '.join(sorted(archs))}; {model.name} is {model.architecture} "
            f"[capability: data_parallel; source: {sorted(set(archs.values()))[0]}]")


def _matrix_reason(caps: Capabilities, plan: Plan, gpu: GpuSpec) -> Optional[str]:
    who = f"backend={caps.backend.value} ({caps.version})"
    on_cpu = gpu.kind is DeviceKind.cpu
    if on_cpu and not caps.gpu.cpu:
        return f"{who} does not run on the CPU [capability: cpu; source: {caps.gpu.source}]"
    if on_rocm(gpu) and gpu.architecture not in caps.gpu.rocm:
        return (f"{who} does not run on AMD GPUs ({gpu.name}, {gpu.architecture.value}, ROCm): "
                f"{caps.gpu.rocm_source or 'its builds are CUDA-only'} [capability: gpu; source: {caps.gpu.source}]")
    if not on_cpu and not on_rocm(gpu) and gpu.compute_capability < (caps.gpu.min_compute_capability or 0):
        return (f"{who} needs compute capability >= {caps.gpu.min_compute_capability}, {gpu.name} has "
                f"{gpu.compute_capability} [capability: gpu; source: {caps.gpu.source}]")
    kv = plan.kv_cache_dtype if plan.kv_cache_dtype is not KvPrecision.auto else KvPrecision(plan.dtype.value)
    for label, table, key in (("dtype", caps.dtypes, plan.dtype), ("quantization", caps.quantizations,
                                                                    plan.quantization),
                              ("kv_cache_dtype", caps.kv_cache_dtypes, kv)):
        reason = _precision_reason(who, label, key, table.get(key), gpu, on_cpu)
        if reason:
            return reason
    checks = (
        (plan.tensor_parallel > 1, "tensor_parallel", caps.tensor_parallel, f"tensor_parallel={plan.tensor_parallel}"),
        (plan.pipeline_parallel > 1, "pipeline_parallel", caps.pipeline_parallel,
         f"pipeline_parallel={plan.pipeline_parallel}"),
        (plan.data_parallel > 1, "data_parallel", caps.data_parallel, f"data_parallel={plan.data_parallel}"),
        (plan.expert_parallel, "expert_parallel", caps.expert_parallel, "expert_parallel=true"),
        (plan.nodes > 1, "multi_node", caps.multi_node, f"nodes={plan.nodes}"),
        (plan.enable_prefix_caching, "prefix_caching", caps.prefix_caching, "enable_prefix_caching=true"),
        (plan.enable_chunked_prefill, "chunked_prefill", caps.chunked_prefill, "enable_chunked_prefill=true"),
        (plan.disaggregation is not None, "disaggregation", caps.disaggregation, "disaggregation (xPyD)"),
    )
    for wanted, name, support, asked in checks:
        if wanted and not support.supported:
            note = f" ({support.note})" if support.note else ""
            return f"{who} does not support {asked}{note} [capability: {name}; source: {support.source}]"
    if plan.max_loras:
        from backends import get

        missing = get(caps.backend).table.no_flag_for("max_loras")
        if missing:
            return (f"{who}: this adapter does not render LoRA adapters (max_loras={plan.max_loras}) "
                    f"[capability: lora; source: {missing.reason}]")
    if plan.stream_interval > 1:
        from backends import get

        missing = get(caps.backend).table.no_flag_for("stream_interval")
        if missing:
            return (f"{who} streams every token here: no stream interval (stream_interval={plan.stream_interval}) "
                    f"[capability: stream_interval; source: {missing.reason}]. Fix: plan.stream_interval=1, or "
                    "backend=vllm or sglang")
    if plan.speculative:
        method = str(plan.speculative.get("method"))
        if method not in caps.speculative_methods:
            known = ", ".join(sorted(caps.speculative_methods)) or "none"
            return (f"{who} has no speculative method {method!r} in this adapter (it renders: {known}) "
                    f"[capability: speculative_methods; source: {caps.version}]")
    return None


def _precision_reason(who: str, label: str, key, precision: Optional[Precision], gpu: GpuSpec,
                      on_cpu: bool) -> Optional[str]:
    if label == "quantization" and key is Quantization.none:
        return None
    asked = f"{label}={key.value}"
    if precision is None:
        return f"{who} has no {asked} [capability: {label}s; source: {who}'s matrix lists no such format]"
    if on_cpu:
        return None if precision.cpu else (f"{who} does not run {asked} on the CPU [capability: {label}s; "
                                           f"source: {precision.source}]")
    if on_rocm(gpu):
        if gpu.architecture in precision.rocm:
            return None
        source = precision.rocm_source or f"not checked on ROCm, so not rendered there; CUDA: {precision.source}"
        return (f"{who} does not run {asked} on {gpu.name} ({gpu.architecture.value}, ROCm) [capability: {label}s; "
                f"source: {source}]")
    if precision.min_compute_capability is None:
        return f"{who} does not run {asked} on GPUs [capability: {label}s; source: {precision.source}]"
    if gpu.compute_capability < precision.min_compute_capability:
        return (f"{who} needs compute capability >= {precision.min_compute_capability} for {asked}, {gpu.name} "
                f"({gpu.architecture.value}) has {gpu.compute_capability} [capability: {label}s; "
                f"source: {precision.source}]")
    return None

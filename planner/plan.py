"""The planner's results, frozen and below all logic: the Plan (what the backend is told), its memory, its
prediction, its decisions and alternatives, and the CompiledPlan that carries them from compile to verdict.

Every float a result holds is already rounded the way the plan document writes it (`settled`), so a plan file read
back (planner/document.py) equals the object written.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from planner.specs import BackendName, Dtype, KvPrecision, Quantization


@dataclass(frozen=True)
class Decision:
    """Why one plan field has its value: a rule id (or "search", "pin", "default") with its reason and source."""

    field: str
    value: Any
    by: str
    why: str
    source: str = ""


@dataclass(frozen=True)
class PrefillPool:
    """The prefill instances of a disaggregated plan: prompt-only servers whose KV goes to the decode pool."""

    replicas: int
    tensor_parallel: int
    expert_parallel: bool
    gpus_per_replica: int
    max_num_batched_tokens: int


@dataclass(frozen=True)
class DecodePool:
    """The decode instances of a disaggregated plan (the plan's top-level layout fields describe the same pool)."""

    replicas: int
    tensor_parallel: int
    expert_parallel: bool
    gpus_per_replica: int
    max_num_seqs: int


@dataclass(frozen=True)
class Disaggregation:
    """Prefill/decode disaggregation (xPyD): x prefill instances hand each prompt's KV cache to one of y decode
    instances through a KV connector over a link; a router in front sends each request to both."""

    prefill: PrefillPool
    decode: DecodePool
    kv_connector: str  # conf/calibration/kv-transfer.yaml `connectors` key: nixl, mooncake, lmcache
    kv_link: str  # nvlink, xgmi, pcie (one node) or rdma (InfiniBand/RoCE between nodes)

    def summary(self) -> str:
        p, d = self.prefill, self.decode
        return (f"{p.replicas}P{d.replicas}D: prefill {p.replicas} x TP{p.tensor_parallel}, decode {d.replicas} x "
                f"TP{d.tensor_parallel} ({self.kv_connector} over {self.kv_link})")


@dataclass(frozen=True)
class Band:
    """Requests/s from `low_rps` up to `high_rps` need `replicas` replicas (instances of the pool)."""

    low_rps: float
    high_rps: float
    replicas: int


@dataclass(frozen=True)
class ScaleRule:
    """Autoscaling of one pool over target.request_rate_range: what one replica sustains within the SLOs, the replica
    count at the range's ends, and the count per rate band (rendered as a KEDA ScaledObject or the stack's own)."""

    pool: str  # "replicas" (an aggregated plan), or "prefill" / "decode" (plan.disaggregation)
    replica_rps: float  # requests/s one replica sustains within the target's SLOs
    min_replicas: int
    max_replicas: int
    bands: tuple[Band, ...]


@dataclass(frozen=True)
class Plan:
    """The concrete serving configuration; keys as in DESIGN.md's plan document."""

    backend: BackendName
    model_path: str
    nodes: int
    gpus_per_replica: int
    replicas: int
    tensor_parallel: int
    pipeline_parallel: int
    expert_parallel: bool
    data_parallel: int
    dtype: Dtype
    quantization: Quantization
    kv_cache_dtype: KvPrecision
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: Optional[float]  # None on CPU (vLLM CPU sizes KV by kv_cache_space_gib)
    enable_prefix_caching: bool
    enable_chunked_prefill: bool
    speculative: Optional[dict] = None  # vLLM --speculative-config keys, or None
    kv_cache_space_gib: Optional[int] = None  # CPU only: VLLM_CPU_KVCACHE_SPACE
    max_loras: int = 0  # LoRA adapter slots (0: LoRA off)
    max_lora_rank: Optional[int] = None
    # The checkpoint's own quant_method when the plan serves it in its stored format (compressed-tensors, gptq,
    # awq, fp8, modelopt, modelopt_fp4, mxfp4, bitsandbytes): the engine reads the format from the checkpoint, so no
    # --quantization flag is rendered. None: unquantized, or quantized by the engine at load (--quantization fp8).
    quantization_method: Optional[str] = None
    disaggregation: Optional[Disaggregation] = None  # None: aggregated (every replica prefills and decodes)
    autoscaling: tuple[ScaleRule, ...] = ()  # with target.request_rate_range: replicas per rate band, per pool
    # Output tokens per streamed chunk after the first (vLLM/SGLang --stream-interval; 1: every token as it comes).
    # Larger on a CPU host, where the API server that streams them shares the cores with the engine.
    stream_interval: int = 1

    @property
    def served_model_name(self) -> str:
        """The `model` a client sends: every adapter serves the checkpoint under its path (vLLM's
        --served-model-name and SGLang's default to --model/--model-path; TRT-LLM serves its MODEL argument)."""
        return self.model_path


@dataclass(frozen=True)
class MemoryBreakdown:
    """Memory of one GPU (the rank with the fewest KV blocks) and the KV capacity of the whole replica."""

    total_gib: float
    usable_gib: float  # total × gpu_memory_utilization (CPU: the planner's share of machine memory)
    weights_gib: float
    kv_cache_gib: float
    activations_gib: float
    runtime_overhead_gib: float  # non-torch workspaces and the CUDA-graph estimate (inside the budget)
    kv_bytes_per_token: float  # on that rank
    block_size: int
    kv_cache_blocks: int  # per rank, the same on every rank (vLLM takes the minimum)
    kv_cache_tokens: int  # what vLLM reports as "KV cache size: N tokens" (int(max_concurrency × max_model_len))
    max_model_len: int
    max_concurrency_at_max_len: float  # what vLLM reports as "Maximum concurrency for L tokens per request"
    startup_headroom_ok: bool = True  # total × (1 − utilization) holds the CUDA context (else vLLM refuses)

    @property
    def fits(self) -> bool:
        return self.startup_headroom_ok and self.kv_cache_gib > 0 and self.max_concurrency_at_max_len >= 1


@dataclass(frozen=True)
class Dist:
    """A latency distribution in ms: percentiles (what the simulation produced, the target's among them) and the
    mean. `quantiles` is ((50, v), (90, v), (99, v), ...), sorted; a value is None where only the mean is known."""

    mean: float
    quantiles: tuple[tuple[float, Optional[float]], ...] = ()

    def at(self, percentile: float) -> float:
        """The value at `percentile`; the mean only when no percentile was predicted at all (analytic only)."""
        for q, v in self.quantiles:
            if q == percentile and v is not None:
                return v
        if any(v is not None for _, v in self.quantiles):
            raise KeyError(f"p{percentile:g} was not predicted (have {[q for q, _ in self.quantiles]})")
        return self.mean


@dataclass(frozen=True)
class OfferedLoad:
    """The load the plan is predicted under, and the load verification offers one server: an open loop at
    `request_rate_rps` (Poisson, `burstiness` as gamma shape) or a closed loop of `concurrency` requests."""

    request_rate_rps: Optional[float]  # per replica
    concurrency: Optional[int]  # per replica
    replicas: int
    source: str  # which input set it (workload.request_rate, target.min_request_rate, ..., or plan.max_num_seqs)

    def describe(self) -> str:
        if self.request_rate_rps is not None:
            return (f"{self.request_rate_rps * self.replicas:g} req/s ({self.source}) over {self.replicas} "
                    f"replica(s)")
        return f"{self.concurrency * self.replicas} concurrent requests ({self.source}) over {self.replicas} replica(s)"


@dataclass(frozen=True)
class Violation:
    """One SLO the prediction (or a measurement) breaks: the metric, the value, the limit."""

    metric: str
    value: float
    limit: float


@dataclass(frozen=True)
class Prediction:
    """The plan's predicted service, deployment totals (DESIGN.md `prediction:`)."""

    model: str
    load: OfferedLoad
    ttft_ms: Dist
    tpot_ms: Dist
    e2e_latency_ms: Dist
    output_throughput_tok_s: float
    output_throughput_tok_s_per_gpu: float
    request_throughput_rps: float
    concurrency: float  # mean requests in the batch
    cost_usd_per_mtok: Optional[float]
    percentile: float
    violations: tuple[Violation, ...] = ()
    binding_constraint: Optional[str] = None
    kv_transfer_ms: Optional[Dist] = None  # disaggregated plans: a prompt's KV from prefill to decode instance

    @property
    def meets_target(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class Brief:
    """A candidate's prediction in a line (alternatives, the Pareto front)."""

    ttft_ms: float
    tpot_ms: float
    output_tok_s_per_gpu: float
    meets_target: bool


@dataclass(frozen=True)
class Alternative:
    summary: str
    rejected_because: str
    prediction: Optional[Brief] = None
    layout: str = "aggregated"  # or "xPyD": prefill and decode pools (Disaggregation)


@dataclass(frozen=True)
class FrontPoint:
    """A candidate no other beats on both TPOT and output tok/s per GPU (analytic estimates)."""

    summary: str
    tpot_ms: float
    ttft_ms: float
    output_tok_s_per_gpu: float
    meets_target: bool


@dataclass(frozen=True)
class SearchStats:
    """What the search scored."""

    candidates_scored: int = 0
    layouts_fitting_memory: int = 0
    meeting_target_analytic: int = 0


@dataclass(frozen=True)
class Launch:
    """The rendered native artifacts (DESIGN.md `launch:`); env values that are secrets are `${NAME}` references."""

    argv: tuple[str, ...]
    env: dict
    docker: str
    files: dict  # relative path -> text (config files, k8s/*.yaml)


@dataclass(frozen=True)
class CompiledPlan:
    """A plan with everything that explains it; one typed object from compile to report."""

    plan: Plan
    memory: MemoryBreakdown
    decisions: tuple[Decision, ...]
    alternatives: tuple[Alternative, ...] = ()
    prediction: Optional[Prediction] = None
    notes: tuple[str, ...] = ()  # warnings for the user (e.g. bf16 asked on a GPU without it)
    rules_fired: tuple[str, ...] = ()  # ids of the plan rules that fired, in the order they applied
    search: SearchStats = field(default_factory=SearchStats)
    pareto_front: tuple[FrontPoint, ...] = ()
    launch: Optional[Launch] = None  # after render


# Decimal places each float is kept to (the plan document's precision); a field not listed keeps FLOAT_DIGITS.
FLOAT_DIGITS = 4
_DIGITS = {(MemoryBreakdown, "kv_bytes_per_token"): 1, (MemoryBreakdown, "max_concurrency_at_max_len"): 2,
           **{(MemoryBreakdown, f.name): 3 for f in dataclasses.fields(MemoryBreakdown)
              if f.name not in ("kv_bytes_per_token", "max_concurrency_at_max_len")},
           **{(Prediction, f): 1 for f in ("output_throughput_tok_s", "output_throughput_tok_s_per_gpu")},
           (Prediction, "request_throughput_rps"): 3, (Prediction, "concurrency"): 1,
           (Prediction, "cost_usd_per_mtok"): 3, (Dist, "mean"): 3, (Dist, "quantiles"): 3,
           (Brief, "ttft_ms"): 1, (Brief, "tpot_ms"): 2, (Brief, "output_tok_s_per_gpu"): 1,
           (FrontPoint, "ttft_ms"): 1, (FrontPoint, "tpot_ms"): 2, (FrontPoint, "output_tok_s_per_gpu"): 1,
           (Violation, "value"): 3, (Violation, "limit"): 3, (ScaleRule, "replica_rps"): 3,
           (Band, "low_rps"): 3, (Band, "high_rps"): 3}


def round_float(value: float, digits: int) -> float:
    """`value` to `digits` places; inf and nan stay (a saturated candidate predicts an unbounded queue)."""
    if not math.isfinite(value):
        return value
    return round(value, digits)


def settled(obj: Any, digits: int = FLOAT_DIGITS) -> Any:
    """`obj` with every float rounded to the plan document's precision, recursively (dataclasses, tuples, dicts)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: settled(getattr(obj, f.name), _DIGITS.get((type(obj), f.name), digits))
                   for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, float):
        return round_float(obj, digits)
    if isinstance(obj, tuple):
        return tuple(settled(v, digits) for v in obj)
    if isinstance(obj, dict):
        return {k: settled(v, digits) for k, v in obj.items()}
    return obj

"""The planner's results: a Plan (what the backend is told), its decisions and alternatives, frozen."""

from dataclasses import dataclass, field
from typing import Any, Optional

from planner.memory import MemoryBreakdown
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
    speculative: Optional[dict] = None
    kv_cache_space_gib: Optional[int] = None  # CPU only: VLLM_CPU_KVCACHE_SPACE
    max_loras: int = 0  # LoRA adapter slots (0: LoRA off)
    max_lora_rank: Optional[int] = None


@dataclass(frozen=True)
class Alternative:
    summary: str
    rejected_because: str
    prediction: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CompiledPlan:
    """A plan with everything that explains it."""

    plan: Plan
    memory: MemoryBreakdown
    decisions: tuple[Decision, ...]
    alternatives: tuple[Alternative, ...] = ()
    prediction: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # warnings for the user (e.g. bf16 asked on a GPU without it)
    rules_fired: tuple[str, ...] = ()  # ids of the plan rules that fired, in the order they applied
    search: dict = field(default_factory=dict)  # what the search scored: candidates, fitting layouts, meeting
    pareto_front: tuple[dict, ...] = ()  # candidates no other beats on TPOT and output tok/s per GPU

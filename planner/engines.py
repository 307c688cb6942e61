"""Each serving engine's own behaviour, as the planner predicts it: how it sizes its KV cache from its memory
fraction, which batch limits it takes when none is given, and how its scheduler admits and batches requests.

One EngineModel per engine, chosen through the backend's capability matrix (`backends.<x>.CAPABILITIES.engine`,
`for_backend`). The memory model (planner/memory.py), the analytic steady state (planner/steady.py) and the
simulation (planner/simulate.py with planner/sched/) all read it, so a plan for TensorRT-LLM is predicted as
TensorRT-LLM runs it. Numbers: conf/calibration/engines.yaml (and vllm-memory.yaml for vLLM), each with its source.

    engine      KV budget                                   admission                          batches
    vLLM        fraction x total - weights - act. - other   prompt blocks; preempt on shortage  prefill chunks + decodes
    TRT-LLM     fraction x (total - profiling peak)         prompt + max_new reserved, no evict  contexts + generations
    SGLang      fraction x memory before load - weights     prompt + max_new x new_token_ratio   prefill batches alone
    TGI         as vLLM (TGI's router is not modelled: vLLM's scheduler stands in)
    MII         free after load - reserve bytes                as vLLM (MII's ragged batching: decodes first, then
                                                            prompt chunks; frees a request's KV on a stall)
"""

import enum
import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import yaml

from planner.fastyaml import FAST_LOADER
from planner.specs import BackendName, DeviceKind, GpuSpec, ModelSpec

GIB = 2**30
MIB = 2**20


class KvBudget(str, enum.Enum):
    """How the engine turns its memory fraction into a KV-cache budget."""

    total_fraction = "total_fraction"  # vLLM gpu_memory_utilization, TGI cuda_memory_fraction
    free_after_peak = "free_after_peak"  # TRT-LLM free_gpu_memory_fraction
    static_fraction = "static_fraction"  # SGLang mem_fraction_static
    free_less_reserve = "free_less_reserve"  # DeepSpeed-MII: free memory after load less memory_config.size bytes


class Admission(str, enum.Enum):
    """When a waiting request may start, and what happens when the KV cache runs out."""

    prompt_then_preempt = "prompt_then_preempt"  # vLLM V1: admit on the prompt's blocks; preempt the newest
    full_length_no_evict = "full_length_no_evict"  # TRT-LLM GUARANTEED_NO_EVICT: reserve to completion, never evict
    reserve_then_retract = "reserve_then_retract"  # SGLang: reserve by new_token_ratio; retract decodes on shortage


@dataclass(frozen=True)
class BatchDefaults:
    """The batch limits an engine takes when the plan does not set them."""

    max_num_seqs: int
    max_num_batched_tokens: int
    why: str
    source: str


@dataclass(frozen=True)
class MemoryParts:
    """One GPU's memory before the KV cache, in bytes, as every engine's accounting needs it."""

    total: float
    weights: float
    activations: float  # peak of the engine's profiling forward
    non_torch: float  # workspaces and communication buffers outside the allocator
    cuda_graphs: float  # vLLM's CUDA-graph estimate (subtracted by vLLM only)
    cuda_context: float  # gone before any tensor exists


@dataclass(frozen=True)
class KvSizing:
    """What the engine gives the KV cache on one GPU, and whether it starts at all."""

    budget: float  # bytes for KV blocks
    usable: float  # what the fraction gives: vLLM total x fraction; TRT-LLM the profiling peak + KV (the memory
    # after the CUDA context when nothing is left); SGLang the static share for weights and KV pool
    starts: bool  # False: the engine refuses to start, or runs out of memory outside the KV cache at once
    overhead: float  # bytes the accounting puts beside weights and activations


@dataclass(frozen=True)
class EngineModel:
    """One engine's behaviour as data; see the module docstring for the three kinds."""

    backend: BackendName
    version: str
    source: str
    kv_budget: KvBudget
    admission: Admission
    mixed_batches: bool  # prefill chunks and decodes share a step (vLLM, TRT-LLM); False: prefill batches alone
    block_size: int  # KV tokens per block (page) on a GPU
    compiled_forward: bool  # the profiling forward runs torch.compile'd (vLLM) rather than eager
    profiles_sampler: bool  # the memory profile includes a sampler over max_num_seqs sequences (vLLM's dummy run)
    chunked_prefill: bool  # the engine's default

    @property
    def consts(self) -> dict:
        return engine_constants()[self.backend.value] if self.backend.value in engine_constants() else {}

    def default_fraction(self, gpu: GpuSpec, tp: int, pp: int, model: ModelSpec) -> Optional[float]:
        """The memory fraction the engine uses when none is given (None on a CPU)."""
        if gpu.kind is DeviceKind.cpu:
            return None
        if self.kv_budget is KvBudget.free_after_peak:
            return float(self.consts["free_gpu_memory_fraction"])
        if self.kv_budget is KvBudget.static_fraction:
            return sglang_mem_fraction_static(gpu, tp, pp, model)
        if self.kv_budget is KvBudget.free_less_reserve:
            return mii_fraction(gpu, self.consts["reserve_bytes_default"])
        return float(_vllm_memory()["gpu_memory_utilization_default"])

    def kv_sizing(self, parts: MemoryParts, fraction: float) -> KvSizing:
        """The KV budget on one GPU under this engine's accounting (bytes)."""
        p = parts
        if self.kv_budget is KvBudget.free_after_peak:
            peak = p.cuda_context + p.weights + p.activations + p.non_torch
            budget = (p.total - peak) * fraction
            usable = peak + budget if budget > 0 else p.total - p.cuda_context
            return KvSizing(budget, usable, starts=True, overhead=p.non_torch)
        if self.kv_budget is KvBudget.static_fraction:
            before_load = p.total - p.cuda_context - p.non_torch
            budget = before_load * fraction - p.weights
            slack = before_load * (1 - fraction)  # holds the activations and CUDA graphs at run time
            return KvSizing(budget, before_load * fraction, starts=slack >= p.activations, overhead=p.non_torch)
        if self.kv_budget is KvBudget.free_less_reserve:  # the reserve (total x (1 - fraction)) holds activations
            usable = p.total * fraction
            return KvSizing(usable - p.cuda_context - p.non_torch - p.weights, usable,
                            starts=p.total - usable >= p.activations, overhead=p.non_torch)
        usable = math.ceil(p.total * fraction)
        overhead = p.non_torch + p.cuda_graphs
        return KvSizing(usable - p.weights - p.activations - overhead, usable,
                        starts=p.total - usable >= p.cuda_context, overhead=overhead)

    def batch_defaults(self, gpu: GpuSpec, tp: int = 1, pp: int = 1, dp: int = 1) -> BatchDefaults:
        """max_num_seqs / max_num_batched_tokens the engine takes when the plan sets neither (per server; with
        attention DP over `dp` ranks the batch limit is per rank: vLLM and TensorRT-LLM apply theirs to each rank's
        scheduler, SGLang divides its server-wide one by dp)."""
        if self.backend is BackendName.trtllm:
            c = self.consts
            return BatchDefaults(int(c["max_batch_size"]), int(c["max_num_tokens"]),
                                 f"TensorRT-LLM {self.version}'s trtllm-serve defaults (max_batch_size "
                                 f"{c['max_batch_size']}, max_num_tokens {c['max_num_tokens']})",
                                 "tensorrt_llm/builder.py BuildConfig; tensorrt_llm/commands/serve.py get_llm_args")
        if self.backend is BackendName.sglang and gpu.kind is not DeviceKind.cpu:
            chunk = sglang_chunked_prefill_size(gpu)
            # DP attention: max_running_requests // attn_dp_size per rank (model_executor/pool_configurator.py:
            # 963-964); the chunk is the server's, split by candidates.limits as SGLang does (parallel_hook.py:187-202)
            return BatchDefaults(int(self.consts["max_running_requests_ceiling"]) // dp, chunk,
                                 f"SGLang {self.version}'s chunked_prefill_size {chunk} for a "
                                 f"{gpu.memory_gib:.0f} GiB GPU; max_running_requests follows the KV pool",
                                 "python/sglang/srt/arg_groups/memory_hook.py:88-170")
        if self.backend is BackendName.mii:
            c = self.consts
            return BatchDefaults(int(c["max_ragged_sequence_count"]), int(c["max_ragged_batch_size"]),
                                 f"DeepSpeed-MII {self.version}'s ragged batch defaults (max_ragged_sequence_count "
                                 f"{c['max_ragged_sequence_count']}, max_ragged_batch_size {c['max_ragged_batch_size']})",
                                 "deepspeed/inference/v2/ragged/manager_configs.py (DeepSpeed 0.16.5)")
        return _vllm_batch_defaults(gpu)

    def max_running(self, kv_tokens: int, max_model_len: int, asked: int) -> int:
        """The running-request cap the engine ends up with, given what was asked (SGLang lowers it to the KV pool:
        min(clamp(tokens / context x 512, 2048, 4096), tokens // 2) when not given, and tokens // 2 at most)."""
        if self.backend is not BackendName.sglang:
            return asked
        c = self.consts
        estimate = int(kv_tokens / max(max_model_len, 1) * c["max_running_requests_per_context"])
        estimate = max(min(estimate, c["max_running_requests_ceiling"]), c["max_running_requests_floor"])
        return max(1, min(asked, estimate, kv_tokens // 2))


@functools.lru_cache(maxsize=None)
def engine_constants() -> dict:
    """conf/calibration/engines.yaml."""
    text = resources.files("conf").joinpath("calibration", "engines.yaml").read_text()
    return yaml.load(text, Loader=FAST_LOADER)


def _vllm_memory() -> dict:
    from planner.memory import engine_constants as memory_constants

    return memory_constants()


def _vllm_batch_defaults(gpu: GpuSpec) -> BatchDefaults:
    d = _vllm_memory()["batch_defaults"]
    source = "vllm/engine/arg_utils.py get_batch_defaults"
    if gpu.kind is DeviceKind.cpu:
        row, why = d["cpu_per_worker"], "vLLM 0.32's CPU server default (arg_utils.get_batch_defaults)"
    elif gpu.memory_gib >= 160:
        row, why = d["gpu_160gib_plus"], "vLLM 0.32's server default for GPUs with >= 160 GiB"
    elif gpu.memory_gib >= 70 and not gpu.name.startswith("a100"):
        row, why = d["gpu_70gib_plus"], "vLLM 0.32's server default for >= 70 GiB GPUs other than A100"
    else:
        row, why = d["gpu_other"], "vLLM 0.32's server default for other GPUs"
    return BatchDefaults(int(row["max_num_seqs"]), int(row["max_num_batched_tokens"]), why, source)


def _smi_mib(gpu: GpuSpec) -> float:
    """Device memory as nvidia-smi reports it, in MiB: what SGLang's heuristics read."""
    return (gpu.memory_gib + engine_constants()["sglang"]["nvidia_smi_extra_gib"]) * 1024


def _by_memory(table: list, gpu: GpuSpec) -> list:
    mib = _smi_mib(gpu)
    for row in table:
        if row[0] is None or mib < row[0]:
            return row
    return table[-1]


def sglang_chunked_prefill_size(gpu: GpuSpec) -> int:
    return int(_by_memory(engine_constants()["sglang"]["chunked_prefill_size_by_memory_mib"], gpu)[1])


def sglang_mem_fraction_static(gpu: GpuSpec, tp: int, pp: int, model: ModelSpec) -> float:
    """SGLang's default mem_fraction_static: (device memory - its reserve) / device memory, rounded to 3 digits
    (arg_groups/memory_hook.py:274-330; the reserve's terms are in engines.yaml)."""
    c = engine_constants()["sglang"]
    chunk = sglang_chunked_prefill_size(gpu)
    row = _by_memory(c["decode_graph_max_bs_by_memory_mib"], gpu)
    decode_bs = row[1] if tp < 4 else row[2]
    prefill_graphs = c["reserved_mib_prefill_graphs_mla"] if model.is_mla else \
        c["reserved_mib_per_prefill_graph"] * len(sglang_prefill_graph_sizes(chunk))
    reserved = (c["reserved_base_mib"] + c["reserved_mib_per_activation_token"] *
                max(chunk, c["reserved_min_activation_tokens"]) + c["reserved_mib_per_tp_pp"] * tp * pp
                + c["reserved_mib_per_decode_graph_bs"] * decode_bs + prefill_graphs)
    mib = _smi_mib(gpu)
    if mib > c["reserved_floor_above_mib"]:
        reserved = max(reserved, c["reserved_floor_mib"])
    return round((mib - reserved) / mib, 3)


def mii_fraction(gpu: GpuSpec, reserve_bytes: float) -> float:
    """DeepSpeed-MII's memory reserve as the share of the GPU it leaves the engine: 1 - reserve / total (4 digits)."""
    return round(1 - reserve_bytes / (gpu.memory_gib * GIB), 4)


def sglang_prefill_graph_sizes(max_bs: int) -> list[int]:
    """Token counts SGLang captures prefill CUDA graphs for (arg_groups/cuda_graph_hook.py:557-574)."""
    sizes = (list(range(4, 33, 4)) + list(range(48, 257, 16)) + list(range(288, 513, 32))
             + list(range(576, 1025, 64)) + list(range(1280, 4097, 256)) + list(range(4608, max_bs + 1, 512)))
    return [s for s in sizes if s <= max_bs]


def stage_budgets(m: ModelSpec, gpu: GpuSpec, engine: EngineModel, weights: list[float], tp: int, pp: int, dtype,
                 max_num_batched_tokens: int, max_num_seqs: int, fraction: float, cuda_graphs_in_budget: bool,
                 torch_compile: bool, dp: int = 1, ep: bool = False):
    """(usable, budgets, acts, overhead, headroom_ok) of every pipeline stage under the engine's own accounting
    (planner/engines.py EngineModel.kv_sizing); the usable memory and overhead of the worst stage are reported.
    `dp`, `ep`: an attention-DP rank's GPUs (memory.breakdown)."""
    from planner import memory

    k = memory.engine_constants()["overhead"]
    non_torch = memory.non_torch_bytes(gpu, tp, dp)
    graphs = memory.runtime_overhead_bytes(m, gpu, tp, pp, cuda_graphs_in_budget, dp) - non_torch
    compiled = torch_compile and engine.compiled_forward
    acts = [memory.activation_peak_bytes(m, tp, dtype, max_num_batched_tokens, max_num_seqs,
                                         last_stage=s == pp - 1 and engine.profiles_sampler, compiled=compiled,
                                         dp=dp, ep=ep)
            for s in range(pp)]
    sized = [engine.kv_sizing(MemoryParts(total=gpu.memory_gib * GIB, weights=w, activations=a, non_torch=non_torch,
                                          cuda_graphs=graphs, cuda_context=k["cuda_context_gib"] * GIB), fraction)
             for w, a in zip(weights, acts)]
    worst = min(range(pp), key=lambda s: sized[s].budget)
    return (sized[worst].usable, [z.budget for z in sized], acts, sized[worst].overhead,
            all(z.starts for z in sized))


def for_backend(backend: BackendName) -> EngineModel:
    """The engine model of `backend`, from its capability matrix (vLLM's for `auto`, the search's default)."""
    from backends import get

    return get(BackendName.vllm if backend is BackendName.auto else backend).capabilities.engine


VLLM = EngineModel(BackendName.vllm, "0.32.0", "conf/calibration/vllm-memory.yaml; vllm/v1/core/sched/scheduler.py",
                   KvBudget.total_fraction, Admission.prompt_then_preempt, mixed_batches=True, block_size=16,
                   compiled_forward=True, profiles_sampler=True, chunked_prefill=True)
TRTLLM = EngineModel(BackendName.trtllm, "1.2.1", "conf/calibration/engines.yaml trtllm",
                     KvBudget.free_after_peak, Admission.full_length_no_evict, mixed_batches=True, block_size=32,
                     compiled_forward=False, profiles_sampler=False, chunked_prefill=False)
SGLANG = EngineModel(BackendName.sglang, "0.5.20", "conf/calibration/engines.yaml sglang",
                     KvBudget.static_fraction, Admission.reserve_then_retract, mixed_batches=False, block_size=1,
                     compiled_forward=False, profiles_sampler=False, chunked_prefill=True)
TGI = EngineModel(BackendName.tgi, VLLM.version, "TGI is modelled with vLLM's accounting and scheduler "
                  "(its own router is not modelled; TGI is in maintenance mode)",
                  KvBudget.total_fraction, Admission.prompt_then_preempt, mixed_batches=True, block_size=16,
                  compiled_forward=True, profiles_sampler=True, chunked_prefill=True)
MII = EngineModel(BackendName.mii, "0.3.3", "conf/calibration/engines.yaml mii (DeepSpeed 0.16.5 ragged/kv_cache.py); "
                  "MII's scheduler (mii/batching/ragged_batching.py) is modelled by vLLM's: decodes first, then prompt "
                  "chunks up to the token budget, a prompt admitted when its blocks fit, the newest request's KV "
                  "freed and recomputed on a stall", KvBudget.free_less_reserve, Admission.prompt_then_preempt,
                  mixed_batches=True, block_size=64, compiled_forward=False, profiles_sampler=False,
                  chunked_prefill=True)

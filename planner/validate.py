"""Check a Request's values (types are Hydra's job): ranges, and how the parts fit together.

Every problem becomes one paragraph (field=value, what is wrong, Fix:), and all are reported at once.
"""

from typing import Callable, Optional

from planner.errors import InputError
from planner.slo import PERCENTILE_RANGE
from planner.specs import Request

# (field path, test, what it must be). Paths start at the Request; None values are skipped (None = unbounded).
_BOUNDS: list[tuple[str, Callable[[float], bool], str]] = [
    *[(f"model.{f}", lambda v: v >= 1, "a positive integer") for f in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
        "vocab_size", "max_position_embeddings", "head_dim", "kv_lora_rank", "moe_intermediate_size")],
    *[(f"model.{f}", lambda v: v >= 0, "zero or more") for f in (
        "num_experts", "num_experts_per_tok", "num_shared_experts", "first_dense_layers", "sliding_window_layers")],
    ("model.num_params_b", lambda v: v > 0, "a positive number of billions"),
    ("hw.gpus_per_node", lambda v: v >= 1, "a positive integer"),
    ("hw.nodes", lambda v: v >= 1, "a positive integer"),
    ("hw.gpu.memory_gib", lambda v: v > 0, "a positive number of GiB"),
    ("hw.gpu.hbm_bandwidth_gb_s", lambda v: v > 0, "a positive number of GB/s"),
    ("hw.gpu.dense_tflops_fp16", lambda v: v > 0, "a positive number of TFLOP/s"),
    *[(f"target.{f}", lambda v: v > 0, "a positive number, or null for no bound") for f in (
        "ttft_ms", "tpot_ms", "e2e_latency_ms", "min_request_rate", "min_output_throughput_tok_s",
        "max_usd_per_hour")],
    ("target.percentile", lambda v: PERCENTILE_RANGE[0] <= v <= PERCENTILE_RANGE[1],
     f"a percentile from {PERCENTILE_RANGE[0]:g} to {PERCENTILE_RANGE[1]:g}, the ones the planner's simulation "
     "predicts (at least 120 requests per replica) and verification checks"),
    ("target.min_concurrency", lambda v: v >= 1, "a positive integer"),
    ("workload.input_len", lambda v: v >= 1, "a positive number of tokens"),
    ("workload.output_len", lambda v: v >= 1, "a positive number of tokens"),
    ("workload.range_ratio", lambda v: 0 <= v < 1, "in [0, 1): lengths vary within ±ratio of the mean"),
    ("workload.request_rate", lambda v: v > 0, "a positive rate in requests/s, or null for as fast as possible"),
    ("workload.burstiness", lambda v: v > 0, "positive (1 = Poisson)"),
    ("workload.max_concurrency", lambda v: v >= 1, "a positive integer, or null for unbounded"),
    ("workload.shared_prefix_len", lambda v: v >= 0, "zero or more tokens"),
    ("workload.num_prefixes", lambda v: v >= 1, "one or more prompt groups"),
    ("workload.num_prompts", lambda v: v >= 1, "a positive integer"),
    ("workload.max_model_len", lambda v: v >= 1, "a positive number of tokens, or null"),
    *[(f"pins.{f}", lambda v: v >= 1, "a positive integer, or null to let the planner choose") for f in (
        "tensor_parallel", "pipeline_parallel", "replicas", "max_model_len", "max_num_seqs",
        "max_num_batched_tokens")],
    ("pins.gpu_memory_utilization", lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
]


def _get(req: Request, path: str) -> Optional[float]:
    obj = req
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _cli_name(path: str) -> str:
    return "plan." + path[5:] if path.startswith("pins.") else path


def problems(req: Request) -> list[str]:
    found = []
    for path, ok, what in _BOUNDS:
        value = _get(req, path)
        if value is not None and not ok(value):
            found.append(f"{_cli_name(path)}={value}: must be {what}. Fix: set {_cli_name(path)} to such a value.")
    m, hw, pins = req.model, req.hw, req.pins
    if found:  # the relations below divide by these values
        return found
    if m.head_dim is None and m.hidden_size < m.num_attention_heads:
        found.append(f"model.hidden_size={m.hidden_size}: smaller than num_attention_heads={m.num_attention_heads}, "
                     "so each head would have no dimensions. Fix: check the model's config.json (or set "
                     "model.head_dim).")
    if m.num_attention_heads % m.num_key_value_heads:
        found.append(f"model.num_key_value_heads={m.num_key_value_heads}: must divide num_attention_heads="
                     f"{m.num_attention_heads} (grouped-query attention). Fix: check the model's config.json.")
    if pins.tensor_parallel:
        if m.num_attention_heads % pins.tensor_parallel:
            found.append(f"plan.tensor_parallel={pins.tensor_parallel}: must divide the {m.num_attention_heads} "
                         f"attention heads of {m.name} (vLLM splits heads evenly across ranks). Fix: use a divisor "
                         f"such as {', '.join(str(t) for t in (1, 2, 4, 8) if m.num_attention_heads % t == 0)}.")
        if pins.tensor_parallel > hw.gpus_per_node:
            found.append(f"plan.tensor_parallel={pins.tensor_parallel}: hw={hw.name} has {hw.gpus_per_node} GPUs per "
                         "node, and tensor parallelism stays inside a node. Fix: a smaller TP with "
                         "plan.pipeline_parallel across nodes, or hardware with more GPUs per node.")
    if pins.pipeline_parallel and pins.pipeline_parallel > m.num_hidden_layers:
        found.append(f"plan.pipeline_parallel={pins.pipeline_parallel}: more stages than {m.name}'s "
                     f"{m.num_hidden_layers} layers. Fix: at most {m.num_hidden_layers}.")
    world = (pins.tensor_parallel or 1) * (pins.pipeline_parallel or 1)
    if world > hw.total_gpus:
        found.append(f"plan.tensor_parallel x plan.pipeline_parallel = {world} GPUs, but hw={hw.name} has "
                     f"{hw.total_gpus}. Fix: pin fewer, or choose bigger hardware.")
    if m.is_moe and not 1 <= m.num_experts_per_tok <= m.num_experts:
        found.append(f"model.num_experts_per_tok={m.num_experts_per_tok}: must be between 1 and num_experts="
                     f"{m.num_experts}. Fix: check the model's config.json.")
    if req.workload.shared_prefix_len > req.workload.input_len:
        found.append(f"workload.shared_prefix_len={req.workload.shared_prefix_len}: longer than the prompt "
                     f"(input_len={req.workload.input_len}). Fix: a prefix shorter than the prompt.")
    return found


def check(req: Request) -> Request:
    """`req` itself, or InputError listing every problem."""
    found = problems(req)
    if found:
        raise InputError(*found)
    return req

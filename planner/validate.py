"""Check a Request's values (types are Hydra's job): the bounds its fields declare (planner/bounds.py), and how the
parts fit together.

Every problem becomes one paragraph (field=value, what is wrong, Fix:), and all are reported at once.
"""

import dataclasses

from planner import bounds
from planner.errors import InputError
from planner.specs import Request


def _cli_prefix(part: str) -> str:
    """The command line's name for a part of the Request: the pins are `plan.<field>`."""
    return "plan." if part == "pins" else part + "."


def problems(req: Request) -> list[str]:
    found = [p for f in dataclasses.fields(req) for p in bounds.problems(getattr(req, f.name), _cli_prefix(f.name))]
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
    found += _moe_pin_problems(req)
    if m.is_moe and not 1 <= m.num_experts_per_tok <= m.num_experts:
        found.append(f"model.num_experts_per_tok={m.num_experts_per_tok}: must be between 1 and num_experts="
                     f"{m.num_experts}. Fix: check the model's config.json.")
    if req.workload.shared_prefix_len > req.workload.input_len:
        found.append(f"workload.shared_prefix_len={req.workload.shared_prefix_len}: longer than the prompt "
                     f"(input_len={req.workload.input_len}). Fix: a prefix shorter than the prompt.")
    return found


def _moe_pin_problems(req: Request) -> list[str]:
    """plan.data_parallel and plan.expert_parallel: MoE layouts only, and the server's GPUs within one node."""
    m, hw, pins = req.model, req.hw, req.pins
    found = []
    if (pins.data_parallel or 1) > 1 and not m.is_moe:
        found.append(f"plan.data_parallel={pins.data_parallel}: {m.name} is a dense model; in-server data parallelism "
                     "is planned for mixture-of-experts models (attention data parallel + expert parallel), a dense "
                     "model scales with independent replicas. Fix: plan.replicas=N, or drop plan.data_parallel.")
    if pins.expert_parallel and not m.is_moe:
        found.append(f"plan.expert_parallel=true: {m.name} has no experts. Fix: drop plan.expert_parallel.")
    group = (pins.tensor_parallel or 1) * (pins.data_parallel or 1)
    if pins.data_parallel and group > hw.gpus_per_node:
        found.append(f"plan.tensor_parallel x plan.data_parallel = {group} GPUs, but hw={hw.name} has "
                     f"{hw.gpus_per_node} GPUs per node and the planner keeps an attention-DP group on one node. "
                     "Fix: a smaller plan.data_parallel.")
    return found


def check(req: Request) -> Request:
    """`req` itself, or InputError listing every problem."""
    found = problems(req)
    if found:
        raise InputError(*found)
    return req

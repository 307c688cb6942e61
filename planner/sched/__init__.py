"""Engine schedulers for the discrete-event simulation (planner/simulate.py): which requests run in the next step
and with how many tokens, as each engine decides it, over a shared KV pool (kvcache.KvCache).

    vllm.VllmScheduler      vLLM V1: running first, then waiting FCFS; prompt blocks admit; preempt the newest
    trtllm.TrtllmScheduler  TensorRT-LLM: GUARANTEED_NO_EVICT capacity + micro-batch scheduler, never evicts
    sglang.SglangScheduler  SGLang: prefill batches first (alone), admission by new_token_ratio, decode retraction

`make(engine, ...)` picks the one the engine model names (planner/engines.py `Admission`).
"""

from dataclasses import dataclass, field

from planner.sched.kvcache import KvCache


@dataclass
class Requests:
    """Per-request state the driver and the scheduler share (lists indexed by request)."""

    prompt: list[int]  # prompt tokens
    out: list[int]  # output tokens it will produce
    ntok: list[int]  # request.num_tokens: prompt + output so far
    computed: list[int]  # tokens whose KV exists (num_computed_tokens)
    gen: list[int]  # output tokens emitted
    # the prompt's KV still comes from a prefill instance (a disaggregated decode instance; vLLM's scheduler only)
    remote: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """The batch limits the scheduler enforces."""

    max_num_seqs: int  # running requests (vLLM max_num_seqs, TRT-LLM max_batch_size, SGLang max_running_requests)
    max_num_batched_tokens: int  # tokens per step (TRT-LLM max_num_tokens; SGLang: chunked_prefill_size)
    chunked_prefill: bool  # a prompt may be split across steps


def make(engine, reqs: Requests, kv: KvCache, limits: Limits):
    """The scheduler of `engine` (planner/engines.py EngineModel) over `reqs` and `kv`."""
    from planner.engines import Admission
    from planner.sched import sglang, trtllm, vllm

    cls = {Admission.prompt_then_preempt: vllm.VllmScheduler, Admission.full_length_no_evict: trtllm.TrtllmScheduler,
           Admission.reserve_then_retract: sglang.SglangScheduler}[engine.admission]
    return cls(reqs, kv, limits)

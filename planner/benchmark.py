"""Predict one benchmark run against a compiled plan: given requests (their prompt and output lengths, their
prompt groups) sent with given arrivals, what `vllm bench serve` (or trtllm-bench, sglang.bench_serving) would
print for the whole deployment: the run from its first send to its last token, ramp and drain included, as those
clients measure it. The same models as the plan's own prediction: the plan's engine (planner/engines.py) sizes and
schedules, the step model (planner/perf.py) times each step, the simulation (planner/simulate.py) runs the run.

    run = benchmark.Run(input_lens, output_lens, simulate.Arrivals(request_rate=None))
    metrics = benchmark.predict_run(req, compiled, run)      # RunMetrics: throughputs, TTFT/TPOT/ITL/E2E
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner import engines, perf, predict, simulate, steady
from planner.plan import CompiledPlan
from planner.specs import Request


@dataclass(frozen=True, eq=False)
class Run:
    """One benchmark run against the whole deployment."""

    input_lens: np.ndarray
    """Prompt tokens per request."""
    output_lens: np.ndarray
    """Output tokens per request (each produces exactly this many, as with ignore_eos)."""
    arrivals: simulate.Arrivals
    """Offered load for the whole deployment: rate, burstiness, concurrency cap (None rate: all at once)."""
    shared_prefix_len: int = 0
    """Leading prompt tokens shared by the requests of one prefix group."""
    num_prefixes: int = 1
    """Prefix groups (simulate.prefix_groups)."""
    seed: int = 0


@dataclass(frozen=True)
class RunMetrics:
    """What the benchmark client prints, for the whole deployment; latencies in ms, throughputs per second."""

    output_throughput_tok_s: float
    total_throughput_tok_s: float
    request_throughput_rps: float
    ttft_ms_mean: float
    ttft_ms_median: float
    ttft_ms_p99: float
    tpot_ms_mean: float
    tpot_ms_median: float
    itl_ms_mean: float
    itl_ms_median: float
    e2e_ms_mean: float
    e2e_ms_median: float
    preemptions: int
    """Preemptions (vLLM) or retractions (SGLang) over the run; TensorRT-LLM never evicts."""

    def get(self, metric: str) -> Optional[float]:
        """A metric by the name the reference data uses (None when the run does not predict it)."""
        return getattr(self, metric, None)


def _split(run: Run, replicas: int) -> Run:
    """What one replica of `replicas` gets behind a load balancer that deals requests round robin."""
    if replicas <= 1:
        return run
    a = run.arrivals
    arrivals = simulate.Arrivals(None if a.request_rate is None else a.request_rate / replicas, a.burstiness,
                                 None if a.max_concurrency is None else max(1, a.max_concurrency // replicas))
    return Run(run.input_lens[::replicas], run.output_lens[::replicas], arrivals, run.shared_prefix_len,
               run.num_prefixes, run.seed)


def predict_run(req: Request, compiled: CompiledPlan, run: Run) -> RunMetrics:
    """The benchmark `run` against the deployment `compiled` plans for `req` (one replica simulated, the load split
    evenly over the plan's replicas, throughputs summed)."""
    plan, mem = compiled.plan, compiled.memory
    dp = max(1, plan.data_parallel)
    replicas = max(1, plan.replicas) * dp  # engines: attention DP runs dp schedulers and KV caches per server
    one = _split(run, replicas)
    sm = perf.StepModel(req.model, req.hw.gpu, req.hw, plan.tensor_parallel, plan.pipeline_parallel, plan.dtype,
                        plan.quantization, plan.kv_cache_dtype, expert_parallel=plan.expert_parallel, dp=dp,
                        stream_interval=plan.stream_interval)
    spec = steady.speculation(plan.speculative, req.hw.gpu.name)
    server = simulate.Server(engines.for_backend(plan.backend), plan.max_num_seqs, plan.max_num_batched_tokens,
                             mem.kv_cache_blocks, mem.block_size, chunked_prefill=plan.enable_chunked_prefill,
                             prefix_caching=plan.enable_prefix_caching)
    pred = compiled.prediction
    batch = max(pred.concurrency, 1.0) if pred is not None else float(plan.max_num_seqs)
    slow, wait = (1.0, 0.0) if pred is None else steady.host_terms(
        sm, pred.output_throughput_tok_s / replicas, pred.request_throughput_rps / replicas, batch)
    per_step = spec.tokens_per_step if spec else 1.0
    outs = np.asarray(one.output_lens, dtype=np.int64)
    ins = np.asarray(one.input_lens, dtype=np.int64)
    steps = np.maximum(np.ceil(outs / per_step), 1).astype(np.int64)
    others = steady.other_ranks_prefill(sm, batch, float(ins.mean()) - one.shared_prefix_len, float(outs.mean()),
                                        plan.max_num_batched_tokens)
    res = simulate.run(predict.sim_step_time(sm, spec, slow, others, float(ins.mean())), ins, steps, one.arrivals,
                       server, shared_prefix_len=one.shared_prefix_len, num_prefixes=one.num_prefixes,
                       seed=one.seed, loop_delay_s=predict.loop_delay_s(sm, wait))
    around = predict.outside_s(sm, spec, slow, batch, float(ins.mean() + outs.mean() / 2), wait)  # API server, async
    ok = outs > 1
    tpot = (res.e2e_s - res.ttft_s)[ok] / (outs[ok] - 1) * 1e3
    duration = res.duration_s + around  # the last token reaches the client `around` after the engine emits it
    out_tps = float(outs.sum()) / duration * replicas
    total = float(ins.sum() + outs.sum()) / duration * replicas
    itl = res.itl_s * 1e3 / per_step if res.itl_s.size else np.zeros(1)
    return RunMetrics(
        output_throughput_tok_s=out_tps, total_throughput_tok_s=total,
        request_throughput_rps=res.completed / duration * replicas,
        ttft_ms_mean=(float(np.mean(res.ttft_s)) + around) * 1e3,
        ttft_ms_median=(res.percentile("ttft", 50) + around) * 1e3,
        ttft_ms_p99=(res.percentile("ttft", 99) + around) * 1e3,
        tpot_ms_mean=float(np.mean(tpot)) if tpot.size else 0.0,
        tpot_ms_median=float(np.median(tpot)) if tpot.size else 0.0,
        itl_ms_mean=float(np.mean(itl)), itl_ms_median=float(np.median(itl)),
        e2e_ms_mean=(float(np.mean(res.e2e_s)) + around) * 1e3,
        e2e_ms_median=(res.percentile("e2e", 50) + around) * 1e3,
        preemptions=res.preemptions)

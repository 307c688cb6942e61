"""benchmark.predict_run: a benchmark run predicted against a compiled plan, with the plan's own engine, memory and
step model (what benchmarks/fidelity.py calls for every published row)."""

import numpy as np
import pytest
from conftest import request_for

from planner import benchmark, search
from planner.simulate import Arrivals

PINS = ("model=llama3.1-8b", "hw=h100x8", "hw.gpus_per_node=1", "target=best-effort", "plan.tensor_parallel=1",
        "plan.max_model_len=2048", "workload.input_len=1000", "workload.output_len=500", "workload.range_ratio=0")


def compiled(*extra: str):
    req = request_for(*PINS, *extra)
    return req, search.compile_plan(req)


def run(n: int, rate=None, concurrency=None) -> benchmark.Run:
    return benchmark.Run(np.full(n, 1000), np.full(n, 500), Arrivals(request_rate=rate, max_concurrency=concurrency))


def test_offline_run_reports_tokens_over_the_whole_run():
    req, plan = compiled("backend=vllm")
    m = benchmark.predict_run(req, plan, run(400))
    assert m.total_throughput_tok_s == pytest.approx(m.output_throughput_tok_s * 1500 / 500)
    assert m.request_throughput_rps == pytest.approx(m.output_throughput_tok_s / 500)
    assert m.ttft_ms_mean > m.itl_ms_median > 0  # the queue of 400 prompts ahead


def test_a_light_open_loop_serves_its_rate():
    req, plan = compiled("backend=vllm")
    m = benchmark.predict_run(req, plan, run(300, rate=2.0))
    assert m.request_throughput_rps == pytest.approx(2.0, rel=0.2)
    assert m.preemptions == 0 and m.ttft_ms_median < 200


@pytest.mark.parametrize("backend", ["vllm", "trtllm", "sglang"])
def test_each_backend_is_predicted_with_its_own_engine(backend):
    """The same deployment under three engines: each plan carries its engine's block size, and TensorRT-LLM,
    reserving every request's whole length, never preempts."""
    req, plan = compiled(f"backend={backend}", "plan.max_num_seqs=512")
    m = benchmark.predict_run(req, plan, run(600))
    assert plan.memory.block_size == {"vllm": 16, "trtllm": 32, "sglang": 1}[backend]
    assert m.output_throughput_tok_s > 0
    if backend == "trtllm":
        assert m.preemptions == 0


def test_replicas_share_the_load():
    """Two replicas each get every other request at half the concurrency: twice one replica's throughput."""
    req, one = compiled("backend=vllm", "plan.replicas=1")
    req2, two = compiled("backend=vllm", "hw.gpus_per_node=2", "plan.replicas=2")
    a = benchmark.predict_run(req, one, run(200, concurrency=32))
    b = benchmark.predict_run(req2, two, run(400, concurrency=64))
    assert b.output_throughput_tok_s == pytest.approx(2 * a.output_throughput_tok_s, rel=1e-6)

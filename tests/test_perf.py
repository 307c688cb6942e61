"""The performance model's shape (roofline behaviour, Little's law) and the search's use of it (SLO verdicts)."""

import dataclasses

import pytest

from planner import perf, search, slo, steady
from planner.errors import NoFeasiblePlan
from planner.specs import Dtype, KvPrecision, Quantization

from conftest import request_for


def step_model(model="llama3.1-8b", hw="h100x1", tp=1, quant=Quantization.none, kv=KvPrecision.bf16):
    r = request_for(f"model={model}", f"hw={hw}")
    return perf.StepModel(r.model, r.hw.gpu, r.hw, tp, 1, Dtype.bf16, quant, kv)


def test_decode_at_batch_one_is_weight_streaming():
    # Llama-3.1-8B bf16 on an H100: ~15 GiB of weights over 3.35 TB/s x 0.904 (measured) ≈ 5.3 ms, plus
    # attention, the lm_head and the 0.5 ms step overhead; well under the compute time of one token.
    t = float(step_model().step_seconds(1, 1024, 0, 0))
    weights = 8.03e9 * 2 / (3350e9 * 0.904)
    assert weights < t < weights * 1.35


def test_fp8_weights_halve_memory_bound_decode():
    bf16 = float(step_model().step_seconds(1, 1024, 0, 0))
    fp8 = float(step_model(quant=Quantization.fp8).step_seconds(1, 1024, 0, 0))
    assert 0.45 < fp8 / bf16 < 0.75


def test_step_time_grows_with_batch_context_and_prefill():
    sm = step_model()
    assert sm.step_seconds(64, 64 * 1024, 0, 0) > sm.step_seconds(8, 8 * 1024, 0, 0)
    assert sm.step_seconds(8, 8 * 8192, 0, 0) > sm.step_seconds(8, 8 * 1024, 0, 0)
    assert sm.step_seconds(0, 0, 8192, 8192 * 4096) > 3 * sm.step_seconds(0, 0, 2048, 2048 * 1024)


def test_tensor_parallel_shortens_the_step():
    one = step_model("llama3-70b", "h100x8", tp=2).step_seconds(8, 8 * 1024, 0, 0)
    four = step_model("llama3-70b", "h100x8", tp=8).step_seconds(8, 8 * 1024, 0, 0)
    assert four < one


def test_h200_decodes_faster_than_h100_at_the_same_flops():
    assert step_model(hw="h200x1").step_seconds(1, 1024, 0, 0) < step_model().step_seconds(1, 1024, 0, 0)


@pytest.mark.parametrize("rate", [1.0, 4.0])
def test_open_loop_below_capacity_serves_the_offered_load(rate):
    s = steady.steady_state(step_model(), 512, 256, max_num_seqs=256, max_num_batched_tokens=8192,
                          kv_capacity_seqs=500, rate=rate)
    assert not s.saturated and s.output_tok_s == pytest.approx(rate * 256, rel=1e-6)
    assert s.batch == pytest.approx(rate * 256 * s.step_s, rel=0.2)  # Little's law: in flight = rate x time


def test_open_loop_above_capacity_is_saturated():
    s = steady.steady_state(step_model(), 512, 256, max_num_seqs=8, max_num_batched_tokens=8192,
                          kv_capacity_seqs=500, rate=500.0)
    assert s.saturated and s.ttft_s == float("inf")


def test_prediction_block_has_design_keys():
    c = search.compile_plan(request_for("model=llama3-8b", "hw=h100x1", "target=latency"))
    from planner import document

    p = document.build(request_for("model=llama3-8b", "hw=h100x1", "target=latency"), c)["prediction"]
    for key in ("ttft_ms", "tpot_ms", "e2e_latency_ms", "output_throughput_tok_s", "output_throughput_tok_s_per_gpu",
                "request_throughput_rps", "concurrency", "cost_usd_per_mtok", "meets_target", "binding_constraint",
                "offered"):
        assert key in p
    assert p["meets_target"] and p["tpot_ms"]["p90"] <= 25 and p["ttft_ms"]["p90"] <= 300
    assert p["tpot_ms"]["p50"] <= p["tpot_ms"]["p90"] <= p["tpot_ms"]["p99"]


def test_impossible_slo_exits_with_the_binding_constraint_and_the_closest_plan():
    with pytest.raises(NoFeasiblePlan, match=r"Binding constraint: tpot_ms") as info:
        search.compile_plan(request_for("model=llama3-8b", "hw=l4x1", "target.tpot_ms=1"))
    assert info.value.closest is not None and not info.value.closest.prediction.meets_target


def test_model_that_does_not_fit_names_memory_as_binding():
    with pytest.raises(NoFeasiblePlan, match=r"Binding constraint: memory"):
        search.compile_plan(request_for("model=llama3-70b", "hw=l4x1", "target.tpot_ms=1"))


def test_throughput_objective_prefers_throughput_per_gpu_within_slos():
    c = search.compile_plan(request_for("model=llama3-70b", "hw=h100x4", "target=throughput"))
    assert c.prediction.meets_target
    for alt in c.alternatives:
        if alt.prediction and alt.prediction.meets_target and "format" not in alt.rejected_because:
            assert alt.prediction.output_tok_s_per_gpu <= c.prediction.output_throughput_tok_s_per_gpu * 1.5


def test_explicit_load_is_used_per_replica():
    req = request_for("model=llama3-8b", "hw=h100x4", "workload.request_rate=8")
    load = slo.offered(req, replicas=4, max_num_seqs=256)
    assert (load.request_rate_rps, load.concurrency, load.source) == (2.0, None, "workload.request_rate")


def test_speculation_emits_the_expected_tokens_per_step():
    # Leviathan et al. 2023: E = (1 - a^(k+1)) / (1 - a); a = 0.7, k = 3 → 2.533 tokens per verification step.
    s = steady.Speculation(k=3, acceptance=0.7, draft_layers=1)
    assert s.tokens_per_step == pytest.approx((1 - 0.7**4) / 0.3)


def test_speculative_decoding_cuts_low_batch_tpot():
    sm = step_model()
    plain = steady.steady_state(sm, 512, 256, max_num_seqs=64, max_num_batched_tokens=2048, kv_capacity_seqs=500,
                              concurrency=4)
    spec = steady.steady_state(sm, 512, 256, max_num_seqs=64, max_num_batched_tokens=2048, kv_capacity_seqs=500,
                             concurrency=4, spec=steady.Speculation(k=3, acceptance=0.7, draft_layers=1))
    assert 1.5 < plain.tpot_s / spec.tpot_s < 2.6


def test_batch_ladder_is_scored_in_one_call():
    import numpy as np

    sm = step_model()
    ladder = steady.steady_state(sm, 512, 256, max_num_seqs=np.array([8.0, 64.0, 256.0]), max_num_batched_tokens=8192,
                               kv_capacity_seqs=1000.0)
    one = steady.steady_state(sm, 512, 256, max_num_seqs=64, max_num_batched_tokens=8192, kv_capacity_seqs=1000.0)
    assert ladder.output_tok_s[1] == pytest.approx(one.output_tok_s)
    assert list(ladder.output_tok_s) == sorted(ladder.output_tok_s)  # bigger batches, more throughput


def _layout(model, hw, tp, pp, ep=False):
    r = request_for(f"model={model}", f"hw={hw}")
    return perf.StepModel(r.model, r.hw.gpu, r.hw, tp, pp, Dtype.bf16, Quantization.none, KvPrecision.bf16,
                          expert_parallel=ep)


def test_pipeline_keeps_pp_micro_batches_in_flight():
    """vLLM runs pp batches at once: a compute-bound prefill round on 2 stages takes about half the time of the
    same work on one stage of the same TP (each stage holds half the layers and works on half the tokens at a time);
    a small decode batch still reads every weight once per round, so it gains nothing."""
    one, two = _layout("llama3.1-70b", "2xh100x8", 8, 1), _layout("llama3.1-70b", "2xh100x8", 8, 2)
    prefill = [float(m.step_seconds(0, 0, 16384, 16384 * 4096)) for m in (one, two)]
    decode = [float(m.step_seconds(2, 2048, 0, 0)) for m in (one, two)]
    assert 0.45 < prefill[1] / prefill[0] < 0.65
    assert 0.9 < decode[1] / decode[0] < 1.15


def test_expert_parallel_changes_nothing_for_a_dense_model():
    dense = _layout("llama3.1-70b", "h200x8", 8, 1, ep=True)
    assert float(dense.step_seconds(8, 8192, 0, 0)) == float(
        _layout("llama3.1-70b", "h200x8", 8, 1).step_seconds(8, 8192, 0, 0))  # no experts: EP changes nothing


@pytest.mark.parametrize("tok_s,rps,expected", [
    pytest.param(0.0, 0.0, 1.0, id="idle"),
    pytest.param(3000.0, 0.0, 1 / (1 - 0.25), id="half-a-core-of-front-end-takes-a-quarter-of-the-engine"),
    pytest.param(6000.0, 0.0, 2.0, id="a-core-of-front-end-takes-half-the-engine"),
    pytest.param(1e6, 0.0, 4.0, id="floored-at-a-quarter"),
])
def test_the_front_end_takes_its_share_of_the_cpu_engines_core(tok_s, rps, expected):
    """Nothing binds vLLM's front end off the CPU worker's core, so the kernel spreads it over both cores of a
    2-core host (TP 1): the worker's core carries half of the front end's CPU seconds."""
    from planner.perf import Calibration

    req = request_for("model=tiny-llama", "hw=cpu", "hw.gpu.num_cores=2")
    sm = perf.StepModel(req.model, req.hw.gpu, req.hw, 1, 1, Dtype.bf16, Quantization.none, KvPrecision.bf16)
    cal = dataclasses.replace(sm._consts["cal"], host_cpu_s_per_token=1 / 6000, host_cpu_s_per_request=0.0,
                              host_cpu_s_per_chunk=0.0, host_cpu_s_per_step=0.0)
    sm._consts["cal"] = cal  # one calibrated cost: 6000 tokens/s keep one core busy
    assert isinstance(cal, Calibration)
    assert steady.host_slowdown(sm, tok_s, rps) == pytest.approx(expected)


def test_a_stream_interval_cuts_the_front_ends_work_per_chunk_not_per_token():
    """The first token's chunk, then one per stream_interval tokens (vLLM output_processor.py): 100 requests/s of
    100 tokens at interval 1 are 10,000 chunks/s; at 16, 100 + 9,900 / 16; the per-token work stays; and the
    first token waits longer behind a busier front end."""
    req = request_for("model=tiny-llama", "hw=cpu", "hw.gpu.num_cores=2")

    def model(interval):
        sm = perf.StepModel(req.model, req.hw.gpu, req.hw, 1, 1, Dtype.bf16, Quantization.none, KvPrecision.bf16,
                            stream_interval=interval)
        sm._consts["cal"] = dataclasses.replace(sm._consts["cal"], host_cpu_s_per_token=10e-6,
                                                host_cpu_s_per_chunk=50e-6, host_cpu_s_per_request=0.0,
                                                host_cpu_s_per_step=0.0)
        return sm

    assert float(steady.frontend_cores(model(1), 10000.0, 100.0)) == pytest.approx(0.1 + 0.5)
    assert float(steady.frontend_cores(model(16), 10000.0, 100.0)) == pytest.approx(0.1 + (100 + 9900 / 16) * 50e-6)
    slow, fast = (float(steady.frontend_wait(model(i), 10000.0, 100.0, 100.0)) for i in (1, 16))
    assert slow > 2 * fast > 0.0


def test_gpu_hosts_have_no_front_end_slowdown():
    req = request_for("model=llama3-8b", "hw=h100x1")
    sm = perf.StepModel(req.model, req.hw.gpu, req.hw, 1, 1, Dtype.bf16, Quantization.none, KvPrecision.bf16)
    assert steady.host_slowdown(sm, 1e5, 100.0) == 1.0

"""The first search: smallest layout that fits, precision the GPU supports, pins respected, clear failures."""

import pytest

from planner import search
from planner.errors import InputError, NoFeasiblePlan
from planner.specs import Dtype, KvPrecision, Quantization

from conftest import plan_or_closest, request_for


def plan_for(*overrides):
    return plan_or_closest(*overrides)


def test_llama3_70b_bf16_on_h100x4_needs_tensor_parallel():
    p = plan_for("model=llama3-70b", "hw=h100x4", "precision=bf16").plan
    assert p.tensor_parallel >= 2 and p.quantization is Quantization.none and p.dtype is Dtype.bf16


def test_small_model_uses_one_gpu_per_replica_and_replicates():
    p = plan_for("model=llama3-8b", "hw=h100x4").plan
    assert (p.tensor_parallel, p.replicas) == (1, 4)


def test_405b_bf16_on_two_nodes_is_tp8_pp2():
    p = plan_for("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16").plan
    assert (p.tensor_parallel, p.pipeline_parallel, p.nodes) == (8, 2, 2)


def test_llama3_70b_bf16_on_one_h100_is_infeasible_with_the_arithmetic():
    with pytest.raises(NoFeasiblePlan, match=r"131.4 GiB of weights.*72.8 GiB usable.*Fix:.*precision=int4-awq"):
        plan_for("model=llama3-70b", "hw=h100x1", "precision=bf16")


def test_volta_gets_fp16_never_bf16_or_fp8():
    c = plan_for("model=llama3-70b", "hw=v100x8")
    assert c.plan.dtype is Dtype.fp16 and c.plan.quantization not in (Quantization.fp8,)
    assert c.plan.kv_cache_dtype is KvPrecision.fp16


def test_bf16_asked_on_volta_is_planned_fp16_with_a_note():
    c = plan_for("model=llama3-8b", "hw=v100x8", "precision=bf16")
    assert c.plan.dtype is Dtype.fp16 and any("bf16" in n.lower() for n in c.notes)


def test_ampere_never_gets_fp8_weights_when_auto():
    for model in ("llama3-70b", "qwen2.5-72b", "mixtral-8x7b"):
        assert plan_for(f"model={model}", "hw=a100x4").plan.quantization is not Quantization.fp8


@pytest.mark.parametrize("overrides,match", [
    pytest.param(["hw=a100x4", "precision=fp8"], r"precision.fp8-as-asked.* ask.* for quantization in \['fp8'\], but "
                 r"precision.fp8-needs-sm89 rules it out: FP8 weights .* need compute capability 8.9.*Fix:",
                 id="fp8-on-ampere"),
    pytest.param(["hw=a100x4", "precision=fp8-kv"], r"kv.as-asked asks for kv_cache_dtype in \['fp8'\], but "
                 r"precision.fp8-needs-sm89 rules it out.*Fix:", id="fp8-kv-on-ampere"),
    pytest.param(["hw=v100x8", "precision=int4-awq"], r"precision.int4-needs-sm75 rules it out: AWQ and INT8",
                 id="awq-on-volta"),
])
def test_unsupported_precision_is_an_input_error(overrides, match):
    with pytest.raises(InputError, match=match):
        plan_for(*overrides)


def test_fp8_on_hopper_halves_the_weights():
    bf16 = plan_for("model=llama3-70b", "hw=h100x4", "plan.tensor_parallel=4").memory
    fp8 = plan_for("model=llama3-70b", "hw=h100x4", "plan.tensor_parallel=4", "precision=fp8").memory
    assert fp8.weights_gib == pytest.approx(bf16.weights_gib / 2, rel=0.05)
    assert fp8.kv_cache_tokens > 2 * bf16.kv_cache_tokens  # fp8 KV too, and more room


def test_pins_are_respected():
    c = plan_for("model=llama3-70b", "hw=h100x8", "plan.tensor_parallel=8", "plan.max_num_seqs=64",
                 "plan.gpu_memory_utilization=0.85", "plan.enable_prefix_caching=false")
    p = c.plan
    assert (p.tensor_parallel, p.max_num_seqs, p.gpu_memory_utilization, p.enable_prefix_caching) == (8, 64, 0.85,
                                                                                                      False)
    assert [d.by for d in c.decisions if d.field == "tensor_parallel"][0] == "pin"


def test_a_pinned_layout_the_engine_can_start_gets_a_plan_with_a_small_kv_warning():
    # vLLM runs Qwen2.5-72B bf16 at TP 2 on 2 x H100 80GB at 0.95 (tests/data/reference/vllm_memory_logs.yaml,
    # llmd-qwen25-72b-tp2-8k); at the default 0.92 the planner's KV budget is empty, so it raises the fraction.
    c = search.compile_plan(request_for("model=qwen2.5-72b", "hw=h100x2", "plan.tensor_parallel=2", "precision=bf16",
                                        "plan.max_model_len=8192"))
    assert c.plan.tensor_parallel == 2 and c.plan.quantization is Quantization.none
    assert 0.92 < c.plan.gpu_memory_utilization <= 0.95
    assert c.memory.max_concurrency_at_max_len >= 1
    d = next(d for d in c.decisions if d.field == "gpu_memory_utilization")
    assert d.by == "search" and "pinned layout" in d.why
    assert any("plan.tensor_parallel=2" in n and "small KV cache" in n for n in c.notes)


def test_a_pinned_layout_that_cannot_start_is_still_exit_3():
    with pytest.raises(NoFeasiblePlan, match=r"does not fit"):
        search.compile_plan(request_for("model=llama3-70b", "hw=h100x1", "plan.tensor_parallel=1", "precision=bf16"))


def test_max_num_seqs_is_bounded_by_kv_capacity():
    c = plan_for("model=llama3-70b", "hw=h100x1")  # fits only as int4, little KV left
    assert c.plan.max_num_seqs <= c.memory.kv_cache_tokens // (512 + 256)


def test_every_plan_field_is_explained():
    c = plan_for("model=llama3-70b", "hw=h100x4")
    explained = {d.field for d in c.decisions}
    derived = {"model_path", "nodes", "gpus_per_replica", "expert_parallel", "data_parallel", "speculative",
               "kv_cache_space_gib"}
    assert {f for f in c.plan.__dataclass_fields__} - derived <= explained
    assert all(d.why for d in c.decisions)


def test_deepseek_v3_keeps_its_fp8_checkpoint():
    c = plan_for("model=deepseek-v3", "hw=h200x8")
    assert c.plan.quantization is Quantization.fp8 and c.plan.gpus_per_replica == 8


def test_cpu_plan_sizes_the_kv_space_in_whole_gib():
    c = plan_for("model=llama3.2-1b", "hw=cpu", "target=best-effort")
    assert c.plan.gpu_memory_utilization is None and c.plan.kv_cache_space_gib >= 1
    assert c.memory.kv_cache_gib == c.plan.kv_cache_space_gib


def test_qps_target_takes_the_fewest_replicas_that_sustain_it():
    few = plan_for("model=llama3-8b", "hw=h100x8", "target=throughput", "target.min_request_rate=20")
    more = plan_for("model=llama3-8b", "hw=h100x8", "target=throughput", "target.min_request_rate=150")
    assert few.plan.replicas < more.plan.replicas <= 8
    for c, rate in ((few, 20), (more, 150)):
        assert c.prediction.meets_target and c.prediction.request_throughput_rps >= rate * 0.999
        assert "target.min_request_rate" in next(d.why for d in c.decisions if d.field == "replicas")


def test_pareto_front_is_non_dominated_and_ordered():
    front = plan_for("model=llama3-70b", "hw=h100x4").pareto_front
    assert len(front) >= 3
    tpot = [p.tpot_ms for p in front]
    tok = [p.output_tok_s_per_gpu for p in front]
    assert tpot == sorted(tpot) and tok == sorted(tok) and len(set(tok)) == len(tok)


def test_long_prompts_take_a_larger_chunk_when_no_rule_sets_one():
    # not streamed: prefill.small-chunks-for-streaming-latency stays silent
    c = plan_for("model=llama3.1-8b", "hw=h100x1", "target=latency", "workload.input_len=20000",
                 "workload.output_len=200", "target.ttft_ms=null", "target.min_concurrency=4", "workload.stream=false")
    d = next(d for d in c.decisions if d.field == "max_num_batched_tokens")
    assert c.plan.max_num_batched_tokens > 8192 and d.by == "search" and "the search took" in d.why
    # the same request with short prompts keeps the engine's default
    short = plan_for("model=llama3.1-8b", "hw=h100x1", "target=latency", "target.min_concurrency=4",
                     "workload.stream=false")
    assert short.plan.max_num_batched_tokens == 8192


@pytest.mark.parametrize("overrides,longest,expected", [
    pytest.param(("workload=chat",), (768, 384), 1280, id="chat-768-in-384-out"),
    # 1024 x 1.2 = 1228.8: the load test samples up to ceil = 1229 (int() said 1228)
    pytest.param(("workload=chat", "workload.input_len=1000", "workload.output_len=1024", "workload.range_ratio=0.2"),
                 (1200, 1229), 2560, id="fractional-bound-rounds-up-as-sampled"),
    pytest.param(("workload=chat", "workload.range_ratio=0"), (512, 256), 768, id="fixed-lengths"),
])
def test_max_model_len_is_the_longest_sampled_request_rounded_and_says_so(overrides, longest, expected):
    from planner.simulate import lengths

    req = request_for("model=llama3-8b", "hw=h100x1", *overrides)
    wl = req.workload
    sampled = (lengths(wl.input_len, wl.range_ratio, 20000, seed=3).max(),
               lengths(wl.output_len, wl.range_ratio, 20000, seed=4).max())
    assert (wl.max_input_len, wl.max_output_len) == sampled == longest
    value, why = search.choose_max_model_len(req)
    assert value == expected
    assert f"{longest[0]:,} in + {longest[1]:,} out = {sum(longest):,} tokens" in why
    assert f"rounded up to a multiple of 256: {expected:,}" in why and "workload.max_model_len" in why


@pytest.mark.parametrize("overrides", [
    pytest.param(("model=llama3-70b", "hw=h100x4"), id="70b-h100x4"),
    pytest.param(("model=llama3-70b", "hw=h100x8", "plan.tensor_parallel=8"), id="70b-tp8-pinned"),
    pytest.param(("model=mixtral-8x7b", "hw=h100x2"), id="moe"),
])
def test_analytic_ttft_is_more_than_a_decode_step(overrides):
    """A first token waits for the prompt's prefill, so the Pareto front's and the alternatives' analytic TTFT is
    above their TPOT (issue 22, item 9: it equalled TPOT, the 70B 'TTFT 7.5 ms')."""
    c = plan_for(*overrides)
    briefs = list(c.pareto_front) + [a.prediction for a in c.alternatives if a.prediction is not None]
    assert len(briefs) >= 3
    assert all(b.ttft_ms > b.tpot_ms for b in briefs), [(b.ttft_ms, b.tpot_ms) for b in briefs]

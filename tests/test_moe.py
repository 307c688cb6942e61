"""MoE layouts end to end: the statistics of expert load, the memory and step model of pure TP, TP + EP and attention
DP + EP, the candidates the search considers, the decision that explains the chosen layout with its numbers, and the
engines' artifacts for a data-parallel plan."""

import dataclasses
import math

import pytest
import yaml

from backends import get, unsupported
from planner import candidates, memory, moe, perf, predict, rules, search
from planner.errors import InputError
from planner.specs import BackendName, Dtype, KvPrecision, Quantization

from conftest import compiled_or_closest, request_for


@pytest.mark.parametrize("n,expected", [
    pytest.param(1, 0.0, id="one-gpu"),
    pytest.param(2, 1 / math.sqrt(math.pi), id="two: 1/sqrt(pi)"),
    pytest.param(4, 1.0294, id="four"),
    pytest.param(8, 1.4236, id="eight"),
])
def test_expected_max_of_normals_matches_the_order_statistics(n, expected):
    assert moe.expected_max_normal(n) == pytest.approx(expected, abs=2e-4)


def test_expert_parallel_load_imbalance_shrinks_with_tokens_and_is_absent_when_sliced():
    z = moe.expected_max_normal(8)
    small, large = (float(moe.imbalance(t, 8, 128, 8, z, True)) for t in (16, 4096))
    assert small > large > 1.0
    # hypergeometric variance of one token's 8 picks over 16 of 128 experts, summed over 4096 tokens
    var = 4096 * 8 * (1 / 8) * (7 / 8) * (120 / 127)
    assert large == pytest.approx(1 + z * math.sqrt(var) / (4096 * 8 / 8))
    assert float(moe.imbalance(4096, 8, 128, 8, z, False)) == 1.0


@pytest.mark.parametrize("experts,tp,dp,ep,expected", [
    pytest.param(128, 8, 1, False, 16.0, id="tp8-sliced"),
    pytest.param(128, 1, 8, True, 16, id="dp8-ep8"),
    pytest.param(8, 2, 3, True, 2, id="uneven-ep-most-loaded-gpu"),
    pytest.param(8, 4, 1, False, 2.0, id="mixtral-tp4"),
])
def test_routed_experts_per_gpu(experts, tp, dp, ep, expected):
    assert moe.routed_experts_per_gpu(experts, tp, dp, ep) == expected


@pytest.mark.parametrize("ranks,mean,chunk,expected", [
    pytest.param(1, 64.0, 1024.0, 64.0, id="one-rank-is-the-mean"),
    pytest.param(8, 0.0, 1024.0, 0.0, id="no-prefill"),
    pytest.param(8, 1024.0, 1024.0, 1024.0, id="every-rank-prefills"),
    pytest.param(8, 128.0, 1024.0, 1024 * (1 - (7 / 8) ** 8), id="eight-ranks"),
])
def test_the_busiest_attention_dp_rank_carries_a_chunk_when_any_does(ranks, mean, chunk, expected):
    assert float(moe.busiest_rank_prefill(ranks, mean, chunk)) == pytest.approx(expected)


def _mem(model, hw, tp, dp, ep, quant=Quantization.fp8, kv=KvPrecision.fp8):
    r = request_for(f"model={model}", f"hw={hw}")
    return memory.breakdown(r.model, r.hw.gpu, tp=tp, pp=1, dtype=Dtype.bf16, quant=quant, kv_dtype=kv,
                            max_model_len=2048, max_num_seqs=256, max_num_batched_tokens=8192,
                            gpu_memory_utilization=0.9, dp=dp, ep=ep)


def test_attention_dp_replicates_attention_and_splits_experts():
    """Qwen3-235B (4 KV heads) on 8 x H200: TP 8 replicates each KV head on two GPUs, DP 8 keeps four heads per GPU for
    its own requests, so the server holds about twice the tokens; the attention weights are copied on every rank."""
    tp8, dp8 = _mem("qwen3-235b-a22b", "h200x8", 8, 1, False), _mem("qwen3-235b-a22b", "h200x8", 1, 8, True)
    m = request_for("model=qwen3-235b-a22b").model
    attn = memory.param_counts(m).attn_per_layer * m.num_hidden_layers / memory.GIB  # fp8: one byte per weight
    vocab = 2 * m.vocab_size * m.hidden_size * 2 / memory.GIB  # embedding and lm_head stay bf16
    assert dp8.weights_gib - tp8.weights_gib == pytest.approx((attn + vocab) * 7 / 8, rel=0.05)
    assert dp8.kv_bytes_per_token == 4 * tp8.kv_bytes_per_token
    per_gpu_budget = dp8.kv_cache_gib / tp8.kv_cache_gib
    assert 8 * dp8.kv_cache_tokens / tp8.kv_cache_tokens == pytest.approx(2 * per_gpu_budget, rel=0.02)


def test_attention_dp_gathers_every_ranks_tokens_for_the_moe_activations():
    one, eight = (memory.forward_peak_bytes(request_for("model=qwen3-235b-a22b").model, 1, Dtype.bf16, 2048,
                                            dp=dp, ep=True) for dp in (1, 8))
    assert eight == pytest.approx(8 * one)


def _sm(model, hw, tp, dp=1, ep=False, quant=Quantization.fp8, kv=KvPrecision.fp8):
    r = request_for(f"model={model}", f"hw={hw}")
    return perf.StepModel(r.model, r.hw.gpu, r.hw, tp, 1, Dtype.bf16, quant, kv, expert_parallel=ep, dp=dp)


def test_tp_attention_plus_ep_keeps_the_all_reduce_and_pays_the_busiest_gpu():
    """At data_parallel 1 the tokens are already on every rank: EP computes whole experts and all-reduces, like TP
    (vLLM use_all2all is off at DP 1); the busiest GPU's extra pairs make it a little slower at small batches."""
    tp, ep = _sm("qwen3-235b-a22b", "h200x8", 8), _sm("qwen3-235b-a22b", "h200x8", 8, ep=True)
    t = [float(m.step_seconds(64, 64 * 1024, 0, 0)) for m in (tp, ep)]
    assert 1.0 < t[1] / t[0] < 1.15


def test_attention_dp_moves_gathered_tokens_once_instead_of_two_all_reduces():
    sm = _sm("qwen3-235b-a22b", "h200x8", 1, dp=8, ep=True)
    k, cal = sm._consts, sm._consts["cal"]

    def allreduce(nbytes, group):
        return cal.allreduce_seconds(nbytes, group, k["link"])

    got = float(moe.dispatch_combine_seconds(k, 64.0, allreduce))
    gathered = 64 * 8 * 4096 * 2  # every rank's 64 tokens, bf16 hidden states
    assert got == pytest.approx(float(allreduce(gathered, 8) + allreduce(0.0, 8)))
    assert float(moe.dispatch_combine_seconds(_sm("qwen3-235b-a22b", "h200x8", 8)._consts, 64.0, allreduce)) == 0.0


def test_attention_dp_serves_more_tokens_per_step_than_tp_at_the_same_batch():
    """Same 512 sequences in flight on 8 H200s: DP 8 x 64 avoids the replicated KV heads and the attention
    all-reduces of TP 8; the attention weights it reads on every rank cost less at this batch."""
    tp = float(_sm("qwen3-235b-a22b", "h200x8", 8).step_seconds(512, 512 * 1500, 0, 0))
    dp = float(_sm("qwen3-235b-a22b", "h200x8", 1, dp=8, ep=True).step_seconds(64, 64 * 1500, 0, 0))
    assert dp < tp


def test_mla_decode_is_compute_bound_with_all_heads_on_one_gpu():
    """DeepSeek-V3 decode attention reads one latent per token for all 128 heads: at TP 1 its FLOPs (FlashMLA's
    660 TFLOP/s) take longer than its bytes; at TP 8 (16 heads per GPU) the bytes do."""
    def attention(tp):
        sm = _sm("deepseek-v3", "h200x8", tp, kv=KvPrecision.bf16)
        k, ctx = sm._consts, 64 * 4096
        return ctx * k["kv_layer"] / (k["bw"] * k["cal"].attention_efficiency(64, 4096)), \
            ctx * k["mla_decode_flops_per_ctx"] / k["mla_peak"]
    reads, flops = attention(1)
    assert flops > reads
    reads, flops = attention(8)
    assert flops < reads


def test_a_busy_rank_slows_every_rank_of_attention_dp():
    sm = _sm("qwen3-235b-a22b", "h200x8", 1, dp=8, ep=True)
    calm = float(sm.step_seconds(64, 64 * 1024, 16, 16 * 512))
    busy = float(sm.step_seconds(64, 64 * 1024, 16, 16 * 512, 1024, 1024 * 512))
    assert busy > calm * 1.05


def _layouts(*overrides):
    req = request_for(*overrides)
    return list(candidates.parallel_layouts(req, rules.constraints_for(req)))


def test_moe_models_get_every_engine_layout_and_dense_models_only_tp():
    moe_layouts = _layouts("model=qwen3-235b-a22b", "hw=h200x8")
    assert (8, 1, 1, False) in moe_layouts and (8, 1, 1, True) in moe_layouts  # pure TP, TP + EP
    assert {(1, 1, 8, True), (2, 1, 4, True), (1, 1, 4, True)} <= set(moe_layouts)  # attention DP + EP
    assert all(dp == 1 and not ep for _, _, dp, ep in _layouts("model=llama3-70b", "hw=h100x8"))


@pytest.mark.parametrize("pins,expected", [
    pytest.param(("plan.data_parallel=8",), {(1, 1, 8, True)}, id="dp-pinned"),
    pytest.param(("plan.expert_parallel=false",), {(t, 1, 1, False) for t in (1, 2, 4, 8)}, id="no-ep-no-dp"),
    pytest.param(("plan.tensor_parallel=2", "plan.data_parallel=4", "plan.expert_parallel=true"), {(2, 1, 4, True)},
                 id="all-pinned"),
])
def test_pins_narrow_the_moe_layouts(pins, expected):
    assert set(_layouts("model=qwen3-235b-a22b", "hw=h200x8", *pins)) == expected


def test_data_parallel_on_a_dense_model_is_a_clear_input_error():
    with pytest.raises(InputError, match=r"plan.data_parallel=2: llama3-70b is a dense model"):
        search.compile_plan(request_for("model=llama3-70b", "hw=h100x8", "plan.data_parallel=2"))


@pytest.fixture(scope="module")
def qwen_throughput():
    req = request_for("model=qwen3-235b-a22b", "hw=h200x8", "target=throughput")
    return req, search.compile_plan(req)


def test_qwen3_235b_throughput_plan_takes_attention_dp_and_says_why_with_numbers(qwen_throughput):
    req, c = qwen_throughput
    p = c.plan
    assert p.data_parallel > 1 and p.expert_parallel
    assert p.gpus_per_replica == p.tensor_parallel * p.pipeline_parallel * p.data_parallel
    assert p.replicas * p.gpus_per_replica <= req.hw.total_gpus
    why = {d.field: d for d in c.decisions}
    for field in ("data_parallel", "expert_parallel"):
        assert why[field].by == "search"
        assert "tok/s per GPU of the best pure TP" in why[field].why and "TP + EP" in why[field].why
    assert f"x DP {p.data_parallel}" in why["gpus_per_replica"].why
    assert c.prediction.load.concurrency == p.max_num_seqs * p.data_parallel  # every DP rank's batch offered


def test_prediction_counts_every_gpu_of_a_data_parallel_server(qwen_throughput):
    req, c = qwen_throughput
    pred = c.prediction
    gpus = c.plan.gpus_per_replica * c.plan.replicas
    assert pred.output_throughput_tok_s_per_gpu == pytest.approx(pred.output_throughput_tok_s / gpus, rel=1e-3)


def test_score_grid_splits_the_load_over_dp_engines():
    req = request_for("model=qwen3-235b-a22b", "hw=h200x8", "workload.request_rate=20")
    one = _sm("qwen3-235b-a22b", "h200x8", 8)
    dp = _sm("qwen3-235b-a22b", "h200x8", 1, dp=8, ep=True)
    g = predict.score_grid(req, perf.StepGrid([one, dp], [0, 1]), replicas=[1, 1], max_num_seqs=[256, 256],
                           max_num_batched_tokens=[8192, 8192], kv_capacity_seqs=[500, 500], prefix_caching=False,
                           explicit=True)
    assert list(g.gpus) == [8, 8]
    assert g.request_rps == pytest.approx([20.0, 20.0], rel=1e-3)  # both keep up with 20 req/s in all


def _dp_plan(backend, model="qwen3-235b-a22b"):
    req = request_for(f"model={model}", "hw=h200x8", "target=throughput", "plan.tensor_parallel=1",
                      "plan.data_parallel=8", "plan.expert_parallel=true", f"backend={backend}")
    return req, compiled_or_closest(req)


def test_vllm_renders_attention_dp_and_expert_parallel():
    req, c = _dp_plan("vllm")
    argv = get(BackendName.vllm).render(c.plan, "qwen").argv
    assert argv[argv.index("--data-parallel-size") + 1] == "8"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "1" and "--enable-expert-parallel" in argv


def test_sglang_renders_dp_attention_with_server_wide_limits():
    req, c = _dp_plan("sglang")
    p = c.plan
    argv = get(BackendName.sglang).render(p, "qwen").argv

    def flag(name):
        return argv[argv.index(name) + 1]
    assert (flag("--tp-size"), flag("--dp-size"), flag("--ep-size")) == ("8", "8", "8")
    assert "--enable-dp-attention" in argv
    assert flag("--max-running-requests") == str(8 * p.max_num_seqs)  # divided per DP rank by SGLang
    assert flag("--chunked-prefill-size") == str(8 * p.max_num_batched_tokens)


def test_trtllm_renders_enable_attention_dp_in_its_options_file():
    req, c = _dp_plan("trtllm")
    art = get(BackendName.trtllm).render(c.plan, "qwen")
    argv = art.argv
    assert argv[argv.index("--tp_size") + 1] == "8" and argv[argv.index("--ep_size") + 1] == "8"
    assert yaml.safe_load(art.files["extra_llm_api_options.yaml"])["enable_attention_dp"] is True


def test_kubernetes_pods_ask_for_every_gpu_of_the_data_parallel_server():
    req, c = _dp_plan("vllm")
    art = get(BackendName.vllm).render(c.plan, "qwen")
    pod = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
    assert pod["resources"]["limits"]["nvidia.com/gpu"] == 8


@pytest.mark.parametrize("backend,model,says", [
    pytest.param(BackendName.tgi, "qwen3-235b-a22b", "data_parallel=8", id="tgi-has-none"),
    pytest.param(BackendName.sglang, "mixtral-8x7b", "MixtralForCausalLM", id="sglang-mixtral-has-no-dp-attention"),
])
def test_engines_without_attention_dp_refuse_it_with_a_reason(backend, model, says):
    req = request_for(f"model={model}", "hw=h200x8")
    plan = dataclasses.replace(compiled_or_closest(req).plan, backend=backend, tensor_parallel=1, data_parallel=8,
                               expert_parallel=True, gpus_per_replica=8)
    reason = unsupported(backend, plan, req.hw.gpu, req.model)
    assert reason and says in reason and "source:" in reason


def _catalog_moe_models() -> list[str]:
    from planner import compose

    with compose.Composer() as c:
        names = [n for n in c.options("model") if n != "hf"]
    return [n for n in names if request_for(f"model={n}").model.is_moe]


@pytest.mark.parametrize("name", _catalog_moe_models())
def test_every_catalog_moe_model_is_searched_in_every_layout_and_each_is_priced(name):
    """Written from the ModelSpec fields alone, so catalog entries added later get the same search and model."""
    req = request_for(f"model={name}", "hw=h200x8")
    lays = list(candidates.parallel_layouts(req, rules.constraints_for(req)))
    assert {"tp" if dp == 1 and not ep else "ep" if dp == 1 else "dp" for _, _, dp, ep in lays} == {"tp", "ep", "dp"}
    for tp, pp, dp, ep in lays:
        sm = perf.StepModel(req.model, req.hw.gpu, req.hw, tp, pp, Dtype.bf16, Quantization.fp8, KvPrecision.fp8,
                            expert_parallel=ep, dp=dp)
        t = float(sm.step_seconds(64, 64 * 2048, 512, 512 * 256))
        mem = memory.breakdown(req.model, req.hw.gpu, tp=tp, pp=pp, dtype=Dtype.bf16, quant=Quantization.fp8,
                               kv_dtype=KvPrecision.fp8, max_model_len=4096, max_num_seqs=256,
                               max_num_batched_tokens=2048, gpu_memory_utilization=0.9, dp=dp, ep=ep)
        assert 0 < t < 10 and mem.weights_gib > 0, (tp, pp, dp, ep)


def test_sliced_experts_run_at_their_narrow_shapes_measured_efficiency():
    """Measured on an H100 (conf/calibration/h100.yaml grouped_gemm): a TP 8 slice of a Qwen3-235B expert (down
    projection K = 192) reaches about half the efficiency of the whole expert at 256 rows per expert, so the same
    prefill costs the sliced layout more expert time than EP."""
    from planner.calibration import calibration

    cal = calibration("h100-sxm")
    assert float(cal.grouped_efficiency(256, 0, 192)) < 0.6 * float(cal.grouped_efficiency(256, 0, 1536))
    tp, ep = (_sm("qwen3-235b-a22b", "h100x8", 8, ep=e, quant=Quantization.none, kv=KvPrecision.bf16)
              for e in (False, True))

    def experts(sm):
        k = sm._consts
        hbm = k["bw"] * k["cal"].hbm_efficiency
        return float(moe.expert_seconds(k, 4096.0, lambda m, n: k["cal"].grouped_efficiency(m, 0, n), hbm))
    assert experts(tp) > experts(ep)

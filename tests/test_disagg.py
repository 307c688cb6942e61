"""Disaggregated prefill/decode (xPyD): searched beside the aggregated plan with the same step model and simulation,
chosen where it wins (long prompts with a tight TPOT) and explained either way; the KV transfer over the link; the
simulation's remote-prefill admission; the plan file round trip; each role's flags checked by the engines' own code."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import compiled_or_closest, request_for

from planner import document, kvtransfer, render, simulate
from planner.errors import InputError
from planner.specs import BackendName, Dtype, KvPrecision

LATENCY_70B = ("model=llama3.1-70b", "hw=h200x8", "workload=summarization", "target=latency")
# Long prompts at 20 req/s with a 15 ms TPOT: chunked prefill in the aggregated decode steps breaks the TPOT bound.
TIGHT_TPOT = ("model=llama3.1-8b", "hw=h100x8", "workload=summarization", "target=qps", "target.min_request_rate=20",
              "target.tpot_ms=15")


@pytest.fixture(scope="module")
def plans():
    return {key: (req, compiled_or_closest(req)) for key, req in (
        ("latency-70b", request_for(*LATENCY_70B)), ("tight-tpot", request_for(*TIGHT_TPOT)),
        ("chat", request_for("model=llama3.1-8b", "hw=h100x8", "target=qps", "target.min_request_rate=40")))}


def _decision(compiled):
    return next(d for d in compiled.decisions if d.field == "disaggregation")


def test_the_issue_example_compares_aggregated_with_a_split_and_explains_with_ttft_and_tpot(plans):
    req, compiled = plans["latency-70b"]
    why = _decision(compiled).why
    assert why.count("TTFT p90") == 2 and why.count("TPOT p90") == 2, why  # both predictions
    assert "aggregated TP" in why and "xPyD " in why and "KV transfer p90" in why
    assert "prefill chunks" in why and "4,096-token prompts" in why
    assert any(a.layout == "xPyD" for a in compiled.alternatives)


def test_long_prompts_with_a_tight_tpot_choose_disaggregation(plans):
    req, compiled = plans["tight-tpot"]
    plan, pred = compiled.plan, compiled.prediction
    d = plan.disaggregation
    assert d is not None and d.kv_connector == "nixl" and d.kv_link == "nvlink"
    assert (plan.tensor_parallel, plan.replicas, plan.max_num_seqs) == (d.decode.tensor_parallel, d.decode.replicas,
                                                                        d.decode.max_num_seqs)
    assert d.prefill.replicas * d.prefill.gpus_per_replica + d.decode.replicas * d.decode.gpus_per_replica <= 8
    assert pred.meets_target and pred.tpot_ms.at(90) <= 15 and pred.kv_transfer_ms.at(90) > 0
    replaced = next(a for a in compiled.alternatives if a.layout == "aggregated" and "disaggregated" in
                    a.rejected_because)
    why = _decision(compiled).why
    assert why.startswith("xPyD wins: ")
    if replaced.prediction.meets_target:  # then it wins on GPUs for the rate (a QPS target)
        assert f"on {pred.output_throughput_tok_s / pred.output_throughput_tok_s_per_gpu:.0f} GPUs against" in why
    else:
        assert "the aggregated plan misses" in why


def test_short_prompts_keep_the_aggregated_plan_and_say_why(plans):
    _, compiled = plans["chat"]
    assert compiled.plan.disaggregation is None and compiled.prediction.kv_transfer_ms is None
    why = _decision(compiled).why
    assert why.startswith("aggregated wins") and "512-token prompts" in why


@pytest.mark.parametrize("overrides,match", [
    pytest.param(("plan.disaggregation=false",), "not searched: given as plan.disaggregation=false", id="pinned-off"),
    pytest.param(("plan.disaggregation=true",), "xPyD as pinned", id="pinned-on"),
])
def test_the_pin_decides(overrides, match):
    compiled = compiled_or_closest(request_for(*LATENCY_70B, *overrides))
    assert match in _decision(compiled).why
    assert (compiled.plan.disaggregation is not None) == ("true" in overrides[0])


@pytest.mark.parametrize("overrides,match", [
    pytest.param(("backend=trtllm", "plan.disaggregation=true"), "backend=trtllm: trtllm-serve disaggregated",
                 id="trtllm-renders-none"),
    pytest.param(("plan.kv_connector=nixel",), "plan.kv_connector=nixel: not a KV connector here. Did you mean nixl",
                 id="unknown-connector"),
    pytest.param(("backend=sglang", "plan.kv_connector=lmcache"), "backend=sglang has no such connector",
                 id="sglang-has-no-lmcache"),
])
def test_impossible_asks_are_input_errors(overrides, match):
    with pytest.raises(InputError, match=match):
        compiled_or_closest(request_for(*TIGHT_TPOT, *overrides))


def test_a_pin_no_split_can_hold_is_an_input_error_not_an_aggregated_plan():
    """DeepSeek-R1 in FP8 needs both H100 nodes for one instance: no prefill and decode instance fit side by side."""
    with pytest.raises(InputError, match="plan.disaggregation=true: no disaggregated plan is possible here: no two "
                                         "single-node layouts of the chosen format fit hw=2xh100x8's 16 GPUs"):
        compiled_or_closest(request_for("model=deepseek-r1", "hw=2xh100x8", "plan.disaggregation=true"))


def test_kv_transfer_is_the_prompt_s_kv_over_the_link_plus_the_connector_overhead():
    req = request_for("model=llama3.1-70b", "hw=2xh100x8")
    conn = kvtransfer.connector("mooncake")
    nvlink = kvtransfer.link(req.hw, 8, conn)
    rdma = kvtransfer.link(req.hw, 16, conn)
    assert (nvlink.name, rdma.name) == ("nvlink", "rdma")
    assert rdma.gb_s == pytest.approx(400 / 8 * 0.711)
    # Llama-3.1-70B: 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 327,680 B per token; TP 4 -> a quarter/rank
    per_link = kvtransfer.bytes_per_link(req.model, KvPrecision.bf16, Dtype.bf16, 4096, 4, 8)
    assert per_link == 4096 * 327_680 / 4
    t = kvtransfer.seconds(req.model, KvPrecision.bf16, Dtype.bf16, 4096, 4, 8, rdma, conn)
    assert t == pytest.approx(0.4e-3 + per_link / (rdma.gb_s * 1e9))
    one_node = request_for("model=llama3.1-70b", "hw=h100x8").hw
    assert kvtransfer.link(one_node, 8, conn).name == "nvlink"
    assert kvtransfer.link(request_for("model=llama3.1-8b", "hw=l40sx2").hw, 2, conn).name == "pcie"


def test_a_remote_prefill_request_computes_only_its_last_prompt_token():
    """vLLM's decode instance loads the prompt's KV through the connector and recomputes the last prompt token:
    a lone 4,000-token request with a 1,000-token budget takes 1 step to its first token, not 4."""
    steps = []

    def step(st):
        steps.append(st)
        return 0.01

    kw = dict(max_num_seqs=8, max_num_batched_tokens=1000, kv_blocks=1000, block_size=16)
    arrivals = simulate.Arrivals(request_rate=None)
    local = simulate.simulate(step, np.array([4000]), np.array([3]), arrivals, **kw)
    assert local.ttft_s[0] == pytest.approx(0.04)
    steps.clear()
    remote = simulate.simulate(step, np.array([4000]), np.array([3]), arrivals, remote_prefill=True,
                               send_s=np.array([0.5]), **kw)
    assert remote.ttft_s[0] == pytest.approx(0.01) and remote.e2e_s[0] == pytest.approx(0.03)
    assert (steps[0].prefill_tokens, steps[0].prefill_context) == (1, 3999)


def test_a_disaggregated_plan_file_reads_back_equal(plans, tmp_path):
    req, compiled = plans["tight-tpot"]
    compiled = render.rendered(compiled, req)
    path = tmp_path / "p.yaml"
    document.write(document.build(req, compiled), path)
    doc = document.build(req, compiled)
    assert set(doc["plan"]["disaggregation"]) == {"prefill", "decode", "kv_connector", "kv_link"}
    assert set(doc["prediction"]["kv_transfer_ms"]) >= {"p50", "p90"}
    assert {a["layout"] for a in doc["alternatives"]} >= {"aggregated"}
    assert document.load(str(path))[1] == compiled


def test_vllm_roles_carry_a_kv_transfer_config_vllm_accepts(plans):
    """Each role's --kv-transfer-config is a KVTransferConfig vLLM 0.32 builds (its own dataclass validates the keys
    and the role), with the connector vLLM registers under that name."""
    pytest.importorskip("vllm")
    from vllm.config.kv_transfer import KVTransferConfig
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    req, compiled = plans["tight-tpot"]
    files = render.rendered(compiled, req).launch.files
    roles = {}
    for role in ("prefill", "decode"):
        words = files[f"pd/{role}.argv.txt"].split()
        raw = json.loads(words[words.index("--kv-transfer-config") + 1].strip("'"))
        cfg = KVTransferConfig(**raw)
        assert cfg.kv_connector in KVConnectorFactory._registry
        roles[role] = cfg
    assert roles["prefill"].is_kv_producer and not roles["prefill"].is_kv_consumer
    assert roles["decode"].is_kv_consumer and not roles["decode"].is_kv_producer
    assert "--vllm-pd-disaggregation" in files["pd/router.argv.txt"]


def test_sglang_roles_take_sglang_s_disaggregation_flags(plans):
    req, compiled = plans["tight-tpot"]
    sglang = dataclasses.replace(compiled, plan=dataclasses.replace(compiled.plan, backend=BackendName.sglang))
    files = render.rendered(sglang, req).launch.files
    assert "--disaggregation-mode prefill --disaggregation-transfer-backend nixl" in files["pd/prefill.argv.txt"]
    assert "--disaggregation-mode decode --disaggregation-transfer-backend nixl" in files["pd/decode.argv.txt"]
    assert "sglang_router.launch_router --pd-disaggregation" in files["pd/router.argv.txt"]

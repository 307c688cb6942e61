"""Autoscaling hints: replicas per request-rate band over target.request_rate_range, from what one replica sustains
within the SLOs (checked by the simulation), per pool (a disaggregated plan's from planner/poolscale.py); rendered as KEDA ScaledObjects (vendored CRD, strict) on the
Deployment, the DisaggregatedSet's role scalers, Dynamo's scaling adapters, and KServe's spec.scaling."""

import gzip
import json
from pathlib import Path

import pytest
import yaml
from conftest import compiled_or_closest, request_for

import math

import numpy as np

from backends.deploy import get
from planner import autoscale, document, mix, pools, poolscale, render, search
from planner.errors import InputError
from planner.hardware import Option

jsonschema = pytest.importorskip("jsonschema")
KEDA = json.loads(gzip.decompress((Path(__file__).parent / "data" / "k8s" /
                                   "keda-scaledobject-v1alpha1.schema.json.gz").read_bytes()))
AGG = ("model=llama3.1-8b", "hw=h100x8", "target=qps", "target.min_request_rate=40", "target.request_rate_range=[5,60]")
XPYD = ("model=llama3.1-8b", "hw=h100x8", "workload=summarization", "target=qps", "target.min_request_rate=20",
        "target.tpot_ms=15", "target.request_rate_range=[4,30]")


@pytest.fixture(scope="module")
def plans():
    return {k: (req, compiled_or_closest(req)) for k, req in (("agg", request_for(*AGG)), ("xpyd", request_for(*XPYD)))}


@pytest.mark.parametrize("cap,low,high,bands", [
    pytest.param(10.0, 5, 60, [(5, 10, 1), (10, 20, 2), (20, 30, 3), (30, 40, 4), (40, 50, 5), (50, 60, 6)],
                 id="six-bands"),
    pytest.param(10.0, 15, 15, [(15, 15, 2)], id="a-point"),
    pytest.param(25.0, 1, 20, [(1, 20, 1)], id="one-replica-covers-it"),
])
def test_bands_cover_the_range_with_ceil_of_rate_over_capacity(cap, low, high, bands):
    r = autoscale.rule("replicas", cap, low, high)
    assert [(b.low_rps, b.high_rps, b.replicas) for b in r.bands] == bands
    assert (r.min_replicas, r.max_replicas) == (bands[0][2], bands[-1][2])


@pytest.mark.parametrize("value", ["[60,5]", "[0,5]", "[5]"])
def test_a_bad_range_is_an_input_error(value):
    with pytest.raises(InputError, match=r"target.request_rate_range=.*\[low, high\]"):
        compiled_or_closest(request_for("model=llama3.1-8b", "hw=h100x1", f"target.request_rate_range={value}"))


def test_one_replica_sustains_its_capacity_in_the_simulation(plans):
    req, compiled = plans["agg"]
    (rule,) = compiled.plan.autoscaling
    wl = req.workload
    whole = (mix.Bucket(wl.input_len, wl.output_len, 1.0, "all"),)
    assert mix.replica_meets(req, Option(req.hw, compiled, True), whole, rule.replica_rps, wl.range_ratio)
    assert rule.min_replicas == 1 and rule.max_replicas == pytest.approx(60 / rule.replica_rps, abs=1)
    assert compiled.plan.replicas <= rule.max_replicas
    d = next(d for d in compiled.decisions if d.field == "autoscaling")
    assert "sustains" in d.why and "5 req/s" in d.why and "60 req/s" in d.why


def test_the_scaled_object_carries_the_bands_and_validates(plans):
    req, compiled = plans["agg"]
    files = render.rendered(compiled, req).launch.files
    obj = yaml.safe_load(files["k8s/scaledobject.yaml"])
    jsonschema.validate(obj, {**KEDA, "additionalProperties": False})
    (rule,) = compiled.plan.autoscaling
    spec = obj["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama3-1-8b-vllm"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (rule.min_replicas, rule.max_replicas)
    trig = spec["triggers"][0]
    assert trig["type"] == "prometheus" and float(trig["metadata"]["threshold"]) == pytest.approx(rule.replica_rps)
    assert 'vllm:request_success_total{model_name="meta-llama/Meta-Llama-3.1-8B-Instruct"}' in trig["metadata"]["query"]
    kserve = yaml.safe_load(get("kserve").render(compiled.plan, "x", req.hw.gpu).files["llminferenceservice.yaml"])
    assert kserve["spec"]["scaling"]["maxReplicas"] == rule.max_replicas


def test_each_pool_of_a_disaggregated_plan_scales_on_its_own(plans):
    req, compiled = plans["xpyd"]
    d = compiled.plan.disaggregation
    assert d is not None and [r.pool for r in compiled.plan.autoscaling] == ["prefill", "decode"]
    files = render.rendered(compiled, req).launch.files
    dset = yaml.safe_load(files["k8s/disaggregatedset.yaml"])
    assert dset["spec"]["slices"] == 1 and all(r["scaling"] == {"mode": "External"} for r in dset["spec"]["roles"])
    for pool in ("prefill", "decode"):
        so = yaml.safe_load(files[f"k8s/scaledobject-{pool}.yaml"])
        jsonschema.validate(so, KEDA)
        assert so["spec"]["scaleTargetRef"] == {"apiVersion": "disaggregatedset.x-k8s.io/v1",
                                                "kind": "DisaggregatedSetRoleScaler",
                                                "name": f"llama3-1-8b-vllm-{pool}"}
    dynamo = get("dynamo").render(compiled.plan, "x", req.hw.gpu).files
    targets = {yaml.safe_load(t)["spec"]["scaleTargetRef"]["name"] for f, t in dynamo.items() if f.startswith("scaled")}
    assert targets == {"x-vllmprefillworker", "x-vllmdecodeworker"}


@pytest.fixture(scope="module")
def xpyd_pools():
    """The XPYD plan compiled with its split as autoscale.rules got it (the plan document does not carry it)."""
    seen = []
    capacities = poolscale.capacities

    def spy(req, m, planned):
        seen.append((m, planned))
        return capacities(req, m, planned)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(poolscale, "capacities", spy)
        req = request_for(*XPYD)
        compiled = search.compile_plan(req)
    (m, planned), = seen
    return req, compiled, m, planned


def test_a_pool_scales_by_what_one_instance_sustains_not_its_planned_share(xpyd_pools):
    req, compiled, m, planned = xpyd_pools
    low, high = req.target.request_rate_range
    for rule, count in zip(compiled.plan.autoscaling, (m.split.x, m.split.y)):
        assert rule.replica_rps >= planned / count - 1e-9
        assert rule.max_replicas == math.ceil(high / rule.replica_rps - 1e-9)
        # (the plan keeps rates to 3 decimals: each replica's rounding may lose 0.0005 req/s)
        assert all(b.replicas * rule.replica_rps >= b.high_rps - 1e-3 * b.replicas for b in rule.bands)
    # the prefill pool's instance sustains well above its planned share (20/3 req/s): fewer at the range's top than
    # the planned share gives (30 / (20/3) -> 5)
    prefill = compiled.plan.autoscaling[0]
    assert prefill.replica_rps > 1.1 * planned / m.split.x
    assert prefill.max_replicas < math.ceil(high / (planned / m.split.x) - 1e-9)


def test_the_pool_capacities_meet_the_target_and_ten_percent_more_does_not(xpyd_pools):
    req, compiled, m, _ = xpyd_pools
    prefill, decode = (r.replica_rps for r in compiled.plan.autoscaling)
    sim = pools.simulate_pools(req, m.split, m.spec, m.prefix_caching, prefill, decode)
    assert poolscale.blame(req, sim) == ()
    assert sim.prefill_kept_up >= 0.999 and sim.decode_kept_up >= 0.999
    o = sim.observed(req.target.percentile)
    assert o.ttft_ms <= req.target.ttft_ms and o.tpot_ms <= req.target.tpot_ms
    # 11% above either (the other at its capacity): the analytic models or the simulation say it misses
    up_p, up_d = prefill / poolscale.STEP_DOWN, decode / poolscale.STEP_DOWN
    over_p = pools.simulate_pools(req, m.split, m.spec, m.prefix_caching, up_p, decode)
    over_d = pools.simulate_pools(req, m.split, m.spec, m.prefix_caching, prefill, up_d)
    assert not poolscale.prefill_meets(req, m, decode, np.array([up_p]))[0] or "prefill" in poolscale.blame(req, over_p)
    assert not poolscale.decode_meets(req, m, prefill, np.array([up_d]))[0] or "decode" in poolscale.blame(req, over_d)


def _sim(ttft, prefill, tpot, kept=(1.0, 1.0)) -> pools.Simulated:
    n = np.ones(10)
    return pools.Simulated(ttft_ms=ttft * n, tpot_ms=tpot * n, e2e_ms=(ttft + 100 * tpot) * n, prefill_ms=prefill * n,
                           xfer_ms=5 * n, prefill_kept_up=kept[0], decode_kept_up=kept[1], mean_output=100,
                           decode_batch=8)


@pytest.mark.parametrize("sim,pools_to_blame", [
    pytest.param(_sim(500, 450, 10), (), id="meets"),
    pytest.param(_sim(500, 450, 20), ("decode",), id="tpot-is-the-decode-pool's"),
    pytest.param(_sim(500, 450, 10, kept=(1.0, 0.9)), ("decode",), id="decode-falls-behind"),
    pytest.param(_sim(500, 450, 10, kept=(0.9, 1.0)), ("prefill",), id="prefill-falls-behind"),
    pytest.param(_sim(1500, 1400, 10), ("prefill", "decode"), id="ttft-mostly-prefill"),
    pytest.param(_sim(1500, 100, 10), ("decode", "prefill"), id="ttft-mostly-decode-queue"),
])
def test_a_simulated_miss_steps_down_the_pool_that_causes_it(plans, sim, pools_to_blame):
    req, _ = plans["xpyd"]  # TTFT 1000 ms, TPOT 15 ms at p90
    assert poolscale.blame(req, sim) == pools_to_blame


def test_a_plan_with_autoscaling_reads_back_equal(plans, tmp_path):
    req, compiled = plans["xpyd"]
    path = tmp_path / "p.yaml"
    document.write(document.build(req, compiled), path)
    req_back, back = document.load(str(path))
    assert back == compiled and req_back.target.request_rate_range == [4.0, 30.0]

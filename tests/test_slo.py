"""One SLO truth: planning (predict.verdict, the grid), exit 3 and verification (verify.checks) judge the same
observation the same way, at the target's percentile."""

import dataclasses

import numpy as np
import pytest

from planner import predict, slo, verify
from planner.plan import Dist, Violation

from conftest import request_for

TARGET = request_for("model=llama3-8b", "hw=h100x1", "target.ttft_ms=200", "target.tpot_ms=20",
                     "target.percentile=95").target


@pytest.mark.parametrize("ttft,tpot,meets,binding", [
    pytest.param(150.0, 19.0, True, None, id="both-within"),
    pytest.param(250.0, 19.0, False, "ttft_ms", id="ttft-over"),
    pytest.param(210.0, 30.0, False, "tpot_ms", id="tpot-furthest-binds"),
    pytest.param(200.0, 20.0, True, None, id="at-the-limit-passes"),
])
def test_planning_and_verification_give_one_verdict(ttft, tpot, meets, binding):
    obs = slo.Observed(ttft_ms=ttft, tpot_ms=tpot)
    planned = slo.violations(slo.check(TARGET, obs))
    measured = verify.checks(TARGET, obs)
    assert (not planned) is meets and all(c.passed for c in measured) is meets
    assert [c.metric for c in measured] == ["p95_ttft_ms", "p95_tpot_ms"]
    assert (slo.binding(planned).metric if planned else None) == binding
    grid = slo.check(TARGET, slo.Observed(ttft_ms=np.array([ttft, 1.0]), tpot_ms=np.array([tpot, 1.0])))
    assert bool(np.logical_and.reduce([c.passed for c in grid])[0]) is meets


def test_the_plan_is_judged_at_the_targets_percentile_not_the_mean():
    req = request_for("model=llama3-8b", "hw=h100x1", "target.ttft_ms=100", "target.percentile=95")
    est = predict.Estimate(ttft_ms=Dist(mean=50.0, quantiles=((50.0, 40.0), (95.0, 120.0))),
                           tpot_ms=Dist(10.0, ((50.0, 10.0), (95.0, 12.0))), e2e_ms=Dist(1000.0, ((95.0, 1100.0),)),
                           output_tok_s=1000.0, output_tok_s_per_gpu=1000.0, request_rps=5.0, batch=8.0, gpus=1,
                           usd_per_mtok=None)
    judged = predict.verdict(req, est)
    assert judged.violations == (Violation("ttft_ms", 120.0, 100.0),)


def test_a_percentile_not_predicted_is_an_error_not_the_mean():
    with pytest.raises(KeyError, match="p97 was not predicted"):
        Dist(mean=1.0, quantiles=((50.0, 1.0), (90.0, 2.0))).at(97)


def test_rate_floors_pass_within_the_tolerance_and_fail_beyond():
    t = dataclasses.replace(TARGET, ttft_ms=None, tpot_ms=None, min_request_rate=20.0)
    assert all(c.passed for c in slo.check(t, slo.Observed(request_rate_rps=19.99)))
    assert not any(c.passed for c in slo.check(t, slo.Observed(request_rate_rps=19.0)))
    v = slo.violations(slo.check(t, slo.Observed(request_rate_rps=10.0)))
    assert slo.factor(v[0]) == pytest.approx(2.0) and slo.describe(v[0], 90) == \
        "request_rate_rps: 10.0 vs target 20.0"


@pytest.mark.parametrize("overrides,rate,conc,source", [
    pytest.param(("workload.request_rate=8",), 2.0, None, "workload.request_rate", id="rate-split"),
    pytest.param(("workload.max_concurrency=10",), None, 3, "workload.max_concurrency", id="concurrency-split-up"),
    pytest.param(("target=latency",), None, 4, "target.min_concurrency", id="latency-min-concurrency"),
    pytest.param(("target=throughput",), None, 256, "plan.max_num_seqs: throughput objective with no workload rate "
                 "or concurrency", id="throughput-full-batch"),
])
def test_offered_load_is_what_verification_sends(overrides, rate, conc, source):
    req = request_for("model=llama3-8b", "hw=h100x4", *overrides)
    load = slo.offered(req, replicas=4, max_num_seqs=256)
    assert (load.request_rate_rps, load.concurrency, load.source) == (rate, conc, source)

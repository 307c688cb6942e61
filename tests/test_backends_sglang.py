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


@pytest.mark.parametrize("changes", [
    pytest.param({}, id="as-planned"),
    pytest.param({"enable_prefix_caching": True, "enable_chunked_prefill": False, "expert_parallel": True,
                  "speculative": {"method": "eagle3", "model": "org/drafter", "num_speculative_tokens": 3}},
                 id="switches-ep-eagle3"),
])
def test_sglang_parses_the_rendered_argv_back_to_the_plan(changes):
    plan = dataclasses.replace(compiled_or_closest(request_for("model=llama3-70b", "hw=h100x4")).plan,
                               backend=BackendName.sglang, **changes)
    art = get(BackendName.sglang).render(plan, "check")
    parser = argparse.ArgumentParser()
    server_args.ServerArgs.add_cli_args(parser)
    args = parser.parse_args(list(art.argv[3:]))
    assert (args.model_path, args.tp_size, args.pp_size, args.dp_size) == (
        plan.model_path, plan.tensor_parallel, plan.pipeline_parallel, plan.data_parallel)
    assert args.context_length == plan.max_model_len
    assert args.max_running_requests == plan.max_num_seqs
    assert args.max_prefill_tokens == plan.max_num_batched_tokens
    assert args.chunked_prefill_size == (plan.max_num_batched_tokens if plan.enable_chunked_prefill else -1)
    assert args.mem_fraction_static == plan.gpu_memory_utilization
    assert args.disable_radix_cache is (not plan.enable_prefix_caching)
    assert args.ep_size == (plan.tensor_parallel if plan.expert_parallel else 1)
    if plan.speculative:
        assert args.speculative_algorithm == "EAGLE3" and args.speculative_num_steps == 3

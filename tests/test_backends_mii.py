"""DeepSpeed-MII's rendering checked against MII's own interfaces, as vendored facts (tests/data/mii/mii-0.3.3.yaml:
the OpenAI server's argparse options, mii.serve's parameters and the pydantic fields of ModelConfig, MIIConfig and
DeepSpeed's state manager, each with its source): MII is not installed here (it needs a CUDA build of DeepSpeed)."""

import argparse
import json
from pathlib import Path

import pytest
import yaml
from conftest import compiled_or_closest, on, request_for

from backends import get, unsupported
from backends.mii import LAUNCH
from planner.specs import BackendName

M = BackendName.mii
FACTS = yaml.safe_load((Path(__file__).parent / "data" / "mii" / "mii-0.3.3.yaml").read_text())
TYPES = {"str": str, "int": int, "json": json.loads}


def server_parser() -> argparse.ArgumentParser:
    """openai_api_server.py's parser rebuilt from the vendored options (exit_on_error off: unknown flags raise)."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    for option, kind in FACTS["openai_api_server"]["options"].items():
        if kind == "bool":
            parser.add_argument(option, action="store_true")
        else:
            parser.add_argument(option, type=TYPES[kind])
    return parser


def check_fields(doc: dict, section: str) -> None:
    unknown = set(doc) - set(FACTS[section]["fields"])
    assert not unknown, f"{section} has no field {sorted(unknown)} ({FACTS[section]['source']}; extra=forbid)"


@pytest.fixture(scope="module")
def plan70():
    req = request_for("model=llama3-70b", "hw=h100x4", "backend=mii")
    return req, compiled_or_closest(req).plan


def test_the_launch_is_mii_serve_then_its_openai_server(plan70):
    req, plan = plan70
    art = get(M).render(plan, "mii", gpu=req.hw.gpu)
    assert art.argv[:3] == ("python3", "-c", LAUNCH) and art.argv[3] == "mii_config.json"
    assert "mii.serve(**json.load(open(sys.argv[1])))" in LAUNCH
    assert "runpy.run_module('mii.entrypoints.openai_api_server', run_name='__main__'" in LAUNCH
    args = server_parser().parse_args(list(art.argv[4:]))  # every flag is one the real parser has, with its type
    assert (args.model, args.load_balancer, args.port) == (plan.model_path, "localhost:50050", art.port)
    serve = json.loads(art.files["mii_config.json"])
    assert set(serve) <= set(FACTS["serve"]["parameters"]), FACTS["serve"]["source"]
    assert args.deployment_name == serve["mii_config"]["deployment_name"], "the server attaches to that deployment"


def test_every_config_key_is_a_field_and_carries_the_plan(plan70):
    req, plan = plan70
    serve = json.loads(get(M).render(plan, "mii", gpu=req.hw.gpu).files["mii_config.json"])
    model, deploy = serve["model_config"], serve["mii_config"]
    engine = model["inference_engine_config"]
    state = engine["state_manager"]
    for doc, section in ((model, "model_config"), (deploy, "mii_config"), (engine, "inference_engine_config"),
                         (state, "state_manager")):
        check_fields(doc, section)
    assert all(isinstance(state[k], int) and state[k] > 0 for k in FACTS["state_manager"]["positive"] if k in state)
    assert state["max_ragged_sequence_count"] <= min(state["max_tracked_sequences"], state["max_ragged_batch_size"])
    assert (model["model_name_or_path"], model["tensor_parallel"], model["max_length"]) == \
        (plan.model_path, plan.tensor_parallel, plan.max_model_len)
    assert (state["max_ragged_sequence_count"], state["max_ragged_batch_size"], state["max_context"]) == \
        (plan.max_num_seqs, plan.max_num_batched_tokens, plan.max_model_len)
    assert "memory_config" not in state, "MII's default reserve: the plan's fraction is that default"


def test_the_search_plans_mii_with_its_own_defaults(plan70):
    req, plan = plan70
    assert plan.backend is M and plan.enable_chunked_prefill and not plan.enable_prefix_caching
    assert plan.max_num_batched_tokens == 768, "max_ragged_batch_size's default (manager_configs.py:145)"
    # memory_config.size 1e9 bytes kept free of an 80 GiB H100: the engine's share
    assert plan.gpu_memory_utilization == round(1 - 1e9 / (req.hw.gpu.memory_gib * 2**30), 4)
    assert unsupported(M, plan, req.hw.gpu, req.model) is None


REFUSED = [
    pytest.param({"gpu_memory_utilization": 0.9}, "default memory reserve", id="another-fraction"),
    pytest.param({"enable_chunked_prefill": False}, "Dynamic SplitFuse", id="no-chunked-prefill"),
    pytest.param({"max_num_seqs": 1024, "max_num_batched_tokens": 512}, "max_ragged_sequence_count", id="seqs>tokens"),
    pytest.param({"enable_prefix_caching": True}, "capability: prefix_caching", id="prefix-caching"),
    pytest.param({"pipeline_parallel": 2, "tensor_parallel": 2}, "capability: pipeline_parallel", id="pp"),
]


@pytest.mark.parametrize("changes, says", REFUSED)
def test_what_mii_cannot_serve_says_why(plan70, changes, says):
    req, plan = plan70
    reason = unsupported(M, on(plan, M, **changes), req.hw.gpu, req.model)
    assert reason and says in reason and "backend=mii" in reason


def test_model_types_outside_fastgen_are_refused():
    req = request_for("model=gemma2-9b", "hw=h100x1", "backend=mii")
    plan = compiled_or_closest(request_for("model=gemma2-9b", "hw=h100x1")).plan
    reason = unsupported(M, on(plan, M), req.hw.gpu, req.model)
    assert "model_type 'gemma2'" in reason and "engine_factory.py" in reason


def test_the_auto_search_does_not_pick_mii():
    req = request_for("model=llama3-8b", "hw=h100x1")
    assert compiled_or_closest(req).plan.backend is not M


def test_kv_capacity_from_the_allocation_line():  # a line in kv_cache.py:135-136 format (not a captured log)
    log = ("[2025-03-26] [INFO] [kv_cache.py:135:__init__] Allocating KV-cache 0 with shape: (80, 3516, 64, 2, 2, "
           "128) consisting of 3516 blocks.")
    assert get(M).kv_cache_tokens(log) == 3516 * 64 and get(M).kv_cache_tokens("loading") is None

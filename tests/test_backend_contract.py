"""One contract every backend adapter passes (the Backend protocol of backends/base.py), with the expected engine
flags written here as literals per backend (from each engine's own argument parser, cited in the adapter), never read
from the adapter's flag table: render returns argv/env/docker/k8s; every planned limit reaches the argv (or the
config file the engine reads); no secret value reaches any artifact; health path and capability answers agree;
what is unsupported says why in a string."""

import dataclasses
import json
import shlex

import pytest
import yaml
from conftest import compiled_or_closest, on, request_for

from backends import ADAPTERS, get, unsupported
from backends.base import Artifacts, Support
from planner.plan import DecodePool, Disaggregation, Plan, PrefillPool
from planner.specs import BackendName, Dtype, Quantization

BACKENDS = [pytest.param(b, id=b.value) for b in ADAPTERS]
V, T, G, S, M = BackendName.vllm, BackendName.trtllm, BackendName.tgi, BackendName.sglang, BackendName.mii
TT, TV = BackendName.triton_trtllm, BackendName.triton_vllm

# Distinct numbers, so a value found in the argv can only have come from its own field.
LIMITS = dict(max_num_seqs=97, max_model_len=12345, max_num_batched_tokens=4321, gpu_memory_utilization=0.87,
              enable_chunked_prefill=True)

# backend -> (flag, value) pairs that must be adjacent in argv, docker and the k8s container command, for the h100x4
# plan (TP 4) with LIMITS, in bf16 and not quantized.
ARGV = {
    V: [("--max-num-seqs", "97"), ("--max-model-len", "12345"), ("--max-num-batched-tokens", "4321"),
        ("--tensor-parallel-size", "4"), ("--gpu-memory-utilization", "0.87"), ("--dtype", "bfloat16")],
    T: [("--max_batch_size", "97"), ("--max_seq_len", "12345"), ("--max_num_tokens", "4321"), ("--tp_size", "4"),
        ("--backend", "pytorch")],
    G: [("--max-batch-size", "97"), ("--max-total-tokens", "12345"), ("--max-input-tokens", "12344"),
        ("--max-batch-prefill-tokens", "4321"), ("--num-shard", "4"), ("--cuda-memory-fraction", "0.87"),
        ("--dtype", "bfloat16")],
    S: [("--max-running-requests", "97"), ("--context-length", "12345"), ("--max-prefill-tokens", "4321"),
        ("--tp-size", "4"), ("--mem-fraction-static", "0.87"), ("--dtype", "bfloat16")],
    TT: [], TV: [],  # Triton: the limits live in the model repository (REPOSITORY below), not in the argv
    # MII: its OpenAI server attaches to the deployment the config file starts (openai_api_server.py --load-balancer)
    M: [("--load-balancer", "localhost:50050"), ("--deployment-name", "planner-mii"), ("--port", "8000")],
}
# backend -> (dotted key, value) in the config file the engine reads (TRT-LLM's --extra_llm_api_options YAML).
CONFIG = {T: ("extra_llm_api_options.yaml", "--extra_llm_api_options",
              [("kv_cache_config.free_gpu_memory_fraction", 0.87), ("dtype", "bfloat16")]),
          # MII: mii.serve's arguments (mii/config.py ModelConfig; DeepSpeed's DSStateManagerConfig), the file named
          # as the launch program's first argument; its memory reserve stays MII's default (no fraction)
          M: ("mii_config.json", None,
              [("model_config.tensor_parallel", 4), ("model_config.max_length", 12345),
               ("model_config.inference_engine_config.state_manager.max_ragged_sequence_count", 97),
               ("model_config.inference_engine_config.state_manager.max_ragged_batch_size", 4321),
               ("model_config.inference_engine_config.state_manager.max_context", 12345)])}
# Triton: (file of the model repository, dotted key, value) where each backend reads the limit: the vLLM backend's
# model.json (AsyncEngineArgs fields), the TensorRT-LLM backend's tensorrt_llm/config.pbtxt (ModelConfig, parameters
# as strings) and the engine build (trtllm-build flags). Checked in tests/test_backends_triton.py by parsing.
REPOSITORY = {
    TV: ("model_repository/vllm_model/1/model.json",
         [("max_num_seqs", 97), ("max_model_len", 12345), ("max_num_batched_tokens", 4321), ("tensor_parallel_size", 4),
          ("gpu_memory_utilization", 0.87), ("dtype", "bfloat16"), ("enable_chunked_prefill", True)]),
    TT: ("build_engine.sh",
         [("--max_batch_size", "97"), ("--max_seq_len", "12345"), ("--max_input_len", "12344"),
          ("--max_num_tokens", "4321"), ("--tp_size", "4"), ("--dtype", "bfloat16")]),
}
# fp8 weights: the flag each engine reads; TRT-LLM's PyTorch backend takes it from the checkpoint (no flag), and
# TGI refuses --dtype together with --quantize (launcher/src/main.rs:629).
FP8 = {V: ("--quantization", "fp8"), T: None, G: ("--quantize", "fp8"), S: ("--quantization", "fp8"), TT: None,
       TV: None, M: None}
NOT_WITH_FP8 = {G: "--dtype"}
HEALTH = {V: "/health", T: "/health", G: "/health", S: "/health", TT: "/v2/health/ready", TV: "/v2/health/ready",
          M: "/health"}
METRICS = {V: "/metrics", T: "/prometheus/metrics", G: "/metrics", S: "/metrics", TT: "/metrics", TV: "/metrics",
           M: ""}  # MII has no /metrics
SECRET = "hf_contract_secret_9f3a"








def limits(backend: BackendName) -> dict:
    """LIMITS for `backend`: DeepSpeed-MII takes no memory fraction (backends/mii.py keeps its default reserve)."""
    return {k: v for k, v in LIMITS.items() if not (backend is M and k == "gpu_memory_utilization")}


def places(art: Artifacts) -> dict[str, list[str]]:
    """Every command line of the artifacts as words: local argv, docker run, the k8s container."""
    c = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
    return {"argv": list(art.argv), "docker": shlex.split(art.docker),
            "k8s": [*c.get("command", []), *c.get("args", [])]}


def pairs(words: list[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:]))


def dotted(doc: dict, key: str):
    for part in key.split("."):
        doc = doc[part]
    return doc


def rendered(backend: BackendName, req, plan: Plan) -> Artifacts:
    reason = unsupported(backend, plan, req.hw.gpu)
    assert reason is None, reason
    return get(backend).render(plan, "contract")


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_returns_every_artifact(backend, h100x4):
    req, plan = h100x4
    art = rendered(backend, req, on(plan, backend, **limits(backend)))
    assert isinstance(art, Artifacts) and art.backend is backend
    assert art.argv and all(isinstance(w, str) and w for w in art.argv)
    assert art.docker.startswith("docker run") and art.image in art.docker
    assert {"deployment.yaml", "service.yaml"} <= set(art.k8s)
    assert all(yaml.safe_load(text) for text in art.k8s.values()), "every manifest is YAML"
    assert all(isinstance(v, str) for v in art.env.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_planned_limit_reaches_the_engine(backend, h100x4):
    req, plan = h100x4
    art = rendered(backend, req, on(plan, backend, **limits(backend)))
    for where, words in places(art).items():
        missing = [p for p in ARGV[backend] if p not in pairs(words)]
        assert missing == [], f"{backend.value} {where}: {missing} not in {words}"
    if backend in CONFIG:
        name, flag, keys = CONFIG[backend]
        doc = yaml.safe_load(art.files[name])
        assert [(k, dotted(doc, k)) for k, _ in keys] == keys
        configmap = yaml.safe_load(art.k8s["configmap.yaml"])
        assert yaml.safe_load(configmap["data"][name]) == doc, "the ConfigMap carries the same file"
        for where, words in places(art).items():
            assert any((f == flag or flag is None) and v.endswith(name) for f, v in pairs(words)), \
                f"{where} does not name {name}"
    elif backend in REPOSITORY:
        name, keys = REPOSITORY[backend]
        if name.endswith(".json"):
            doc = json.loads(art.files[name])
            assert [(k, doc[k]) for k, _ in keys] == keys
        else:
            words = [w for line in art.files[name].splitlines() for w in shlex.split(line, comments=True)]
            assert [p for p in keys if p not in pairs(words)] == []
        for where, words in places(art).items():
            assert any("--model-repository=" in w for w in words), f"{where} names no model repository"
    else:
        assert art.files == {}, "the engine reads everything from its argv"


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantization_reaches_the_engine_where_it_has_a_flag(backend, h100x4):
    req, plan = h100x4
    if backend is M:  # no FP8 (MII's only quantization_mode is FP6 weights): refused with the reason
        reason = unsupported(backend, on(plan, backend, quantization=Quantization.fp8), req.hw.gpu)
        assert "quantization=fp8" in reason and "capability: quantizations" in reason
        return
    art = rendered(backend, req, on(plan, backend, quantization=Quantization.fp8, dtype=Dtype.bf16, **limits(backend)))
    for where, words in places(art).items():
        if FP8[backend] is None:
            assert not any(w.startswith(("--quantiz", "--quantize")) for w in words), words
        else:
            assert FP8[backend] in pairs(words), f"{where}: {FP8[backend]}"
        if backend in NOT_WITH_FP8:
            assert NOT_WITH_FP8[backend] not in words


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_secret_value_in_any_artifact(backend, h100x4, two_nodes, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SECRET)
    checked = 0
    for req, plan in (h100x4, two_nodes):
        plan = on(plan, backend)
        if unsupported(backend, plan, req.hw.gpu):
            continue
        art = get(backend).render(plan, "contract")
        texts = [*art.argv, *art.env.values(), art.docker, *art.k8s.values(), *art.files.values(), *art.warnings]
        assert not [t for t in texts if SECRET in t]
        assert art.env["HF_TOKEN"] == "${HF_TOKEN}", "passed by reference"
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_health_and_metrics_paths_agree_everywhere(backend, h100x4):
    impl = get(backend)
    req, plan = h100x4
    art = rendered(backend, req, on(plan, backend))
    assert (impl.health_path, art.health_path) == (HEALTH[backend], HEALTH[backend])
    assert (impl.metrics_path, art.metrics_path) == (METRICS[backend], METRICS[backend])
    c = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == HEALTH[backend]
    assert yaml.safe_load(art.k8s["service.yaml"])["spec"]["ports"][0]["port"] == art.port == impl.port


def asks(plan: Plan, two_nodes_plan: Plan) -> dict[str, Plan]:
    """A plan that needs each capability of the matrix, built from the h100x4 plan (multi_node: the 2-node one)."""
    return {
        "tensor_parallel": plan,  # TP 4
        "pipeline_parallel": dataclasses.replace(plan, tensor_parallel=2, pipeline_parallel=2),
        "data_parallel": dataclasses.replace(plan, tensor_parallel=1, data_parallel=4),  # attention DP 4 x TP 1
        "expert_parallel": dataclasses.replace(plan, expert_parallel=True),
        "multi_node": dataclasses.replace(two_nodes_plan, tensor_parallel=16, pipeline_parallel=1),  # 2 nodes only
        "prefix_caching": dataclasses.replace(plan, enable_prefix_caching=True),
        "chunked_prefill": dataclasses.replace(plan, enable_chunked_prefill=True),
        "disaggregation": dataclasses.replace(plan, disaggregation=Disaggregation(
            PrefillPool(1, 2, False, 2, 8192), DecodePool(1, 2, False, 2, 64), "nixl", "nvlink")),
    }


# The table field whose flag carries each capability (a supported one has a Flag, an unsupported one a NoFlag).
FIELD = {"tensor_parallel": "tensor_parallel", "pipeline_parallel": "pipeline_parallel",
         "data_parallel": "data_parallel", "expert_parallel": "expert_parallel", "multi_node": "nodes",
         "prefix_caching": "enable_prefix_caching", "chunked_prefill": "enable_chunked_prefill",
         "disaggregation": "disaggregation"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_capability_answers_are_consistent(backend, h100x4, two_nodes):
    """A supported capability: unsupported() does not blame it and the flag table has a flag for it. An unsupported
    one: unsupported() returns a string naming it and its source, and the table says why there is no flag."""
    impl = get(backend)
    (req, plan), (req2, plan2) = h100x4, two_nodes
    for cap, asking in asks(on(plan, backend), on(plan2, backend)).items():
        support: Support = getattr(impl.capabilities, cap)
        gpu = (req2 if cap == "multi_node" else req).hw.gpu
        reason = unsupported(backend, asking, gpu)
        if support.supported:
            assert reason is None or f"capability: {cap};" not in reason, reason
            if cap == "disaggregation":  # per role: backends/disagg.py's role table renders it
                from backends.disagg import ROLE_FLAGS

                assert ROLE_FLAGS[backend] and impl.table.no_flag_for(FIELD[cap]), cap
                continue
            if cap == "multi_node" and not impl.table.rows_for(FIELD[cap]):  # the launcher spreads the ranks
                assert "leaderworkerset.yaml" in impl.render(asking, "x", gpu=gpu).k8s, cap
                assert impl.table.no_flag_for(FIELD[cap]).source == support.source.split(":")[0], cap
                continue
            assert impl.table.rows_for(FIELD[cap]), f"{cap} supported but no flag renders it"
        else:
            assert isinstance(reason, str) and f"capability: {cap};" in reason and support.source in reason, reason
            assert support.note, f"{cap}: an unsupported capability says why"


# Formats each engine lacks, written as literals (each adapter cites the engine's enum).
MISSING = [
    pytest.param(G, "hw=h100x4", {"dtype": Dtype.float32}, "dtype=float32", id="tgi-float32"),
    pytest.param(V, "hw=v100x8", {"quantization": Quantization.fp8}, "quantization=fp8", id="vllm-fp8-on-volta"),
    pytest.param(T, "hw=h100x4", {"data_parallel": 2, "tensor_parallel": 2}, "data_parallel=2",
                 id="trtllm-attention-dp-needs-tp-1"),
    pytest.param(G, "hw=h100x4", {"data_parallel": 2, "tensor_parallel": 2}, "data_parallel=2",
                 id="tgi-data-parallel"),
    pytest.param(G, "hw=h100x4", {"expert_parallel": True}, "expert_parallel=true", id="tgi-expert-parallel"),
    pytest.param(S, "hw=cpu", {}, "does not run on the CPU", id="sglang-on-cpu"),
]


@pytest.mark.parametrize("backend, hw, changes, asked", MISSING)
def test_unsupported_returns_a_reason_string(backend, hw, changes, asked):
    req = request_for("model=llama3-8b", hw, "target=best-effort")
    reason = unsupported(backend, on(compiled_or_closest(req).plan, backend, **changes), req.hw.gpu)
    assert isinstance(reason, str) and asked in reason and f"backend={backend.value}" in reason, reason

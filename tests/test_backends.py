"""Backend adapters: the contract every backend passes, plan fields round-tripping into argv/docker/k8s, the
capability matrix's reasons, secrets, and the KV-capacity log parsers."""

import dataclasses
import re
import shlex

import pytest
import triton_repo
import yaml
from conftest import compiled_or_closest, on, request_for

from backends import ADAPTERS, get, unsupported
from backends.base import Artifacts
from backends.table import Where, get_path
from planner.plan import Plan
from planner.specs import BackendName, Dtype, KvPrecision, Quantization

BACKENDS = [pytest.param(b, id=b.value) for b in ADAPTERS]








def container(art: Artifacts) -> dict:
    doc = yaml.safe_load(art.k8s["deployment.yaml"])
    return doc["spec"]["template"]["spec"]["containers"][0]


def container_words(art: Artifacts) -> list[str]:
    c = container(art)
    return [*c.get("command", []), *c.get("args", [])]


# --- the contract -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_contract(backend, h100x4):
    impl = get(backend)
    req, plan = h100x4
    assert impl.name is backend and impl.capabilities.backend is backend
    assert impl.table.uncovered() == (), "every Plan field is a Flag or a NoFlag row"
    assert all(f.source for f in impl.table.flags) and all(n.reason for n in impl.table.no_flag)
    assert re.search(r"\d+\.\d+", impl.capabilities.version)
    assert ":" in impl.image and not impl.image.endswith(":latest"), "the image is pinned"
    assert impl.health_path.startswith("/") and (impl.metrics_path.startswith("/") or impl.metrics_path == "")
    assert impl.metrics.source and (impl.metrics.kv_cache_usage or impl.metrics_path == ""), "no metrics: says why"
    art = impl.render(on(plan, backend), "llama3-70b")
    assert isinstance(art, Artifacts) and art.backend is backend and art.image == impl.image
    assert art.argv and art.env["HF_TOKEN"] == "${HF_TOKEN}"
    assert impl.image in art.docker and " -e HF_TOKEN " in art.docker
    assert {"deployment.yaml", "service.yaml"} <= set(art.k8s)
    assert art == impl.render(on(plan, backend), "llama3-70b"), "rendering is deterministic"


@pytest.mark.parametrize("backend", BACKENDS)
def test_capability_matrix_names_its_sources(backend):
    caps = get(backend).capabilities
    precisions = [caps.gpu, *caps.dtypes.values(), *caps.quantizations.values(), *caps.kv_cache_dtypes.values()]
    assert all(p.source for p in precisions)
    features = [caps.tensor_parallel, caps.pipeline_parallel, caps.data_parallel, caps.expert_parallel,
                caps.multi_node, caps.prefix_caching, caps.chunked_prefill, caps.lora, caps.vlm]
    assert all(f.source for f in features)
    assert all(f.note for f in features if not f.supported), "an unsupported feature says why"


def test_tgi_says_it_is_in_maintenance_mode(h100x4):
    tgi = get(BackendName.tgi)
    assert "maintenance mode since 2025-12-11" in tgi.capabilities.status
    assert "archived" in tgi.capabilities.status
    assert tgi.warning and "maintenance" in tgi.warning
    assert tgi.warning in tgi.render(on(h100x4[1], BackendName.tgi), "x").warnings
    unmaintained = (BackendName.tgi, BackendName.mii)
    assert all(get(b).warning is None for b in ADAPTERS if b not in unmaintained)


def test_mii_says_it_has_had_no_release_since_march_2025(h100x4):
    mii = get(BackendName.mii)
    assert "no release since v0.3.3 (2025-03-25" in mii.capabilities.status
    assert mii.warning and mii.capabilities.status in mii.warning
    assert mii.warning in mii.render(on(h100x4[1], BackendName.mii), "x").warnings


# --- every planned field reaches every artifact --------------------------------------------------------------

PLANNED = ("tensor_parallel", "pipeline_parallel", "data_parallel", "expert_parallel", "dtype", "quantization",
           "kv_cache_dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization",
           "enable_prefix_caching", "enable_chunked_prefill", "speculative")


def variants(plan: Plan, backend: BackendName):
    """The h100x4 plan as is, and with the switches flipped, fp8, expert parallel and a speculative drafter."""
    yield "as-planned", on(plan, backend)
    if get(backend).capabilities.prefix_caching.supported:  # MII: prefix caching off, chunked prefill always on
        yield "flipped", on(plan, backend, enable_prefix_caching=not plan.enable_prefix_caching,
                            enable_chunked_prefill=not plan.enable_chunked_prefill)
    caps = get(backend).capabilities  # MII has no FP8, EP or drafters; Triton's TensorRT-LLM build no EP or drafters: skipped there
    if Quantization.fp8 in caps.quantizations:
        yield "fp8", on(plan, backend, quantization=Quantization.fp8, kv_cache_dtype=KvPrecision.fp8)
    if caps.expert_parallel.supported:
        yield "expert-parallel", on(plan, backend, expert_parallel=True)
    method = {BackendName.tgi: "ngram"}.get(backend, "eagle3")
    if method in caps.speculative_methods:
        yield "speculative", on(plan, backend, speculative={"method": method, "model": "org/drafter",
                                                            "num_speculative_tokens": 3})


def _pairs(words: list[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:]))


def assert_flag_everywhere(art: Artifacts, row, value) -> None:
    argv, docker = list(art.argv), shlex.split(art.docker)
    pod = container(art)
    words = container_words(art)
    if row.where is Where.positional:
        for place in (argv, docker, words):
            assert str(value) in place
    elif row.where is Where.argv:
        if value is True or value is False:
            flag = row.name if value else "--no-" + row.name[2:]
            for place in (argv, docker, words):
                assert flag in place, f"{flag} missing"
        else:
            for place in (argv, docker, words):
                assert (row.name, str(value)) in _pairs(place), f"{row.name} {value} missing"
    elif row.where is Where.env:
        assert art.env[row.name] == str(value)
        assert f"{row.name}={value}" in docker
        assert {"name": row.name, "value": str(value)} in pod["env"]
    elif art.backend in (BackendName.triton_trtllm, BackendName.triton_vllm):  # a model repository, parsed
        assert triton_repo.value(art, row.name) == value, row.name
    else:  # config file: in the files, in the ConfigMap, and the file is named in every command line
        (name, text), = art.files.items()
        assert get_path(yaml.safe_load(text), row.name) == value
        configmap = yaml.safe_load(art.k8s["configmap.yaml"])
        assert get_path(yaml.safe_load(configmap["data"][name]), row.name) == value
        for place in (argv, docker, words):
            assert any(w.endswith(name) for w in place)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_planned_field_appears_in_argv_docker_and_k8s(backend, h100x4):
    req, base = h100x4
    impl = get(backend)
    for label, plan in variants(base, backend):
        assert unsupported(backend, plan, req.hw.gpu) is None, label
        art = impl.render(plan, "llama3-70b")
        for field in PLANNED:
            rows = impl.table.rows_for(field)
            emitted = [(r, r.value(plan)) for r in rows]
            emitted = [(r, v) for r, v in emitted if v is not None and not (v is False and r.where is Where.argv
                                                                              and not r.negatable)]
            if not emitted:  # nothing passed: the table must say why
                why = impl.table.no_flag_for(field) or next((r for r in rows if r.default_note), None)
                assert why is not None, f"{backend.value}: {field}={getattr(plan, field)!r} silently dropped"
                continue
            for row, value in emitted:
                assert_flag_everywhere(art, row, value)


# The same thing said per engine, with the engine's own names (round trip for the plan's numbers).
LIMIT_FLAGS = {
    BackendName.vllm: {"max_num_seqs": "--max-num-seqs", "max_model_len": "--max-model-len",
                       "max_num_batched_tokens": "--max-num-batched-tokens", "tensor_parallel": "--tensor-parallel-size",
                       "gpu_memory_utilization": "--gpu-memory-utilization"},
    BackendName.trtllm: {"max_num_seqs": "--max_batch_size", "max_model_len": "--max_seq_len",
                         "max_num_batched_tokens": "--max_num_tokens", "tensor_parallel": "--tp_size"},
    BackendName.tgi: {"max_num_seqs": "--max-batch-size", "max_model_len": "--max-total-tokens",
                      "max_num_batched_tokens": "--max-batch-prefill-tokens", "tensor_parallel": "--num-shard",
                      "gpu_memory_utilization": "--cuda-memory-fraction"},
    BackendName.sglang: {"max_num_seqs": "--max-running-requests", "max_model_len": "--context-length",
                         "max_num_batched_tokens": "--max-prefill-tokens", "tensor_parallel": "--tp-size",
                         "gpu_memory_utilization": "--mem-fraction-static"},
    BackendName.mii: {},  # the limits live in mii_config.json (tests/test_backends_mii.py)
    # Triton: no limit in the argv; the model repository carries them (tests/test_backends_triton.py)
    BackendName.triton_trtllm: {}, BackendName.triton_vllm: {},
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_planned_limits_equal_the_engine_flags(backend, h100x4):
    plan = on(h100x4[1], backend)
    art = get(backend).render(plan, "llama3-70b")
    for field, flag in LIMIT_FLAGS[backend].items():
        want = str(getattr(plan, field))
        for place in (list(art.argv), shlex.split(art.docker), container_words(art)):
            assert (flag, want) in _pairs(place), f"{flag} {want}"
    if backend is BackendName.trtllm:
        extra = yaml.safe_load(art.files["extra_llm_api_options.yaml"])
        assert extra["kv_cache_config"]["free_gpu_memory_fraction"] == plan.gpu_memory_utilization
        assert any("free_gpu_memory_fraction" in w and "profiling run leaves" in w for w in art.warnings)


# --- deployment shape ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_deployment_has_replicas_gpus_probes_shm_and_secret(backend, h100x4):
    plan = on(h100x4[1], backend, replicas=3)
    art = get(backend).render(plan, "llama3-70b")
    deploy = yaml.safe_load(art.k8s["deployment.yaml"])
    assert deploy["spec"]["replicas"] == 3
    c = container(art)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == plan.gpus_per_replica
    assert c["readinessProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == art.health_path
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in deploy["spec"]["template"]["spec"]["volumes"]
    token = next(e for e in c["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["key"] == "HF_TOKEN" and "value" not in token
    service = yaml.safe_load(art.k8s["service.yaml"])
    assert service["spec"]["ports"][0]["port"] == art.port


def test_vllm_cpu_plan_sizes_kv_by_env_and_binds_one_core_per_rank():
    req = request_for("model=llama3.2-1b", "hw=cpu", "target=best-effort", "hw.gpus_per_node=2", "plan.tensor_parallel=2",
                      "plan.kv_cache_space_gib=1")
    plan = compiled_or_closest(req).plan
    assert plan.gpu_memory_utilization is None
    assert unsupported(BackendName.vllm, plan, req.hw.gpu) is None
    art = get(BackendName.vllm).render(plan, "llama3-2-1b-vllm")
    assert art.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert art.env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert "--gpu-memory-utilization" not in art.argv
    assert "--gpus" not in art.docker and "vllm-openai-cpu" in art.image
    assert "resources" not in container(art)


# --- the capability matrix says why not ----------------------------------------------------------------------

UNSUPPORTED = [
    pytest.param(BackendName.trtllm, ("model=llama3-70b", "hw=a100x4"), {"quantization": Quantization.fp8},
                 "quantization=fp8", "support-matrix.md", id="trtllm-fp8-on-a100"),
    pytest.param(BackendName.vllm, ("model=llama3-70b", "hw=v100x8"), {"quantization": Quantization.fp8},
                 "quantization=fp8", "fp8.py", id="vllm-fp8-on-v100"),
    pytest.param(BackendName.tgi, ("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16"), {},
                 "pipeline_parallel=2", "main.rs", id="tgi-has-no-pipeline-parallel"),
    pytest.param(BackendName.tgi, ("model=llama3-70b", "hw=h100x4"), {"dtype": Dtype.float32},
                 "dtype=float32", "matrix", id="tgi-has-no-float32"),
    pytest.param(BackendName.trtllm, ("model=llama3-70b", "hw=h100x4"), {"data_parallel": 2},
                 "data_parallel=2 needs tensor_parallel=1", "mapping.py", id="trtllm-attention-dp-at-tp-1-only"),
    pytest.param(BackendName.tgi, ("model=llama3-70b", "hw=h100x4"), {"data_parallel": 2, "tensor_parallel": 2},
                 "data_parallel=2", "main.rs", id="tgi-has-no-data-parallel"),
    pytest.param(BackendName.sglang, ("model=llama3-70b", "hw=h100x4"),
                 {"speculative": {"method": "suffix", "num_speculative_tokens": 3}},
                 "'suffix'", "speculative_methods", id="sglang-unknown-speculative-method"),
    pytest.param(BackendName.tgi, ("model=llama3-70b", "hw=h100x4"),
                 {"enable_chunked_prefill": False, "max_model_len": 16384, "max_num_batched_tokens": 8192},
                 "chunked prefill", "backends/v3/src/main.rs:188", id="tgi-prefill-budget-below-prompt"),
]


@pytest.mark.parametrize("backend,overrides,changes,names,source", UNSUPPORTED)
def test_unsupported_names_the_capability_and_its_source(backend, overrides, changes, names, source):
    req = request_for(*overrides)
    plan = on(compiled_or_closest(req).plan, backend, **changes)
    reason = unsupported(backend, plan, req.hw.gpu)
    assert reason is not None and names in reason and source in reason
    assert "capability:" in reason


def test_fp8_on_ada_and_hopper_is_supported_everywhere_but_tgi_on_ada_and_mii():
    req = request_for("model=llama3-8b", "hw=l40sx1")
    plan = compiled_or_closest(req).plan
    fp8 = dict(quantization=Quantization.fp8)
    assert [b.value for b in ADAPTERS if unsupported(b, on(plan, b, **fp8), req.hw.gpu)] == ["tgi", "mii"]


def test_render_refuses_an_unsupported_plan(h100x4, two_nodes):
    from planner.errors import InputError
    from planner.render import rendered

    req, plan = two_nodes
    compiled = dataclasses.replace(compiled_or_closest(req), plan=on(plan, BackendName.tgi))
    with pytest.raises(InputError, match=r"backend=tgi: cannot render.*pipeline_parallel=2.*Fix:"):
        rendered(compiled, req)


# --- secrets -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_secrets_never_appear_in_any_artifact(backend, h100x4, two_nodes, monkeypatch, tmp_path):
    from planner.document import plain
    from planner.render import rendered, write

    monkeypatch.setenv("HF_TOKEN", "hf_secret123")
    for req, plan in (h100x4, two_nodes):
        plan = on(plan, backend)
        if unsupported(backend, plan, req.hw.gpu):
            continue
        compiled = dataclasses.replace(compiled_or_closest(req), plan=plan)
        launch = rendered(compiled, req).launch
        assert "hf_secret123" not in yaml.safe_dump(plain(launch))
        for path in write(launch, tmp_path / backend.value):
            assert "hf_secret123" not in path.read_text()
        assert launch.env["HF_TOKEN"] == "${HF_TOKEN}"


# --- KV capacity from the startup log -------------------------------------------------------------------------

KV_LINES = [
    # vllm v1/core/kv_cache_utils.py:2327 (the line measured on this machine, reference/backends.md)
    pytest.param(BackendName.vllm, "INFO 11-25 [kv_cache_utils.py:2327] CPU KV cache size: 1,048,576 tokens, "
                 "Maximum concurrency for 2,048 tokens per request: 512.00x", 1048576, id="vllm-cpu"),
    pytest.param(BackendName.vllm, "GPU KV cache size: 1,164,288 tokens, Maximum concurrency for 8,192 tokens per "
                 "request: 142.12x", 1164288, id="vllm-gpu"),
    # trtllm cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp
    pytest.param(BackendName.trtllm, "[TensorRT-LLM][INFO] [MemUsageChange] Allocated 26.91 GiB for max tokens in "
                 "paged KV cache (220480).", 220480, id="trtllm"),
    # tgi backends/v3/src/lib.rs:137
    pytest.param(BackendName.tgi, "INFO text_generation_router_v3: backends/v3/src/lib.rs:137: Setting max batch "
                 "total tokens to 364176", 364176, id="tgi"),
    # sglang python/sglang/srt/managers/scheduler.py:1227
    pytest.param(BackendName.sglang, "[2026-01-01 00:00:00] max_total_num_tokens=1061834, chunked_prefill_size=8192, "
                 "max_prefill_tokens=16384, max_running_requests=4096, context_len=131072, available_gpu_mem=9.21 GB",
                 1061834, id="sglang"),
]


@pytest.mark.parametrize("backend,line,tokens", KV_LINES)
def test_kv_capacity_is_read_from_the_startup_log(backend, line, tokens):
    impl = get(backend)
    assert impl.kv_cache_tokens("loading weights...\n" + line + "\nserving") == tokens
    assert impl.kv_cache_tokens("loading weights...\n") is None


# --- what the user must know reaches the plan ---------------------------------------------------------------

@pytest.mark.parametrize("backend,says", [
    pytest.param("trtllm", "GUARANTEED_NO_EVICT", id="trtllm-memory-fraction"),
    pytest.param("tgi", "maintenance", id="tgi-maintenance"),
    pytest.param("vllm", None, id="vllm-nothing"),
])
def test_backend_notes_reach_the_plan_document_and_its_table(backend, says):
    from planner import document, present
    from rich.console import Console

    req = request_for("model=llama3-70b", "hw=h100x4", f"backend={backend}")
    compiled = compiled_or_closest(req)
    notes = get(compiled.plan.backend).notes(compiled.plan)
    assert notes == get(compiled.plan.backend).render(compiled.plan, "x").warnings  # one truth for both
    doc = document.build(req, compiled)
    assert set(notes) <= set(doc["notes"])
    if says is None:
        assert notes == ()
        return
    assert any(says in n for n in doc["notes"])
    console = Console(record=True, width=400)
    present.show(req, compiled, console=console)
    assert says in " ".join(console.export_text().split())

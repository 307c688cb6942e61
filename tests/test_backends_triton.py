"""Triton model repositories read the way Triton and its backends read them: every config.pbtxt through Triton's own
ModelConfig message (tritonclient's compiled model_config.proto), the vLLM backend's model.json through vLLM's
AsyncEngineArgs (what vllm_backend src/model.py builds from it), the TensorRT-LLM ensemble against what TensorRT-LLM's
models look up (tests/data/triton/trtllm-model-reads.yaml, listed from their source) and against the wiring rules
Triton applies to an ensemble when it loads it."""

import json
import shlex
from pathlib import Path

import pytest
import triton_repo
import yaml
from conftest import on

from backends import get, triton, triton_trtllm
from planner.specs import BackendName, Dtype, KvPrecision, Quantization

TT, TV = BackendName.triton_trtllm, BackendName.triton_vllm
READS = yaml.safe_load((Path(__file__).parent / "data/triton/trtllm-model-reads.yaml").read_text())["models"]
MODEL_JSON = "model_repository/vllm_model/1/model.json"
# A plan with distinct limits, so a value found in a file can only have come from its own field.
LIMITS = dict(max_num_seqs=97, max_model_len=12345, max_num_batched_tokens=4321, gpu_memory_utilization=0.87,
              enable_prefix_caching=True, enable_chunked_prefill=True, dtype=Dtype.bf16)


def configs(art) -> dict:
    """model folder -> its parsed config.pbtxt (every config.pbtxt of the repository)."""
    return {path.split("/")[1]: triton_repo.model_config(text) for path, text in art.files.items()
            if path.endswith("/config.pbtxt")}


def names(tensors) -> set:
    return {t.name for t in tensors}


@pytest.mark.parametrize("backend", [TT, TV], ids=lambda b: b.value)
def test_every_config_pbtxt_parses_as_model_config(backend, h100x4):
    art = get(backend).render(on(h100x4[1], backend, **LIMITS), "t")
    found = configs(art)
    assert set(found) == ({"ensemble", "preprocessing", "tensorrt_llm", "postprocessing"} if backend is TT
                          else {"vllm_model"})
    for model, cfg in found.items():
        assert cfg.name in ("", model), "a config's name is its folder's (Triton refuses a mismatch)"
        assert f"model_repository/{model}/1/" in " ".join(art.files) or model != "ensemble", "version folder 1/"


def test_server_command_ports_health_and_metrics(h100x4):
    for backend in (TT, TV):
        art = get(backend).render(on(h100x4[1], backend, tensor_parallel=1), "t")
        assert art.argv == ("tritonserver", "--model-repository=model_repository", "--http-port=8000",
                            "--grpc-port=8001", "--metrics-port=8002")
        assert (art.port, art.health_path, art.metrics_port, art.metrics_path) == (8000, "/v2/health/ready", 8002,
                                                                                   "/metrics")
        docker = shlex.split(art.docker)
        assert art.image in docker and {"8000:8000", "8002:8002"} <= set(docker), "HTTP and metrics published"
        assert f"--model-repository=/etc/planner/{triton.REPO}" in art.docker or backend is TT
        pod = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": 8002} in pod["ports"]
        assert pod["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        service = yaml.safe_load(art.k8s["service.yaml"])
        assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8002}


def test_multi_gpu_trtllm_runs_one_mpi_rank_per_gpu(h100x4):
    art = get(TT).render(on(h100x4[1], TT, tensor_parallel=4), "t")
    words = list(art.argv)
    assert words[:2] == ["mpirun", "--allow-run-as-root"] and words.count("tritonserver") == 4
    assert words.count("--load-model=tensorrt_llm") == 3, "ranks 1..3 load only the engine (launch_triton_server.py)"


# --- Triton's vLLM backend --------------------------------------------------------------------------------------------

def test_vllm_config_is_what_the_vllm_backend_requires(h100x4):
    cfg = configs(get(TV).render(on(h100x4[1], TV, **LIMITS), "t"))["vllm_model"]
    assert cfg.backend == "vllm" and cfg.max_batch_size == 0, "vllm_backend: Triton batching off, vLLM batches"
    assert cfg.model_transaction_policy.decoupled
    (group,) = cfg.instance_group
    assert group.count == 1 and group.kind == group.KIND_MODEL, "multi-GPU engines need KIND_MODEL"
    assert triton_repo.parameters(cfg)["REPORT_CUSTOM_METRICS"] == "true"


@pytest.fixture(scope="module")
def engine_args():
    pytest.importorskip("vllm")
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs


VLLM_CASES = [
    pytest.param(LIMITS, id="limits"),
    pytest.param(dict(quantization=Quantization.fp8, kv_cache_dtype=KvPrecision.fp8), id="fp8"),
    pytest.param(dict(speculative={"method": "eagle3", "model": "org/drafter", "num_speculative_tokens": 3}),
                 id="speculative"),
    pytest.param(dict(max_loras=4, max_lora_rank=32), id="lora"),
]


@pytest.mark.parametrize("changes", VLLM_CASES)
def test_model_json_round_trips_through_vllm_engine_args(changes, engine_args, h100x4):
    """vllm_backend _init_engine_args: AsyncEngineArgs(**model.json). Every key must be a field and keep its value,
    and the engine args equal those backend=vllm renders for the same plan as `vllm serve` flags."""
    import dataclasses

    plan = on(h100x4[1], TV, **changes)
    doc = json.loads(get(TV).render(plan, "t").files[MODEL_JSON])
    args = engine_args(**doc)
    assert {k: getattr(args, k) for k in doc} == doc
    assert (args.model, args.tensor_parallel_size, args.max_num_seqs, args.max_model_len) == (
        plan.model_path, plan.tensor_parallel, plan.max_num_seqs, plan.max_model_len)
    assert (args.max_num_batched_tokens, args.gpu_memory_utilization) == (plan.max_num_batched_tokens,
                                                                          plan.gpu_memory_utilization)
    vllm_plan = dataclasses.replace(plan, backend=BackendName.vllm)
    from test_backends_vllm import serve_args, serve_parser  # `vllm serve`'s own parser

    cli = vars(serve_args(serve_parser(), list(get(BackendName.vllm).render(vllm_plan, "t").argv[2:])))
    assert {k: cli[k] for k in doc} == {k: getattr(args, k) for k in doc}, "the same engine as backend=vllm"


# --- TensorRT-LLM's backend -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trtllm(h100x4):
    plan = on(h100x4[1], TT, **LIMITS)
    art = get(TT).render(plan, "t")
    return plan, art, configs(art)


@pytest.mark.parametrize("model", sorted(READS))
def test_trtllm_models_carry_what_their_code_reads(model, trtllm):
    _, _, cfgs = trtllm
    cfg, reads = cfgs[model], READS[model]
    params, inputs, outputs = set(triton_repo.parameters(cfg)), names(cfg.input), names(cfg.output)
    assert set(reads["required_parameters"]) - params == set(), "read without a default: the model would not load"
    assert set(reads["input_configs"]) - inputs == set(), "get_input_config_by_name in initialize()"
    assert set(reads["output_configs"]) - outputs == set(), "get_output_config_by_name in initialize()"
    assert set(reads["sends"]) - outputs == set(), "every tensor a response carries is a declared output"
    assert set(reads["reads"]) - inputs == set(), "every tensor execute() reads is a declared input"
    known = set(reads["required_parameters"]) | set(reads["optional_parameters"]) | set(reads.get("multimodal_only",
                                                                                                   ()))
    assert params - known == set(), "a parameter nobody reads is a typo"


def test_trtllm_ensemble_wiring_is_what_triton_accepts(trtllm):
    """Triton's ensemble checks (ensemble_utils / model_config_utils ValidateEnsembleConfig): each step maps only the
    model's own tensors, with one data type per ensemble tensor; every required input is fed; every internal tensor is
    produced before it is consumed; every ensemble output is produced. Postprocessing raises on any input beyond the
    two it reads, so exactly those are mapped."""
    _, _, cfgs = trtllm
    ens = cfgs["ensemble"]
    dtypes = {t.name: t.data_type for t in ens.input}
    available = set(dtypes)
    for step in ens.ensemble_scheduling.step:
        model = cfgs[step.model_name]
        declared_in = {t.name: t for t in model.input}
        declared_out = {t.name: t for t in model.output}
        assert set(step.input_map) <= set(declared_in) and set(step.output_map) <= set(declared_out), step.model_name
        assert {n for n, t in declared_in.items() if not t.optional} <= set(step.input_map), step.model_name
        assert set(step.input_map.values()) <= available, f"{step.model_name} reads a tensor not yet produced"
        for key, tensor in step.input_map.items():
            assert dtypes[tensor] == declared_in[key].data_type, f"{step.model_name}.{key} <- {tensor}"
        for key, tensor in step.output_map.items():
            dtypes.setdefault(tensor, declared_out[key].data_type)
            assert dtypes[tensor] == declared_out[key].data_type, f"{step.model_name}.{key} -> {tensor}"
            available.add(tensor)
        if step.model_name == "postprocessing":
            assert set(step.input_map) == set(READS["postprocessing"]["reads"])
    for out in ens.output:
        assert out.name in available and dtypes[out.name] == out.data_type, out.name


def test_trtllm_planned_limits_where_the_backend_reads_them(trtllm):
    plan, art, cfgs = trtllm
    assert {m: c.max_batch_size for m, c in cfgs.items()} == dict.fromkeys(cfgs, 97)
    params = triton_repo.parameters(cfgs["tensorrt_llm"])
    assert (params["kv_cache_free_gpu_mem_fraction"], params["enable_kv_cache_reuse"],
            params["enable_chunked_context"]) == ("0.87", "true", "true")
    assert params["gpt_model_type"] == "inflight_fused_batching" and cfgs["tensorrt_llm"].backend == "tensorrtllm"
    assert cfgs["tensorrt_llm"].model_transaction_policy.decoupled, "streaming needs decoupled mode"
    assert list(cfgs["tensorrt_llm"].dynamic_batching.preferred_batch_size) == [97]
    build = triton_repo.build_flags(art.files["build_engine.sh"])
    assert {k: build[k] for k in ("--max_batch_size", "--max_seq_len", "--max_input_len", "--max_num_tokens",
                                  "--tp_size")} == {"--max_batch_size": "97", "--max_seq_len": "12345",
                                                    "--max_input_len": "12344", "--max_num_tokens": "4321",
                                                    "--tp_size": "4"}
    assert build["--output_dir"] == params["gpt_model_path"] == triton_trtllm.engine_dir("t"), "serves what it builds"
    tokenizers = {triton_repo.parameters(cfgs[m])["tokenizer_dir"] for m in ("preprocessing", "postprocessing")}
    assert tokenizers == {plan.model_path}


@pytest.mark.parametrize("dtype, expected", [(Dtype.bf16, "TYPE_BF16"), (Dtype.fp16, "TYPE_FP16")])
def test_trtllm_compute_typed_tensors_follow_the_plan_dtype(dtype, expected, h100x4):
    from tritonclient.grpc import model_config_pb2

    cfgs = configs(get(TT).render(on(h100x4[1], TT, dtype=dtype), "t"))
    table = {t.name: t.data_type for t in cfgs["tensorrt_llm"].input}
    assert table["prompt_embedding_table"] == model_config_pb2.DataType.Value(expected)
    assert {t.name: t.data_type for t in cfgs["tensorrt_llm"].output}["generation_logits"] == \
        model_config_pb2.DataType.Value("TYPE_FP32")


def test_trtllm_refuses_a_pre_quantized_checkpoint(h100x4):
    plan = on(h100x4[1], TT, quantization_method="compressed-tensors")
    reason = get(TT).check(plan, None)
    assert reason and "backend=trtllm" in reason and "compressed-tensors" in reason

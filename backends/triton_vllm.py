"""Triton Inference Server with its vLLM backend: a model repository `model_repository/vllm_model/` whose
config.pbtxt selects `backend: "vllm"` and whose `1/model.json` holds the vLLM engine arguments of the plan.

Checked against triton-inference-server/vllm_backend at 8de0c148 (2026-01-09): src/model.py auto_complete_config
(decoupled transaction policy and `max_batch_size` 0: "Disabling batching in Triton, let vLLM handle the batching on
its own"), _init_engine_args (model.json beside the model, `AsyncEngineArgs(**json)`: every key is an engine-args
field), _validate_device_config (multi-GPU models need `KIND_MODEL`); samples/model_repository/vllm_model; README
(REPORT_CUSTOM_METRICS puts vLLM's metrics on Triton's metrics port). The engine args are vLLM 0.32.0's
(EngineArgs field names, as backends/vllm.py renders the same plan as flags); tests round-trip model.json through
vLLM's AsyncEngineArgs.
"""

import dataclasses
import json
from typing import Optional

from backends import triton
from backends import vllm as vllm_adapter
from backends.base import Artifacts, Metrics, Precision, Support
from backends.server import ApiKey, CONFIG_DIR, Server, assemble
from backends.table import Flag, FlagTable, NoFlag, Where, apply, enum_value, quantization_value
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

VERSION = f"Triton {triton.RELEASE} vLLM backend (engine args of vLLM 0.32.0)"
MODEL = "vllm_model"
MODEL_JSON = f"{triton.REPO}/{MODEL}/1/model.json"
CONFIG = f"{triton.REPO}/{MODEL}/config.pbtxt"
SRC = "vllm_backend src/model.py"
ARGS = "vllm engine/arg_utils.py EngineArgs"


def _value(field: str):
    return lambda p: getattr(p, field)


TABLE = FlagTable(
    flags=(
        Flag("model_path", "model", Where.config, _value("model_path"), f"{ARGS}.model; {SRC} _init_engine_args"),
        Flag("tensor_parallel", "tensor_parallel_size", Where.config, _value("tensor_parallel"),
             f"{ARGS}.tensor_parallel_size"),
        Flag("pipeline_parallel", "pipeline_parallel_size", Where.config, _value("pipeline_parallel"),
             f"{ARGS}.pipeline_parallel_size"),
        Flag("expert_parallel", "enable_expert_parallel", Where.config, _value("expert_parallel"),
             f"{ARGS}.enable_expert_parallel"),
        Flag("dtype", "dtype", Where.config, enum_value("dtype", vllm_adapter.DTYPES), f"{ARGS}.dtype"),
        Flag("quantization", "quantization", Where.config, quantization_value(vllm_adapter.QUANT),
             f"{ARGS}.quantization", "none, or a pre-quantized checkpoint: no key; vLLM reads the checkpoint's "
                                     "quantization_config"),
        Flag("kv_cache_dtype", "kv_cache_dtype", Where.config, enum_value("kv_cache_dtype", vllm_adapter.KV),
             f"{ARGS}.kv_cache_dtype"),
        Flag("max_model_len", "max_model_len", Where.config, _value("max_model_len"), f"{ARGS}.max_model_len"),
        Flag("max_num_seqs", "max_num_seqs", Where.config, _value("max_num_seqs"), f"{ARGS}.max_num_seqs"),
        Flag("max_num_batched_tokens", "max_num_batched_tokens", Where.config, _value("max_num_batched_tokens"),
             f"{ARGS}.max_num_batched_tokens"),
        Flag("gpu_memory_utilization", "gpu_memory_utilization", Where.config, _value("gpu_memory_utilization"),
             f"{ARGS}.gpu_memory_utilization"),
        Flag("enable_prefix_caching", "enable_prefix_caching", Where.config, _value("enable_prefix_caching"),
             f"{ARGS}.enable_prefix_caching"),
        Flag("enable_chunked_prefill", "enable_chunked_prefill", Where.config, _value("enable_chunked_prefill"),
             f"{ARGS}.enable_chunked_prefill"),
        Flag("speculative", "speculative_config", Where.config, lambda p: dict(p.speculative) if p.speculative else None,
             f"{ARGS}.speculative_config (a dict, vLLM's SpeculativeConfig names)", "None: no speculative decoding"),
        Flag("max_loras", "enable_lora", Where.config, lambda p: True if p.max_loras else None, f"{ARGS}.enable_lora",
             "no adapters: LoRA stays off (EngineArgs.enable_lora default False)"),
        Flag("max_loras", "max_loras", Where.config, lambda p: p.max_loras or None, f"{ARGS}.max_loras",
             "no adapters: the key is left out"),
        Flag("max_lora_rank", "max_lora_rank", Where.config, lambda p: p.max_lora_rank if p.max_loras else None,
             f"{ARGS}.max_lora_rank", "no adapters: the key is left out"),
    ),
    no_flag=(
        NoFlag("stream_interval", "not rendered by this adapter: every token is streamed (plans with stream_interval > 1 render for vLLM or SGLang)"),
        NoFlag("backend", "selects this adapter"),
        NoFlag("quantization_method", "vLLM reads a pre-quantized checkpoint's quantization_config itself (as for "
                                      "backend=vllm); set, model.json carries no quantization key"),
        NoFlag("autoscaling", "deployment shape: a KEDA ScaledObject on the replicas (backends/autoscale_k8s.py)"),
        NoFlag("data_parallel", "one vLLM engine per Triton model instance here: scale with replicas",
               f"{SRC} _validate_device_config (KIND_MODEL)"),
        NoFlag("nodes", "this adapter renders single-node model repositories (vLLM's Ray executor is not set up "
                        "inside Triton here)"),
        NoFlag("kv_cache_space_gib", "CPU plans only; Triton's vLLM container is a CUDA build"),
        NoFlag("disaggregation", "not rendered for Triton (capability disaggregation: unsupported here)"),
        NoFlag("replicas", "deployment shape: Deployment spec.replicas"),
        NoFlag("gpus_per_replica", "deployment shape: nvidia.com/gpu per pod"),
    ),
)

_CUDA_ONLY = ("Triton's vLLM container (nvcr.io/nvidia/tritonserver:<yy.mm>-vllm-python-py3) is a CUDA build; use "
              "backend=vllm for ROCm or CPU")
CAPABILITIES = dataclasses.replace(
    vllm_adapter.CAPABILITIES,
    backend=BackendName.triton_vllm,
    version=VERSION,
    gpu=Precision(vllm_adapter.CAPABILITIES.gpu.min_compute_capability,
                  f"vLLM's GPU support ({vllm_adapter.CAPABILITIES.gpu.source}) in Triton's CUDA container",
                  rocm_source=_CUDA_ONLY),
    data_parallel=Support(False, f"{SRC} _validate_device_config", "one engine per model instance; use replicas"),
    multi_node=Support(False, "this adapter", "single-node model repositories only; use backend=vllm with Ray"),
    disaggregation=Support(False, "this adapter", "one vLLM engine per model repository; prefill/decode pools with a "
                                                  "KV connector render for backend=vllm"),
)

METRICS = dataclasses.replace(
    vllm_adapter.METRICS,
    source="vllm_backend README 'Triton Metrics': vLLM's own metric names on Triton's metrics port 8002, with "
           "REPORT_CUSTOM_METRICS set in config.pbtxt (src/utils/metrics.py)")

API_KEY = ApiKey(None, "tritonserver's HTTP endpoint has no bearer-token option in this adapter (Triton's "
                       "--http-restricted-api takes a header key:value pair per API group, not rendered here)")


def config_pbtxt(plan: Plan) -> str:
    """The model's config.pbtxt: the vLLM backend, Triton batching off (vLLM batches), decoupled responses for
    streaming, one KIND_MODEL instance (vLLM places its own GPUs), vLLM's metrics reported."""
    return triton.pbtxt({
        "backend": "vllm",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "instance_group": [{"count": 1, "kind": triton.Sym("KIND_MODEL")}],
        "parameters": triton.parameters({"REPORT_CUSTOM_METRICS": True}),
    })


class TritonVllmBackend:
    name = BackendName.triton_vllm
    capabilities = CAPABILITIES
    table = TABLE
    image = triton.IMAGE_VLLM
    port = triton.HTTP_PORT
    health_path = triton.HEALTH_PATH
    metrics_path = triton.METRICS_PATH
    metrics = METRICS
    warning: Optional[str] = None

    def render(self, plan: Plan, name: str, api_key_env: Optional[str] = None,
               gpu: Optional[GpuSpec] = None) -> Artifacts:
        engine_args = apply(TABLE, plan).config
        files = ((CONFIG, config_pbtxt(plan)), (MODEL_JSON, json.dumps(engine_args, indent=2, sort_keys=True) + "\n"))
        server = Server(
            backend=self.name, image=triton.IMAGE_VLLM, command=(),
            container_command=(), args=triton.serve_command(triton.REPO),
            container_args=triton.serve_command(f"{CONFIG_DIR}/{triton.REPO}"), env=(), files=files,
            port=triton.HTTP_PORT, health_path=self.health_path, metrics_path=self.metrics_path,
            metrics_port=triton.METRICS_PORT,
            warnings=self.notes(plan), api_key=API_KEY)
        return assemble(server, plan, name, api_key_env)

    def notes(self, plan: Plan) -> tuple[str, ...]:
        return (triton.NOTE_METRICS,)

    def check(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        return vllm_adapter.BACKEND.check(plan, gpu)

    def kv_cache_tokens(self, log: str) -> Optional[int]:
        return vllm_adapter.BACKEND.kv_cache_tokens(log)  # the same engine logs the same line


BACKEND = TritonVllmBackend()

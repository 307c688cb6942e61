"""Triton Inference Server with TensorRT-LLM's backend: the inflight-batching ensemble (preprocessing ->
tensorrt_llm -> postprocessing) as a model repository, and build_engine.sh that builds the TensorRT engine it
serves with the plan's limits.

Checked against NVIDIA/TensorRT-LLM's triton_backend/ (the Triton backend moved into the TensorRT-LLM repository):
all_models/inflight_batcher_llm/{ensemble,preprocessing,tensorrt_llm,postprocessing}/config.pbtxt (tensor names,
types and the `parameters` keys the C++ backend reads: gpt_model_type = batching strategy, gpt_model_path,
kv_cache_free_gpu_mem_fraction, enable_kv_cache_reuse, enable_chunked_context, batch_scheduler_policy;
model_transaction_policy.decoupled for streaming), scripts/launch_triton_server.py (one MPI rank per GPU), and
tensorrt_llm/commands/build.py (trtllm-build: --max_batch_size, --max_input_len, --max_seq_len, --max_num_tokens,
--kv_cache_type, plugin --use_paged_context_fmha, which KV-cache reuse and chunked context need). The engine's limits
are fixed when it is built, so every planned limit is both a build flag and a config.pbtxt value.
"""

import dataclasses
import functools
import shlex
from importlib import resources
from typing import Optional

import yaml

from backends import triton
from backends import trtllm as trtllm_adapter
from backends.base import Artifacts, Precision, Support
from backends.server import ApiKey, CONFIG_DIR, Server, assemble
from backends.table import Flag, FlagTable, NoFlag, Where, apply, enum_value
from planner.plan import Plan
from planner.specs import BackendName, Dtype, GpuSpec, KvPrecision, Quantization

TAG = "v1.2.1"  # the TensorRT-LLM tree the repository's python models and convert scripts come from
VERSION = f"Triton {triton.RELEASE} TensorRT-LLM backend (TensorRT-LLM {TAG})"
IB = "triton_backend/all_models/inflight_batcher_llm"
BUILD = "tensorrt_llm/commands/build.py"
WORK_REPO = "/tmp/model_repository"  # in containers: the mounted repository is read-only; build_engine.sh copies it here
ENGINE_ROOT = "/root/.cache/huggingface/trtllm-engines"  # on the HF cache volume: built once, kept across restarts
DTYPES = {Dtype.bf16: "bfloat16", Dtype.fp16: "float16", Dtype.float32: "float32"}
# model_type -> examples/models/core/<family>/convert_checkpoint.py (families present in the TensorRT-LLM tree)
FAMILIES = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen", "qwen3": "qwen",
            "gemma": "gemma", "gemma2": "gemma", "phi3": "phi"}
MODELS = ("preprocessing", "tensorrt_llm", "postprocessing")


def _value(field: str):
    return lambda p: getattr(p, field)


TABLE = FlagTable(
    flags=(
        Flag("model_path", "build.model_dir", Where.config, _value("model_path"), "convert_checkpoint.py --model_dir"),
        Flag("model_path", "tokenizer_dir", Where.config, _value("model_path"), f"{IB}/preprocessing tokenizer_dir"),
        Flag("tensor_parallel", "build.tp_size", Where.config, _value("tensor_parallel"),
             "convert_checkpoint.py --tp_size (the checkpoint's mapping; one MPI rank per GPU at serve time)"),
        Flag("pipeline_parallel", "build.pp_size", Where.config, _value("pipeline_parallel"),
             "convert_checkpoint.py --pp_size"),
        Flag("dtype", "build.dtype", Where.config, enum_value("dtype", DTYPES), "convert_checkpoint.py --dtype"),
        Flag("quantization", "build.qformat", Where.config,
             lambda p: "fp8" if p.quantization is Quantization.fp8 else None,
             "examples/quantization/quantize.py --qformat fp8", "none: convert_checkpoint.py, no quantization"),
        Flag("kv_cache_dtype", "build.kv_cache_dtype", Where.config,
             lambda p: "fp8" if p.kv_cache_dtype is KvPrecision.fp8 else None,
             "examples/quantization/quantize.py --kv_cache_dtype fp8", "the model dtype"),
        Flag("max_model_len", "build.max_seq_len", Where.config, _value("max_model_len"), f"{BUILD} --max_seq_len"),
        Flag("max_model_len", "build.max_input_len", Where.config, lambda p: p.max_model_len - 1,
             f"{BUILD} --max_input_len (the longest prompt leaves room for one token)"),
        Flag("max_num_seqs", "build.max_batch_size", Where.config, _value("max_num_seqs"), f"{BUILD} --max_batch_size"),
        Flag("max_num_seqs", "max_batch_size", Where.config, _value("max_num_seqs"),
             f"{IB}/*/config.pbtxt max_batch_size (Triton's batch of each model)"),
        Flag("max_num_batched_tokens", "build.max_num_tokens", Where.config, _value("max_num_batched_tokens"),
             f"{BUILD} --max_num_tokens"),
        Flag("gpu_memory_utilization", "kv_cache_free_gpu_mem_fraction", Where.config,
             _value("gpu_memory_utilization"), f"{IB}/tensorrt_llm/config.pbtxt kv_cache_free_gpu_mem_fraction"),
        Flag("enable_prefix_caching", "enable_kv_cache_reuse", Where.config, _value("enable_prefix_caching"),
             f"{IB}/tensorrt_llm/config.pbtxt enable_kv_cache_reuse"),
        Flag("enable_chunked_prefill", "enable_chunked_context", Where.config, _value("enable_chunked_prefill"),
             f"{IB}/tensorrt_llm/config.pbtxt enable_chunked_context"),
    ),
    no_flag=(
        NoFlag("backend", "selects this adapter"),
        NoFlag("quantization_method", "pre-quantized checkpoints are refused (check): build_engine.sh converts "
                                      "unquantized weights or quantizes them to fp8 itself"),
        NoFlag("autoscaling", "deployment shape: a KEDA ScaledObject on the replicas (backends/autoscale_k8s.py)"),
        NoFlag("expert_parallel", "not rendered for the engine build (moe_ep_size); use backend=trtllm"),
        NoFlag("data_parallel", "one engine per Triton server: scale with replicas"),
        NoFlag("nodes", "single-node repositories only (multi-node needs MPI across hosts)"),
        NoFlag("speculative", "speculative decoding engines (draft/Medusa/EAGLE builds) are not rendered here"),
        NoFlag("stream_interval", "not rendered by this adapter: every token is streamed (plans with stream_interval > 1 render for vLLM or SGLang)"),
        NoFlag("max_loras", "LoRA engines (--lora_plugin) are not rendered here; plans with max_loras > 0 render for "
                            "vLLM"),
        NoFlag("max_lora_rank", "LoRA engines are not rendered here"),
        NoFlag("kv_cache_space_gib", "CPU plans only; TensorRT-LLM has no CPU build"),
        NoFlag("disaggregation", "not rendered for Triton (capability disaggregation: unsupported here)"),
        NoFlag("replicas", "deployment shape: Deployment spec.replicas"),
        NoFlag("gpus_per_replica", "deployment shape: nvidia.com/gpu per pod"),
    ),
)

_T = trtllm_adapter.CAPABILITIES
CAPABILITIES = dataclasses.replace(
    _T,
    backend=BackendName.triton_trtllm,
    version=VERSION,
    quantizations={q: p for q, p in _T.quantizations.items() if q is Quantization.fp8},
    data_parallel=Support(False, "this adapter", "one engine per Triton server (no attention DP build): use replicas"),
    expert_parallel=Support(False, "this adapter", "the engine build here renders no --moe_ep_size"),
    multi_node=Support(False, "this adapter", "single-node repositories; multi-node TensorRT-LLM runs under MPI"),
    speculative_methods={},
    lora=Support(False, "this adapter", "no LoRA engine build rendered"),
)


def engine_dir(name: str) -> str:
    return f"{ENGINE_ROOT}/{name}"


# The models' tensors and the ensemble's wiring, as upstream declares them (conf/triton/trtllm-ensemble.yaml).
INTERFACE = "trtllm-ensemble.yaml"
LOGITS_TYPE = "TYPE_FP32"  # logits_datatype in TensorRT-LLM's docs/source/.../triton fill_template examples
COMPUTE_TYPES = {Dtype.bf16: "TYPE_BF16", Dtype.fp16: "TYPE_FP16", Dtype.float32: "TYPE_FP32"}
# preprocessing_instance_count / postprocessing_instance_count of upstream's quick start (fill_template ... :1); the
# tokenizers run on CPU beside the engine, one instance each
TOKENIZER_INSTANCES = 1
EXECUTOR_WORKER = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"  # upstream tensorrt_llm/config.pbtxt


@functools.lru_cache(maxsize=1)
def interface() -> dict:
    return yaml.safe_load(resources.files("conf").joinpath("triton", INTERFACE).read_text())


def _tensors(specs: list, dtype: Dtype) -> list:
    """The tensors of conf/triton/trtllm-ensemble.yaml as ModelInput/ModelOutput messages."""
    types = {"logits": LOGITS_TYPE, "compute": COMPUTE_TYPES[dtype]}
    out = []
    for spec in specs:
        extra = {"allow_ragged_batch": True} if spec.get("ragged") else {}
        if spec.get("scalar"):
            extra["reshape"] = {"shape": []}
        out.append(triton.tensor(spec["name"], types.get(spec["type"], spec["type"]), spec["dims"],
                                 spec.get("optional", False), **extra))
    return out


def _batching(cfg: dict) -> dict:
    return {"preferred_batch_size": [cfg["max_batch_size"]], "max_queue_delay_microseconds": 0}


def _tensorrt_llm(cfg: dict, engine: str, dtype: Dtype) -> str:
    """The C++ backend's model: the engine, in-flight batching, decoupled (streaming) responses, the planned KV-cache
    share, reuse and chunked context; empty strings for the parameters it reads unconditionally but this plan does not
    use (tokenizer_dir, guided decoding: model_instance_state.cc treats "" as unset)."""
    spec = interface()["models"]["tensorrt_llm"]
    return triton.pbtxt({
        "name": "tensorrt_llm", "backend": "tensorrtllm", "max_batch_size": cfg["max_batch_size"],
        "model_transaction_policy": {"decoupled": True},  # streaming: one response per token
        "dynamic_batching": _batching(cfg),
        "input": _tensors(spec["input"], dtype), "output": _tensors(spec["output"], dtype),
        # The C++ backend runs in-process with one instance; its executor owns the GPUs of the MPI world.
        "instance_group": [{"count": 1, "kind": triton.Sym("KIND_CPU")}],
        "parameters": triton.parameters({
            "gpt_model_type": "inflight_fused_batching", "gpt_model_path": engine,
            "kv_cache_free_gpu_mem_fraction": cfg["kv_cache_free_gpu_mem_fraction"],
            "enable_kv_cache_reuse": cfg["enable_kv_cache_reuse"],
            "enable_chunked_context": cfg["enable_chunked_context"],
            "batch_scheduler_policy": "guaranteed_no_evict", "max_beam_width": 1,
            "exclude_input_in_output": True, "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
            "executor_worker_path": EXECUTOR_WORKER,
            "tokenizer_dir": "", "guided_decoding_backend": "", "xgrammar_tokenizer_info_path": ""}),
    })


def _preprocessing(cfg: dict, engine: str, dtype: Dtype) -> str:
    spec = interface()["models"]["preprocessing"]
    return triton.pbtxt({
        "name": "preprocessing", "backend": "python", "max_batch_size": cfg["max_batch_size"],
        "dynamic_batching": _batching(cfg),
        "input": _tensors(spec["input"], dtype), "output": _tensors(spec["output"], dtype),
        # multimodal_model_path "": a text model (preprocessing/1/model.py reads the key unconditionally)
        "parameters": triton.parameters({"tokenizer_dir": cfg["tokenizer_dir"], "add_special_tokens": True,
                                         "multimodal_model_path": "", "gpt_model_path": engine}),
        "instance_group": [{"count": TOKENIZER_INSTANCES, "kind": triton.Sym("KIND_CPU")}],
    })


def _postprocessing(cfg: dict, dtype: Dtype) -> str:
    spec = interface()["models"]["postprocessing"]
    return triton.pbtxt({
        "name": "postprocessing", "backend": "python", "max_batch_size": cfg["max_batch_size"],
        "dynamic_batching": {},
        "input": _tensors(spec["input"], dtype), "output": _tensors(spec["output"], dtype),
        "parameters": triton.parameters({"tokenizer_dir": cfg["tokenizer_dir"], "skip_special_tokens": True}),
        "instance_group": [{"count": TOKENIZER_INSTANCES, "kind": triton.Sym("KIND_CPU")}],
    })


def _ensemble(cfg: dict, dtype: Dtype) -> str:
    spec = interface()["ensemble"]
    steps = [{"model_name": step["model"], "model_version": -1,
              "input_map": [{"key": k, "value": v} for k, v in step["input_map"].items()],
              "output_map": [{"key": k, "value": v} for k, v in step["output_map"].items()]}
             for step in spec["steps"]]
    return triton.pbtxt({
        "name": "ensemble", "platform": "ensemble", "max_batch_size": cfg["max_batch_size"],
        "input": _tensors(spec["input"], dtype), "output": _tensors(spec["output"], dtype),
        "ensemble_scheduling": {"step": steps},
    })


def build_script(build: dict, engine: str) -> str:
    """build_engine.sh: the python models from TensorRT-LLM's tree, then the engine (once) with the plan's limits;
    the convert script is the one of the checkpoint's model_type family (FAMILIES)."""
    src, ckpt = "${TRTLLM_SRC:-/opt/TensorRT-LLM}", "/tmp/trtllm-checkpoint"
    model = build["model_dir"]
    fetch = model if model.startswith("/") else \
        f"$(python3 -c \"from huggingface_hub import snapshot_download; print(snapshot_download('{model}'))\")"
    mapping = ["--tp_size", str(build["tp_size"]), "--pp_size", str(build["pp_size"])]
    if "qformat" in build or "kv_cache_dtype" in build:
        convert = ["python3", f"{src}/examples/quantization/quantize.py", "--model_dir", "$MODEL", "--dtype",
                   build["dtype"], "--qformat", build.get("qformat", "full_prec"), *mapping, "--output_dir", ckpt]
        convert += ["--kv_cache_dtype", build["kv_cache_dtype"]] if "kv_cache_dtype" in build else []
    else:
        convert = ["python3", f"{src}/examples/models/core/$FAMILY/convert_checkpoint.py", "--model_dir", "$MODEL",
                   "--dtype", build["dtype"], *mapping, "--output_dir", ckpt]
    engine_flags = ["trtllm-build", "--checkpoint_dir", ckpt, "--output_dir", engine,
                    "--max_batch_size", str(build["max_batch_size"]), "--max_input_len", str(build["max_input_len"]),
                    "--max_seq_len", str(build["max_seq_len"]), "--max_num_tokens", str(build["max_num_tokens"]),
                    "--kv_cache_type", "paged", "--use_paged_context_fmha", "enable", "--gemm_plugin", "auto",
                    "--workers", str(build["tp_size"] * build["pp_size"])]
    copy = [f'mkdir -p "$REPO/{m}/1" && cp "$SRC/{IB}/{m}/1/model.py" "$REPO/{m}/1/"'
            for m in ("preprocessing", "postprocessing")]
    copy.insert(0, '[ "$RENDERED" -ef "$REPO" ] || { mkdir -p "$REPO" && cp -rL "$RENDERED/." "$REPO/"; }')
    return "\n".join([
        "#!/usr/bin/env bash",
        "# Rendered by the planner: TensorRT-LLM's Triton python models and the TensorRT engine of this plan (built",
        "# once into the HF cache volume; its limits are fixed at build time and match config.pbtxt).",
        "#   bash build_engine.sh [RENDERED_REPO [SERVED_REPO]]   (a read-only rendered repository is copied first)",
        "set -euo pipefail",
        f'RENDERED="${{1:-{triton.REPO}}}"',
        'REPO="${2:-$RENDERED}"',
        f'SRC="{src}"',
        f'[ -d "$SRC" ] || git clone --depth 1 --branch {TAG} https://github.com/NVIDIA/TensorRT-LLM "$SRC"',
        *copy,
        f'if [ ! -f {shlex.quote(engine)}/config.json ]; then',
        f"  MODEL={fetch}",
        "  FAMILY=$(python3 -c \"import json, sys; t = json.load(open(sys.argv[1] + '/config.json'))['model_type']; "
        f"print({FAMILIES!r}.get(t) or sys.exit('model_type ' + t + ': no TensorRT-LLM convert script family "
        "here; use backend=trtllm'))\" \"$MODEL\")",
        "  " + " ".join(f'"{w}"' if "$" in w else shlex.quote(w) for w in convert),
        "  " + shlex.join(engine_flags),
        "fi",
    ]) + "\n"


API_KEY = ApiKey(None, "tritonserver's HTTP endpoint has no bearer-token option in this adapter")


class TritonTrtllmBackend:
    name = BackendName.triton_trtllm
    capabilities = CAPABILITIES
    table = TABLE
    image = triton.IMAGE_TRTLLM
    port = triton.HTTP_PORT
    health_path = triton.HEALTH_PATH
    metrics_path = triton.METRICS_PATH
    metrics = dataclasses.replace(trtllm_adapter.METRICS, source="Triton's metrics port 8002 (nv_trt_llm_* families "
                                  "of the TensorRT-LLM backend); the trtllm_* names are trtllm-serve's")
    warning: Optional[str] = None

    def render(self, plan: Plan, name: str, api_key_env: Optional[str] = None,
               gpu: Optional[GpuSpec] = None) -> Artifacts:
        cfg = apply(TABLE, plan).config
        engine, world = engine_dir(name), plan.tensor_parallel * plan.pipeline_parallel
        files = {f"{triton.REPO}/ensemble/config.pbtxt": _ensemble(cfg, plan.dtype),
                 f"{triton.REPO}/ensemble/1/.keep": "", f"{triton.REPO}/tensorrt_llm/1/.keep": "",
                 f"{triton.REPO}/preprocessing/config.pbtxt": _preprocessing(cfg, engine, plan.dtype),
                 f"{triton.REPO}/tensorrt_llm/config.pbtxt": _tensorrt_llm(cfg, engine, plan.dtype),
                 f"{triton.REPO}/postprocessing/config.pbtxt": _postprocessing(cfg, plan.dtype),
                 "build_engine.sh": build_script(cfg["build"], engine)}
        local = triton.serve_command(triton.REPO, world, ("tensorrt_llm",))
        inside = triton.serve_command(WORK_REPO, world, ("tensorrt_llm",))
        script = f"bash {CONFIG_DIR}/build_engine.sh {CONFIG_DIR}/{triton.REPO} {WORK_REPO} && exec {shlex.join(inside)}"
        server = Server(
            backend=self.name, image=triton.IMAGE_TRTLLM, command=(), container_command=("sh", "-c"),
            args=local, container_args=(script,), env=(), files=tuple(sorted(files.items())),
            port=triton.HTTP_PORT, health_path=self.health_path, metrics_path=self.metrics_path,
            metrics_port=triton.METRICS_PORT,
            warnings=self.notes(plan), api_key=API_KEY)
        return assemble(server, plan, name, api_key_env)

    def notes(self, plan: Plan) -> tuple[str, ...]:
        return (triton.NOTE_METRICS,
                "backend=triton-trtllm: run build_engine.sh (a GPU and TensorRT-LLM's container) before tritonserver: "
                "the engine carries max_batch_size, max_seq_len and max_num_tokens, fixed at build time; the "
                "docker line and the pod run it first. The two python models come from TensorRT-LLM "
                f"{TAG}'s {IB}.",
                "gpu_memory_utilization is rendered as kv_cache_free_gpu_mem_fraction, TensorRT-LLM's share of the "
                "memory left after the engine loads (not of the total, as in vLLM); the plan's memory and prediction "
                f"follow that accounting ({plan.gpu_memory_utilization}) and TensorRT-LLM's GUARANTEED_NO_EVICT "
                "scheduler (planner/engines.py).")

    def check(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        if plan.quantization_method:
            return (f"backend=triton-trtllm ({VERSION}) builds its engine from unquantized weights (convert_checkpoint.py,"
                    f" or quantize.py --qformat fp8); the checkpoint is already quantized "
                    f"({plan.quantization_method}). Fix: backend=trtllm, which reads the checkpoint's quantization "
                    f"[capability: pre-quantized checkpoints; source: build_engine.sh]")
        return trtllm_adapter.BACKEND.check(plan, gpu)

    def kv_cache_tokens(self, log: str) -> Optional[int]:
        return trtllm_adapter.BACKEND.kv_cache_tokens(log)  # the same executor logs the same line


BACKEND = TritonTrtllmBackend()

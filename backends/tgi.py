"""Hugging Face TGI adapter: `text-generation-launcher --model-id M ...` (ghcr.io/huggingface/text-generation-inference).

TGI is in maintenance mode (README banner, commit 34988476 "Maintenance mode (#3345)", 2025-12-11) and its
repository was archived read-only on 2026-03-21; v3.3.7 (tag dfb3fbe7, 2025-12-18) is the last release. The adapter
stays for existing deployments and says so (`WARNING`).

Checked against huggingface/text-generation-inference at tag v3.3.7: launcher/src/main.rs (clap `Args`; line
numbers below are that file's), backends/v3/src (router), server/text_generation_server/models/globals.py.
"""

import re
from typing import Optional

from backends.base import Artifacts, Capabilities, Metrics, Precision, Support
from backends.server import ApiKey, Server, assemble
from backends.table import Flag, FlagTable, NoFlag, Where, apply, enum_value, number, quantization_value
from planner import engines
from planner.plan import Plan
from planner.specs import BackendName, Dtype, GpuSpec, KvPrecision, Quantization

VERSION = "TGI 3.3.7"
MAIN = "launcher/src/main.rs"
STATUS = ("maintenance mode since 2025-12-11 (README; commit 34988476 'Maintenance mode (#3345)'), repository "
          "archived read-only on 2026-03-21, last release v3.3.7 (2025-12-18); Hugging Face points to vLLM and SGLang")
WARNING = (f"backend=tgi: Text Generation Inference is in {STATUS}. No new models or fixes will come; prefer "
           "backend=vllm or backend=sglang for new deployments.")
# Built by .github/workflows/build.yaml (semver tags) for tag v3.3.7; pulled by downstream users (docs/backends.md).
IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.7"
PORT = 8080  # passed explicitly: the launcher's default is 3000 (main.rs:773), the image's PORT env 80
DEFAULT_MAX_CONCURRENT = 128  # main.rs:648 --max-concurrent-requests default

DTYPES = {Dtype.bf16: "bfloat16", Dtype.fp16: "float16"}  # main.rs:489-494 enum Dtype: no float32
QUANT = {Quantization.fp8: "fp8", Quantization.awq: "awq", Quantization.gptq: "gptq",
         Quantization.int8: "compressed-tensors", Quantization.none: None}  # main.rs:407-446 enum Quantization
SPECULATIVE = ("ngram", "medusa")  # main.rs:622-627: Medusa heads from the model, otherwise n-gram


def _dtype(plan: Plan) -> Optional[str]:
    # main.rs:629 "--dtype ... cannot be used with `--quantize`"
    return None if plan.quantization is not Quantization.none else DTYPES[plan.dtype]


TABLE = FlagTable(
    flags=(
        Flag("model_path", "--model-id", Where.argv, lambda p: p.model_path, f"{MAIN}:588"),
        Flag("tensor_parallel", "--num-shard", Where.argv, number("tensor_parallel"), f"{MAIN}:611"),
        Flag("dtype", "--dtype", Where.argv, _dtype, f"{MAIN}:631",
             "with --quantize the launcher forbids --dtype (main.rs:629): the quantized kernels set it"),
        Flag("quantization", "--quantize", Where.argv, quantization_value(QUANT), f"{MAIN}:620",
             "none: no --quantize (the checkpoint's quantization_config is still read, main.rs:2082)"),
        Flag("kv_cache_dtype", "--kv-cache-dtype", Where.argv,
             lambda p: "fp8_e4m3fn" if p.kv_cache_dtype is KvPrecision.fp8 else None, f"{MAIN}:637 (:511 enum)",
             "bf16/fp16: no flag, TGI stores the KV cache in the model dtype (main.rs:633)"),
        Flag("max_model_len", "--max-total-tokens", Where.argv, number("max_model_len"), f"{MAIN}:695"),
        # main.rs:2160: max_input_tokens must be < max_total_tokens; the longest prompt leaves room for one token
        Flag("max_model_len", "--max-input-tokens", Where.argv, lambda p: str(p.max_model_len - 1), f"{MAIN}:679"),
        # backends/v3/src/backend.rs:198 caps the running batch at max_batch_size
        Flag("max_num_seqs", "--max-batch-size", Where.argv, number("max_num_seqs"), f"{MAIN}:760"),
        # Requests beyond --max-concurrent-requests are refused: keep it at least the running batch
        Flag("max_num_seqs", "--max-concurrent-requests", Where.argv,
             lambda p: str(max(DEFAULT_MAX_CONCURRENT, p.max_num_seqs)), f"{MAIN}:649"),
        Flag("max_num_batched_tokens", "--max-batch-prefill-tokens", Where.argv, number("max_num_batched_tokens"),
             f"{MAIN}:715"),
        # "The allowed value equals the total visible memory multiplied by cuda-memory-fraction" (main.rs:810-813)
        Flag("gpu_memory_utilization", "--cuda-memory-fraction", Where.argv, number("gpu_memory_utilization"),
             f"{MAIN}:813"),
        Flag("enable_prefix_caching", "PREFIX_CACHING", Where.env, lambda p: "1" if p.enable_prefix_caching else "0",
             f"{MAIN}:133 and server/text_generation_server/models/globals.py:11"),
        Flag("enable_chunked_prefill", "PREFILL_CHUNKING", Where.env,
             lambda p: "1" if p.enable_chunked_prefill else "0",
             "server/text_generation_server/models/globals.py:15 (shards inherit the launcher's env, main.rs:1040)"),
        Flag("speculative", "--speculate", Where.argv,
             lambda p: str(p.speculative["num_speculative_tokens"]) if p.speculative else None, f"{MAIN}:627",
             "None: no speculation"),
    ),
    no_flag=(
        NoFlag("quantization_method", "TGI reads the checkpoint's quantization_config (main.rs:2082); set, it "
                                      "suppresses --quantize"),
        NoFlag("backend", "selects this adapter"),
        NoFlag("pipeline_parallel", "TGI shards are tensor-parallel only (no pipeline stages)", f"{MAIN}:606-612"),
        NoFlag("data_parallel", "no data-parallel copies in one launcher: scale with replicas", MAIN),
        NoFlag("expert_parallel", "no expert-parallel option", MAIN),
        NoFlag("nodes", "a launcher shards over the GPUs of one machine only", f"{MAIN}:606-612"),
        NoFlag("stream_interval", "TGI streams every token (text-generation-launcher has no stream-interval option)"),
        NoFlag("max_loras", "LoRA adapters are not rendered for TGI by planner 0.1 (needs --lora-adapters with the adapter ids); plans with max_loras > 0 render for vLLM"),
        NoFlag("max_lora_rank", "LoRA adapters are not rendered for TGI by planner 0.1 (needs --lora-adapters with the adapter ids); plans with max_loras > 0 render for vLLM"),
        NoFlag("kv_cache_space_gib", "CPU plans only (vLLM's VLLM_CPU_KVCACHE_SPACE)"),
        NoFlag("replicas", "deployment shape: Deployment spec.replicas"),
        NoFlag("gpus_per_replica", "deployment shape: nvidia.com/gpu per pod"),
        NoFlag("disaggregation", "TGI has no prefill/decode disaggregation (no KV connector option)", MAIN),
        NoFlag("autoscaling", "deployment shape: a KEDA ScaledObject on the replicas (backends/autoscale_k8s.py)"),
    ),
)

_MARLIN = "main.rs:618 ('Marlin kernels will be used automatically for GPTQ/AWQ models'; Marlin needs SM80)"
CAPABILITIES = Capabilities(
    backend=BackendName.tgi,
    version=VERSION,
    status=STATUS,
    gpu=Precision(7.0, f"{MAIN}:146-152 (below compute capability 8.0 the launcher falls back to paged attention)",
                  rocm_source="this adapter renders TGI's CUDA image only; TGI publishes ROCm images "
                              "(ghcr.io/huggingface/text-generation-inference:<version>-rocm, TGI docs quicktour "
                              "'ROCm-enabled AMD GPUs') whose kernels and flags are not checked here, and TGI is in "
                              "maintenance mode (use backend=vllm or backend=sglang)"),
    dtypes={Dtype.fp16: Precision(7.0, f"{MAIN}:489-494"), Dtype.bf16: Precision(8.0, f"{MAIN}:489-494")},
    quantizations={
        Quantization.fp8: Precision(9.0, f"{MAIN}:442 ('FP8 (e4m3) works on H100 and above')"),
        Quantization.awq: Precision(8.0, _MARLIN),
        Quantization.gptq: Precision(8.0, _MARLIN),
        Quantization.int8: Precision(8.0, f"{MAIN}:412-413 compressed-tensors; " + _MARLIN),
    },
    kv_cache_dtypes={
        KvPrecision.bf16: Precision(8.0, f"{MAIN}:633 (model dtype)"),
        KvPrecision.fp16: Precision(7.0, f"{MAIN}:633 (model dtype)"),
        KvPrecision.fp8: Precision(8.9, f"{MAIN}:634-637 (fp8_e4m3fn, fp8_e5m2 'on CUDA'; FP8 formats from SM89)"),
    },
    tensor_parallel=Support(True, f"{MAIN}:611 --num-shard"),
    pipeline_parallel=Support(False, f"{MAIN}:606-612", "shards are tensor-parallel only"),
    data_parallel=Support(False, MAIN, "one launcher serves one model copy; use replicas"),
    expert_parallel=Support(False, MAIN, "no expert-parallel option"),
    multi_node=Support(False, f"{MAIN}:606-612", "shards run on one machine"),
    prefix_caching=Support(True, f"{MAIN}:133 PREFIX_CACHING (flashinfer/flashdecoding attention)"),
    chunked_prefill=Support(True, "server/text_generation_server/models/globals.py:15 PREFILL_CHUNKING"),
    lora=Support(True, f"{MAIN}:889 --lora-adapters"),
    vlm=Support(True, f"{MAIN}:137 and :282 (vision_config models)"),
    speculative_methods={m: f"{MAIN}:622-627 --speculate" for m in SPECULATIVE},
    engine=engines.TGI,
    disaggregation=Support(False, MAIN, "TGI has no prefill/decode disaggregation (no KV connector option)"),
)

METRICS = Metrics(  # router/src and backends/v3/src metrics::gauge!/histogram! names at v3.3.7
    source="router/src/server.rs, backends/v3/src (metrics crate names); /metrics on the API port (server.rs:2243)",
    kv_cache_usage="tgi_batch_current_max_tokens",  # tokens held by the running batch; ÷ tgi_batch_max_total_tokens
    running="tgi_batch_current_size",
    waiting="tgi_queue_size",
    preemptions=None,  # the v3 router does not preempt
    ttft_seconds=None,  # no time-to-first-token histogram: tgi_request_queue_duration + first step only
    inter_token_seconds="tgi_request_mean_time_per_token_duration",
    e2e_seconds="tgi_request_duration",
    kv_capacity="tgi_batch_max_total_tokens",  # backends/v3/src/lib.rs:138
)

# backends/v3/src/lib.rs:137: tracing::info!("Setting max batch total tokens to {max_batch_total_tokens}")
KV_LINE = re.compile(r"Setting max batch total tokens to (?P<tokens>\d+)")


API_KEY = ApiKey("--api-key", "TGI v3.3.7 launcher/src/main.rs:848-849 (#[clap(long, env)] api_key, also env API_KEY) "
                 "passed to the router, which checks `Authorization: Bearer <key>` (router/src/server.rs:2213-2229)")

class TgiBackend:
    name = BackendName.tgi
    capabilities = CAPABILITIES
    table = TABLE
    image = IMAGE
    port = PORT
    health_path = "/health"  # router/src/server.rs:2241
    metrics_path = "/metrics"  # router/src/server.rs:2243
    metrics = METRICS
    warning: Optional[str] = WARNING

    def render(self, plan: Plan, name: str, api_key_env: Optional[str] = None,
               gpu: Optional[GpuSpec] = None) -> Artifacts:  # CUDA only (matrix)
        applied = apply(TABLE, plan)
        args = applied.argv + ("--hostname", "0.0.0.0", "--port", str(PORT))
        server = Server(
            backend=self.name, image=IMAGE, command=("text-generation-launcher",), container_command=(),
            args=args, container_args=args, env=applied.env, port=PORT, health_path=self.health_path,
            metrics_path=self.metrics_path, warnings=self.notes(plan), api_key=API_KEY)
        return assemble(server, plan, name, api_key_env)

    def notes(self, plan: Plan) -> tuple[str, ...]:
        return (WARNING,)

    def check(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        if plan.enable_prefix_caching and gpu.compute_capability < 8.0:
            return (f"backend=tgi ({VERSION}) has no prefix caching on {gpu.name} (compute capability "
                    f"{gpu.compute_capability} < 8.0 uses paged attention) [capability: prefix_caching; "
                    f"source: {MAIN}:146-152 and :191-193]")
        if not plan.enable_chunked_prefill and plan.max_model_len - 1 > plan.max_num_batched_tokens:
            return (f"backend=tgi ({VERSION}) without chunked prefill needs max_num_batched_tokens >= the longest "
                    f"prompt ({plan.max_num_batched_tokens} < {plan.max_model_len - 1}) [capability: chunked_prefill; "
                    "source: backends/v3/src/main.rs:188]")
        return None

    def kv_cache_tokens(self, log: str) -> Optional[int]:
        m = KV_LINE.search(log)
        return int(m.group("tokens")) if m else None


BACKEND = TgiBackend()

"""DeepSpeed-MII adapter: MII's OpenAI-compatible server (mii/entrypoints/openai_api_server.py) in front of a
persistent MII deployment (`mii.serve`) that carries the plan's engine limits.

Maintenance: no release since v0.3.3 (tag v0.3.3 = commit 00a0fcbb, 2025-03-25; PyPI's newest, `pip index versions
deepspeed-mii`, checked 2026-12-07) and no commit on main since 8abdd98 (2025-07-01, a setup.py fix); the README's
news ends in 2024/01. The adapter is here for users who run it and says so (`WARNING`); the auto search never picks
it (rule backend.mii-when-asked).

Checked against deepspeedai/DeepSpeed-MII at tag v0.3.3 (file:line below are that tree's) and the DeepSpeed release
current when it shipped, v0.16.5 (tag 20f988ead, 2025-03-27; MII requires deepspeed>=0.15.0):
- The OpenAI server's argparse (openai_api_server.py:392-472) exposes --tensor-parallel, --replica-num and
  --max-length only: none of the engine's batch limits. It calls `mii.serve` itself unless --load-balancer names a
  running deployment (:494-509). So the launch runs `mii.serve(**mii_config.json)` (api.py:114; the file's keys are
  serve's `model_config` (mii/config.py ModelConfig) and `mii_config` (MIIConfig) arguments, and
  model_config.inference_engine_config is DeepSpeed's RaggedInferenceEngineConfig with its state_manager
  (deepspeed/inference/v2/ragged/manager_configs.py DSStateManagerConfig)), then the OpenAI server on the same
  process with --load-balancer at the deployment's port (MIIConfig.port_number, 50050).
- No official image: the NGC PyTorch container MII's own CI runs in (.github/workflows/nv-a6000-fastgen.yml:21)
  with the pinned packages installed when the container starts.
"""

import re
from typing import Optional

from backends.base import Artifacts, Capabilities, Metrics, Precision, Support
from backends.server import ApiKey, CONFIG_DIR, Server, assemble
from backends.table import Flag, FlagTable, NoFlag, Where, apply, number
from planner import engines
from planner.plan import Plan
from planner.specs import BackendName, Dtype, GpuSpec, KvPrecision, Quantization

VERSION = "DeepSpeed-MII 0.3.3 (DeepSpeed 0.16.5)"
OPENAI = "mii/entrypoints/openai_api_server.py"  # @v0.3.3
CONFIG = "mii/config.py"  # @v0.3.3
MANAGER = "deepspeed/inference/v2/ragged/manager_configs.py"  # DeepSpeed @v0.16.5
FACTORY = "deepspeed/inference/v2/engine_factory.py"  # DeepSpeed @v0.16.5
STATUS = ("unmaintained in practice: no release since v0.3.3 (2025-03-25, PyPI's newest), no commit since "
          "2025-07-01 (8abdd98), README news ends 2024/01")
WARNING = (f"backend=mii: DeepSpeed-MII is {STATUS}. Its FastGen engine serves ten fp16/bf16 model families with no "
           "quantized checkpoints, prefix caching or metrics; prefer backend=vllm or backend=sglang for new "
           "deployments.")
IMAGE = "nvcr.io/nvidia/pytorch:24.03-py3"  # MII's CI container (nv-a6000-fastgen.yml:21); MII publishes no image
# Installed when the container starts: MII 0.3.3 with the DeepSpeed and transformers releases of its release week
# (deepspeed 0.16.5 of 2025-03-27; transformers 4.50.0 of 2025-03-21) rather than today's, which it predates.
PACKAGES = ("deepspeed-mii==0.3.3", "deepspeed==0.16.5", "transformers==4.50.0")
PORT = 8000  # openai_api_server.py:419 --port default
DEPLOYMENT = "planner-mii"  # MIIConfig.deployment_name (config.py:225): the name the OpenAI server attaches to
LOAD_BALANCER = "localhost:50050"  # MIIConfig.port_number default (config.py:243): the deployment's gRPC balancer
FILE = "mii_config.json"
# `python3 -c` program: start the deployment from the file (argv[1]), then run MII's OpenAI server module as
# `python -m mii.entrypoints.openai_api_server` with the remaining arguments.
LAUNCH = ("import json, runpy, sys, mii; mii.serve(**json.load(open(sys.argv[1]))); del sys.argv[1]; "
          "runpy.run_module('mii.entrypoints.openai_api_server', run_name='__main__', alter_sys=True)")
_STATE = "model_config.inference_engine_config.state_manager"


def _reserve_note() -> str:
    c = engines.engine_constants()["mii"]
    return (f"{MANAGER}:122-124 MemoryConfig reserve mode keeps {c['reserve_bytes_default']:,} bytes free after the "
            "KV cache; the plan's fraction is that default's share of the GPU (check() refuses any other)")


TABLE = FlagTable(
    flags=(
        Flag("model_path", "model_config.model_name_or_path", Where.config, lambda p: p.model_path, f"{CONFIG}:99"),
        Flag("model_path", "--model", Where.argv, lambda p: p.model_path,
             f"{OPENAI}:393-399 (the tokenizer it loads, :511, and the model name requests must carry, :270)"),
        Flag("tensor_parallel", "model_config.tensor_parallel", Where.config, lambda p: p.tensor_parallel,
             f"{CONFIG}:115 (propagated to inference_engine_config.tensor_parallel.tp_size, :207)"),
        # ModelConfig.max_length: the default prompt + output bound of each request (mii/batching/ragged_batching.py:
        # 50-53); the KV metadata bound of one sequence is the state manager's max_context
        Flag("max_model_len", "model_config.max_length", Where.config, lambda p: p.max_model_len, f"{CONFIG}:165"),
        Flag("max_model_len", f"{_STATE}.max_context", Where.config, lambda p: p.max_model_len, f"{MANAGER}:159"),
        Flag("max_num_seqs", f"{_STATE}.max_ragged_sequence_count", Where.config, lambda p: p.max_num_seqs,
             f"{MANAGER}:151 (the running batch: ragged_batching.py:262 and :291-292)"),
        # validator (manager_configs.py:176-180): max_ragged_sequence_count <= max_tracked_sequences
        Flag("max_num_seqs", f"{_STATE}.max_tracked_sequences", Where.config,
             lambda p: max(p.max_num_seqs, engines.engine_constants()["mii"]["max_tracked_sequences"]),
             f"{MANAGER}:139"),
        Flag("max_num_batched_tokens", f"{_STATE}.max_ragged_batch_size", Where.config,
             lambda p: p.max_num_batched_tokens, f"{MANAGER}:145 (prompt chunks fill it: ragged_batching.py:297)"),
        Flag("gpu_memory_utilization", f"{_STATE}.memory_config.size", Where.config, lambda p: None,
             f"{MANAGER}:124", _reserve_note()),
        Flag("enable_chunked_prefill", "Dynamic SplitFuse", Where.config, lambda p: None,
             "mii/batching/ragged_batching.py:279-333, prompts split at :315-316",
             "always on: MII splits every prompt to the token budget (check() refuses enable_chunked_prefill=false)"),
    ),
    no_flag=(
        NoFlag("backend", "selects this adapter"),
        NoFlag("dtype", "the engine computes in the checkpoint's torch_dtype (fp16 or bf16) and has no dtype option; "
                        "check() refuses a plan whose dtype is another", f"{FACTORY}; model_implementations/"
                                                                         "llama_v2/model.py:77-83"),
        NoFlag("kv_cache_dtype", "the KV cache is in the activation dtype (KVCacheConfig.cache_dtype)",
               "deepspeed/inference/v2/model_implementations/inference_transformer_base.py:383-385"),
        NoFlag("quantization", "MII's only quantization_mode is wf6af16 (FP6 weights, not a planner format); "
                               "quantized checkpoints are not loaded", f"{CONFIG}:123"),
        NoFlag("quantization_method", "no quantized checkpoint loads in MII's FastGen engine", FACTORY),
        NoFlag("pipeline_parallel", "tensor parallel only", f"{CONFIG}:115"),
        NoFlag("data_parallel", "no attention data parallel; replicas are separate servers", CONFIG),
        NoFlag("expert_parallel", "MoE experts are sharded with tensor parallel only", CONFIG),
        NoFlag("nodes", "the OpenAI server starts its deployment on localhost (hostfile 'localhost slots=N', "
                        "mii/backend/server.py:36-42)", OPENAI),
        NoFlag("replicas", "deployment shape: Deployment spec.replicas, one server per replica (MII's own "
                           "replica_num, a load balancer over copies on one host, stays 1)", f"{CONFIG}:148"),
        NoFlag("gpus_per_replica", "deployment shape: nvidia.com/gpu per pod"),
        NoFlag("enable_prefix_caching", "DeepSpeed 0.16.5's ragged engine has no prefix cache", MANAGER),
        NoFlag("speculative", "no speculative decoding in MII", OPENAI),
        NoFlag("kv_cache_space_gib", "CPU plans only (vLLM's VLLM_CPU_KVCACHE_SPACE)"),
        NoFlag("stream_interval", "MII streams every token (no stream-interval option in its server)"),
        NoFlag("max_loras", "no LoRA adapters in MII's FastGen engine", CONFIG),
        NoFlag("max_lora_rank", "no LoRA adapters in MII's FastGen engine", CONFIG),
        NoFlag("disaggregation", "no prefill/decode disaggregation in MII", OPENAI),
        NoFlag("autoscaling", "deployment shape; MII exposes no request counter, so no KEDA object is rendered"),
    ),
)

_AMPERE = "deepspeed/inference/v2/kernels/ragged_ops/blocked_flash/blocked_flash.py:21-22 (blocked attention " \
          "needs compute capability >= 8.0); README: DeepSpeed-Kernels wheels for 8.0+"
_TYPES = ("opt", "llama", "mistral", "mixtral", "falcon", "phi", "phi3", "qwen", "qwen2", "qwen2_moe")
CAPABILITIES = Capabilities(
    backend=BackendName.mii,
    version=VERSION,
    status=STATUS,
    gpu=Precision(8.0, _AMPERE, rocm_source="DeepSpeed's ragged inference kernels are CUDA-only (blocked_flash.py)"),
    dtypes={Dtype.fp16: Precision(8.0, "model_implementations/llama_v2/model.py:77-83 activation_dtype"),
            Dtype.bf16: Precision(8.0, "model_implementations/llama_v2/model.py:77-83 activation_dtype")},
    quantizations={},  # wf6af16 only (config.py:123), which is no planner format
    kv_cache_dtypes={
        KvPrecision.fp16: Precision(8.0, "inference_transformer_base.py:385 cache_dtype = activation dtype"),
        KvPrecision.bf16: Precision(8.0, "inference_transformer_base.py:385 cache_dtype = activation dtype"),
    },
    tensor_parallel=Support(True, f"{CONFIG}:115 ModelConfig.tensor_parallel"),
    pipeline_parallel=Support(False, CONFIG, "tensor parallel only"),
    data_parallel=Support(False, CONFIG, "no attention data parallel; use replicas"),
    expert_parallel=Support(False, CONFIG, "MoE experts are sharded by tensor parallel only"),
    multi_node=Support(False, OPENAI, "the OpenAI server's deployment runs on localhost"),
    prefix_caching=Support(False, MANAGER, "DeepSpeed 0.16.5's ragged engine has no prefix cache"),
    chunked_prefill=Support(True, "mii/batching/ragged_batching.py:279-333 (Dynamic SplitFuse: prompts split to "
                                  "max_ragged_batch_size at :315-316)"),
    lora=Support(False, CONFIG, "no LoRA adapters"),
    vlm=Support(False, FACTORY, "text-only model implementations"),
    speculative_methods={},
    engine=engines.MII,
    model_types={t: f"{FACTORY}:100-133 (build_hf_engine policies)" for t in _TYPES},
    disaggregation=Support(False, OPENAI, "no prefill/decode disaggregation in MII"),
)

METRICS = Metrics(source=f"{OPENAI}: no Prometheus endpoint (routes /v1/models, /v1/chat/completions, "
                         "/v1/completions, /health only)",
                  kv_cache_usage="", running=None, waiting=None, preemptions=None, ttft_seconds=None,
                  inter_token_seconds=None, e2e_seconds=None)

# DeepSpeed 0.16.5 ragged/kv_cache.py:135-136 logs "Allocating KV-cache {group} with shape: (..., num_blocks,
# block_size, 2, heads, head_size) consisting of {num_blocks} blocks."
KV_LINE = re.compile(r"Allocating KV-cache \d+ with shape: \(\d+, (?P<blocks>\d+), (?P<block>\d+), 2,")

API_KEY = ApiKey("--api-keys", f"{OPENAI}:461-463 (comma-separated keys) checked as `Authorization: Bearer <key>` "
                               "by check_api_key (:59-78) on every /v1 route")


class MiiBackend:
    name = BackendName.mii
    capabilities = CAPABILITIES
    table = TABLE
    image = IMAGE
    port = PORT
    health_path = "/health"  # openai_api_server.py:385-388 (serving starts after mii.serve returns: the engine is up)
    metrics_path = ""  # none (METRICS)
    metrics = METRICS
    warning: Optional[str] = WARNING

    def render(self, plan: Plan, name: str, api_key_env: Optional[str] = None,
               gpu: Optional[GpuSpec] = None) -> Artifacts:  # CUDA only (matrix)
        import json

        applied = apply(TABLE, plan)
        config = {**applied.config, "mii_config": {"deployment_name": DEPLOYMENT}}
        server_args = applied.argv + ("--load-balancer", LOAD_BALANCER, "--deployment-name", DEPLOYMENT,
                                      "--host", "0.0.0.0", "--port", str(PORT))
        install = f"pip install --no-cache-dir {' '.join(PACKAGES)} && exec python3 -c \"$0\" \"$@\""
        server = Server(
            backend=self.name, image=IMAGE, command=("python3", "-c", LAUNCH),
            container_command=("sh", "-c", install, LAUNCH), args=(FILE,) + server_args,
            container_args=(f"{CONFIG_DIR}/{FILE}",) + server_args, env=applied.env,
            files=((FILE, json.dumps(config, indent=2, sort_keys=True) + "\n"),), port=PORT,
            health_path=self.health_path, metrics_path=self.metrics_path, warnings=self.notes(plan), api_key=API_KEY)
        return assemble(server, plan, name, api_key_env)

    def notes(self, plan: Plan) -> tuple[str, ...]:
        return (WARNING,
                f"MII's OpenAI server sends each completion request's own max_length (default 32768, "
                f"mii/entrypoints/data_models.py:159) over the deployment's max_length ({plan.max_model_len}): "
                "clients should send max_length; it returns no logprobs, so lm-eval's loglikelihood tasks "
                "(quality=true) cannot score it.",
                f"The container installs {', '.join(PACKAGES)} when it starts (MII publishes no image); DeepSpeed "
                "compiles its inference kernels on first use.")

    def check(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        who = f"backend=mii ({VERSION})"
        if not plan.enable_chunked_prefill:
            return (f"{who} always splits prompts to the token budget (Dynamic SplitFuse), so "
                    "enable_chunked_prefill=false cannot be served [capability: chunked_prefill; source: "
                    "mii/batching/ragged_batching.py:279-333, prompts split at :315-316]")
        if plan.max_num_seqs > plan.max_num_batched_tokens:
            return (f"{who} needs max_num_seqs <= max_num_batched_tokens ({plan.max_num_seqs} > "
                    f"{plan.max_num_batched_tokens}): max_ragged_sequence_count <= max_ragged_batch_size "
                    f"[capability: batch limits; source: {MANAGER}:176-180]")
        default = engines.mii_fraction(gpu, engines.engine_constants()["mii"]["reserve_bytes_default"])
        if plan.gpu_memory_utilization is not None and abs(plan.gpu_memory_utilization - default) > 1e-4:
            return (f"{who}: this adapter keeps MII's default memory reserve, {default} of {gpu.name}'s memory "
                    f"for the engine; gpu_memory_utilization={plan.gpu_memory_utilization} is another "
                    f"[capability: gpu_memory_utilization; source: {_reserve_note()}]")
        return None

    def kv_cache_tokens(self, log: str) -> Optional[int]:
        m = KV_LINE.search(log)
        return int(m.group("blocks")) * int(m.group("block")) if m else None


BACKEND = MiiBackend()

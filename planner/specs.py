"""Typed inputs of the planner: frozen specs built once from the composed Hydra config.

Each spec's fields are exactly the keys of its conf/ group; `planner.schema` derives the mutable Hydra schema
from these classes, so the YAML, the validation and the code share one definition.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from planner.bounds import at_least_zero, bounded, catalog_name, not_blank, positive, positive_int
from planner.enums import (  # noqa: F401 (re-exported: the specs' vocabularies)
    Arch, DeviceKind, Interconnect, Objective, Weights, KvPrecision, Dtype, Quantization, BackendName, DeployTarget,
    Profiler, Action, Format)


_TFLOPS = "a positive number of TFLOP/s, or null where the format is not supported"
_SLO = "a positive number, or null for no bound"
_RATE = "a rate of at least 0.001 requests/s (3.6 an hour), or null for no bound"
_PIN = "a positive integer, or null to let the planner choose"


@dataclass(frozen=True)
class CheckpointQuant:
    """How a quantized checkpoint stores its weights, read from its quantization_config (or hf_quant_config.json) by
    planner/quantconfig.py; method "" is an unquantized checkpoint. Field names follow compressed-tensors'
    QuantizationArgs; what each costs in memory is planner/weights.py."""

    method: str = ""  # quant_method as the engines name it: compressed-tensors, fp8, gptq, awq, modelopt, ...
    weight_bits: int = 16  # bits of one stored weight
    weight_type: str = "float"  # int (GPTQ, AWQ, W8A8-INT8, W4A16) or float (FP8 e4m3, FP4 e2m1); nf4
    strategy: str = "tensor"  # one scale per: tensor | channel (output row) | group (of inputs) | block;
    # tensor_group (NVFP4): group scales under one fp32 global scale per tensor
    group_size: int = 0  # inputs sharing one scale (strategy group)
    block_n: int = 0  # strategy block: output rows per scale
    block_k: int = 0  # strategy block: inputs per scale
    scale_bytes: int = 4  # bytes of one stored scale (fp32 4, fp16/bf16 2, fp8/e8m0 1)
    zero_point: bool = False  # asymmetric: one zero point (packed to weight_bits) per scale
    act_order: bool = False  # GPTQ desc_act with groups: weights ordered by activation (a g_idx per input)
    activation_bits: int = 16  # 8: W8A8 (FP8/INT8 activations), 4: W4A4 (NVFP4), 16: weight-only
    sparsity: str = ""  # "2:4" for a 2:4-sparse checkpoint
    targets: Tuple[str, ...] = ("Linear",)  # what is quantized: Linear, Embedding, experts, names or re: regexes
    ignore: Tuple[str, ...] = ()  # modules left in the compute dtype: names, re: regexes, * wildcards
    ignore_match: str = "exact"  # exact (compressed-tensors, fp8), substring (AWQ, mxfp4), glob (ModelOpt)
    kv_cache_dtype: str = ""  # the KV-cache dtype the checkpoint declares (kv_cache_scheme): fp8, or "" for none

    @property
    def quantized(self) -> bool:
        return bool(self.method)


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer; field names and values as in the model's HF config.json."""

    name: str = catalog_name()
    hf_repo: str = not_blank("the model's Hugging Face repo id or local path, not blank")
    source: str
    model_type: str
    architecture: str
    # published total parameter count, billions (MoE: all experts)
    num_params_b: float = positive(what="a positive number of billions")
    hidden_size: int = positive_int()
    num_hidden_layers: int = positive_int()
    num_attention_heads: int = positive_int()
    num_key_value_heads: int = positive_int()
    intermediate_size: int = positive_int()  # dense MLP width (MoE: of the dense layers, if any)
    vocab_size: int = positive_int()
    max_position_embeddings: int = positive_int()  # tokens
    head_dim: Optional[int] = positive_int(None)  # None: hidden_size / num_attention_heads
    torch_dtype: str = "bfloat16"  # the checkpoint's dtype
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # biases on q/k/v (Qwen2, gpt-oss, Phi-2)
    o_proj_bias: bool = False  # a bias on the attention output projection (gpt-oss, Phi-2; not Qwen2)
    qk_norm: bool = False  # RMSNorm over each head's q and k (Qwen3, Gemma 3): head_dim weights each
    # share of head_dim that rotary embedding turns (Phi-2: 0.4)
    partial_rotary_factor: float = bounded("a share of head_dim above 0, at most 1", 1.0, gt=0, le=1)
    attention_sinks: bool = False  # one learned sink logit per head and layer (gpt-oss)
    mlp_gated: bool = True  # gate/up/down (SwiGLU, GeGLU); False: fc1/fc2 (Phi-2, GPT-2 style)
    mlp_bias: bool = False  # biases on the MLP projections (Phi-2)
    # norms of hidden size per layer (Gemma 2/3: 4, pre and post attention and MLP)
    norms_per_layer: int = at_least_zero(2)
    norm_bias: bool = False  # LayerNorm with a bias (Phi-2) instead of RMSNorm
    lm_head_bias: bool = False  # a bias on the output projection (Phi-2)
    # Mixture of experts (0 experts: dense).
    num_experts: int = at_least_zero(0)  # routed experts per MoE layer
    num_experts_per_tok: int = at_least_zero(0)
    moe_intermediate_size: Optional[int] = positive_int(None)  # width of one routed expert
    num_shared_experts: int = at_least_zero(0)  # always-active experts, each moe_intermediate_size wide
    # Qwen2-MoE style single shared expert (0 or None: none; Qwen3-MoE configs say 0)
    shared_expert_intermediate_size: Optional[int] = at_least_zero(None, "zero or more, or null (0: no shared expert)")
    first_dense_layers: int = at_least_zero(0)  # DeepSeek first_k_dense_replace: leading layers with a dense MLP
    moe_layer_step: int = positive_int(1)  # Llama 4 interleave_moe_layer_step: every step-th layer is MoE
    expert_bias: bool = False  # biases on the experts' projections and the router (gpt-oss)
    # Multi-head latent attention (DeepSeek-V2/V3); None: ordinary (GQA/MHA) attention.
    kv_lora_rank: Optional[int] = positive_int(None)
    q_lora_rank: Optional[int] = positive_int(None)
    qk_nope_head_dim: Optional[int] = positive_int(None)
    qk_rope_head_dim: Optional[int] = positive_int(None)
    v_head_dim: Optional[int] = positive_int(None)
    # Sliding-window attention: window in tokens, and how many layers use it (the rest attend globally).
    sliding_window: Optional[int] = positive_int(None, "a positive number of tokens, or null")
    sliding_window_layers: int = at_least_zero(0)
    # Chunked local attention (Llama 4): tokens attend within their chunk of this many, in that many layers.
    attention_chunk_size: Optional[int] = positive_int(None, "a positive number of tokens, or null")
    chunked_attention_layers: int = at_least_zero(0)
    # Checkpoint quantization (from quantization_config), e.g. fp8, awq, gptq; None: unquantized.
    quantization: Optional[str] = None
    quantization_bits: Optional[int] = bounded("a number of bits from 1 to 16, or null", None, ge=1, le=16)
    quant: CheckpointQuant = field(default_factory=CheckpointQuant)  # its layout, when the checkpoint says it
    # FP8 checkpoints: how the weights are scaled, which decides the GEMM kernel the engines run (docs/perf-model.md):
    # "tensor" (one scale per tensor: ModelOpt, AutoFP8), "channel" (per output channel with per-token activations:
    # compressed-tensors FP8-dynamic, Meta's FP8), "block" (128x128 blocks: DeepSeek-V3, Qwen3-FP8); None: tensor.
    fp8_scaling: Optional[str] = None
    path: Optional[str] = not_blank("a local directory, not blank", None)  # model=hf
    # A published speculative-decoding drafter for this model (vLLM speculative_config method and model);
    # method "mtp" uses the checkpoint's own multi-token-prediction layers (no separate model).
    speculative_method: Optional[str] = None
    speculative_model: Optional[str] = None
    # Vision-language models: the vision encoder's parameters (billions) and the tokens one image becomes.
    vision_params_b: float = at_least_zero(0.0, "zero or more billions")
    # Rows of the rotary cos/sin caches vLLM builds, over all of them (None: max_position_embeddings, one cache).
    # Linear RoPE scaling caches max_position_embeddings x factor positions; Gemma 3's sliding layers keep their own
    # unscaled cache (layers/rotary_embedding/linear_scaling_rope.py, models/gemma3.py get_rope per layer type).
    rope_cache_positions: Optional[int] = positive_int(None)
    image_tokens: int = at_least_zero(0)

    @property
    def head_dim_eff(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator (or the CPU profile): datasheet numbers, each with the unit in its name."""

    name: str = catalog_name()
    source: str
    architecture: Arch
    compute_capability: float = at_least_zero()  # CUDA compute capability (9.0 = Hopper); 0 for non-CUDA devices
    # device memory as CUDA reports its total (cudaMemGetInfo; what vLLM budgets), GiB (2^30 B)
    memory_gib: float = positive(what="a positive number of GiB")
    hbm_bandwidth_gb_s: float = positive(what="a positive number of GB/s")  # peak memory bandwidth, GB/s (10^9 B)
    dense_tflops_fp16: float = positive(what="a positive number of TFLOP/s")  # dense tensor throughput (no sparsity)
    kind: DeviceKind = DeviceKind.gpu
    vendor: str = "nvidia"  # nvidia (CUDA) or amd (ROCm): decides the engine build, image and device plugin
    marketing_name: str = ""
    num_cores: Optional[int] = positive_int(None)  # SMs (GPU) or physical cores (CPU)
    dense_tflops_bf16: Optional[float] = positive(None, _TFLOPS)  # None: not supported natively
    dense_tflops_fp8: Optional[float] = positive(None, _TFLOPS)
    dense_tflops_int8: Optional[float] = positive(None, _TFLOPS)  # TOPS
    dense_tflops_fp4: Optional[float] = positive(None, _TFLOPS)
    dense_tflops_fp32: Optional[float] = positive(None, _TFLOPS)  # non-tensor FP32
    # per GPU, both directions together; None: no NVLink
    nvlink_bandwidth_gb_s: Optional[float] = positive(None, "a positive number of GB/s, or null")
    # per direction, GB/s; 0: no PCIe link (the CPU profile)
    pcie_bandwidth_gb_s: float = at_least_zero(32.0, "zero or more GB/s")
    # GPUs of one node read each other's memory directly (NVLink, or PCIe peer-to-peer). False (GeForce cards, whose
    # driver reports no P2P): vLLM turns its custom all-reduce off and NCCL stages through host memory, so neither
    # holds device buffers (planner/memory.py non_torch_bytes)
    peer_to_peer: bool = True
    # indicative on-demand price of one GPU
    price_usd_per_hour: Optional[float] = at_least_zero(None, "zero or more US dollars an hour, or null")
    price_source: str = ""
    # the CPU profile only: the host's CPython speed, millions of probe iterations a second (planner/discover.py
    # measure_interpreter); the engine's Python costs calibrated on another host scale by it. None: not measured
    interpreter_speed_mops: Optional[float] = positive(None, "a positive number of million iterations a second, or null")

    def supports(self, fmt: str) -> bool:
        """True if the hardware has native math for `fmt` (bf16, fp8, int8, fp4)."""
        return getattr(self, f"dense_tflops_{fmt}") is not None


@dataclass(frozen=True)
class HwSpec:
    """A deployment target: a GPU model, how many per node, how many nodes, and how they connect."""

    name: str = catalog_name()
    source: str
    gpu: GpuSpec
    # at most 72: the largest NVLink domain one server's engine addresses (GB200 NVL72); more GPUs are more nodes
    gpus_per_node: int = bounded("a whole number of GPUs from 1 to 72 (more GPUs: hw.nodes)", ge=1, le=72)
    nodes: int = bounded("a whole number of nodes from 1 to 1024", 1, ge=1, le=1024)
    intra_node: Interconnect = Interconnect.nvlink
    # per node, per direction (e.g. 8 x 400 Gb/s = 400 GB/s)
    inter_node_bandwidth_gb_s: Optional[float] = positive(None, "a positive number of GB/s, or null")
    discover: bool = False  # fill gpu and gpus_per_node from this machine (pynvml / psutil)
    catalog: bool = False  # hw=any: search every priced GPU of conf/gpu instead (planner/hardware.py)

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def price_usd_per_hour(self) -> Optional[float]:
        p = self.gpu.price_usd_per_hour
        return None if p is None else p * self.total_gpus


@dataclass(frozen=True)
class TargetSpec:
    """Service-level objectives; None means no bound."""

    name: str = catalog_name()
    objective: Objective
    ttft_ms: Optional[float] = positive(None, _SLO)
    tpot_ms: Optional[float] = positive(None, _SLO)
    e2e_latency_ms: Optional[float] = positive(None, _SLO)
    # the SLOs hold at this percentile: the ones the planner's simulation predicts (at least 120 requests per
    # replica) and verification checks
    percentile: float = bounded("a percentile from 50 to 99, the ones the planner's simulation predicts (at least "
                                "120 requests per replica) and verification checks", 90.0, ge=50, le=99)
    # requests/s to sustain; a plan's rates print and simulate to a thousandth of a request a second
    min_request_rate: Optional[float] = bounded(_RATE, None, ge=0.001)
    min_output_throughput_tok_s: Optional[float] = positive(None, _SLO)
    max_usd_per_hour: Optional[float] = positive(None, _SLO)
    # [low, high] requests/s over the day: the replicas per rate band for an autoscaler (planner/autoscale.py)
    request_rate_range: Optional[List[float]] = None
    min_concurrency: int = positive_int(32)  # requests of the workload's mean length the KV cache must hold at once
    quantize_for_speed: bool = False  # take FP8 weights/KV for speed even when bf16 fits (accuracy trade accepted)
    # the accuracy a quantized plan may lose against its unquantized baseline on the quality task (action=verify
    # quality=true, planner/quality.py), absolute (0.01 = one point of a 0-1 accuracy). Default 0.01: 8-bit
    # formats keep about 99% of the baseline's accuracy ("Give Me BF16 or Give Me Death", arXiv 2411.02355)
    max_accuracy_drop: float = bounded("an accuracy drop from 0 to 1 (0.01 = one point of a 0-1 accuracy)", 0.01,
                                       ge=0, le=1)
    description: str = ""


@dataclass(frozen=True)
class WorkloadSpec:
    """Traffic shape; names follow `vllm bench serve` where it has one."""

    name: str = catalog_name()
    input_len: int = positive_int(what="a positive number of tokens")  # mean prompt tokens
    output_len: int = positive_int(what="a positive number of tokens")  # mean generated tokens
    # lengths uniform in [len*(1-r), len*(1+r)] (vllm bench serve --random-range-ratio)
    range_ratio: float = bounded("in [0, 1): lengths vary within ±ratio of the mean", 0.0, ge=0, lt=1)
    # requests/s (Poisson); None: as fast as possible
    request_rate: Optional[float] = bounded(_RATE.replace("no bound", "as fast as possible"), None, ge=0.001)
    burstiness: float = positive(1.0, "positive (1 = Poisson)")  # gamma shape of inter-arrival times; 1 = Poisson
    # requests in flight; None: unbounded
    max_concurrency: Optional[int] = positive_int(None, "a positive integer, or null for unbounded")
    # leading prompt tokens shared by the requests of one prefix group (system prompt, RAG context)
    shared_prefix_len: int = at_least_zero(0, "zero or more tokens")
    # prompt groups, each with its own shared prefix: 1 = every request shares it; N = a pool of N prompts that the
    # traffic rotates through (vllm bench serve --prefix-repetition-num-prefixes; requests split evenly, shuffled)
    num_prefixes: int = positive_int(1, "one or more prompt groups")
    stream: bool = True
    num_prompts: int = positive_int(200)  # requests in a verification run
    untrusted_prefixes: bool = False  # tenants who must not learn each other's prompts (prefix-cache timing)
    images_per_prompt: int = at_least_zero(0)  # VLM traffic: images in each request
    max_loras: int = at_least_zero(0)  # LoRA adapters served at once (0: no LoRA)
    max_lora_rank: int = positive_int(16)  # the largest adapter rank
    # context to serve; None: input and output at their largest
    max_model_len: Optional[int] = positive_int(None, "a positive number of tokens, or null")
    description: str = ""

    @property
    def max_input_len(self) -> int:
        """The longest prompt the load test samples (length_range's upper bound)."""
        return length_range(self.input_len, self.range_ratio)[1]

    @property
    def max_output_len(self) -> int:
        """The longest answer the load test samples (length_range's upper bound)."""
        return length_range(self.output_len, self.range_ratio)[1]


def length_range(mean: int, range_ratio: float) -> tuple[int, int]:
    """(shortest, longest) length sampled around `mean`, both inclusive, as vllm bench serve's --random-range-ratio:
    [floor(mean·(1−r)), ceil(mean·(1+r))], at least 1 (vllm/benchmarks/datasets/utils.py get_sampling_params,
    vLLM 0.32; planner/simulate.py lengths samples it)."""
    return max(math.floor(mean * (1 - range_ratio)), 1), max(math.ceil(mean * (1 + range_ratio)), 1)


@dataclass(frozen=True)
class PrecisionSpec:
    name: str = catalog_name()
    weights: Weights = Weights.auto
    kv_cache: KvPrecision = KvPrecision.auto
    description: str = ""


@dataclass(frozen=True)
class BackendSpec:
    name: BackendName = BackendName.auto


@dataclass(frozen=True)
class Pins:
    """`plan.<field>=value` overrides: fixed values the planner must respect (None: free)."""

    backend: Optional[BackendName] = None
    tensor_parallel: Optional[int] = positive_int(None, _PIN)
    pipeline_parallel: Optional[int] = positive_int(None, _PIN)
    data_parallel: Optional[int] = positive_int(None, _PIN)  # attention data-parallel ranks in one server (MoE models)
    expert_parallel: Optional[bool] = None  # MoE experts spread over the server's GPUs instead of sliced
    replicas: Optional[int] = positive_int(None, _PIN)
    dtype: Optional[Dtype] = None
    quantization: Optional[Quantization] = None
    kv_cache_dtype: Optional[KvPrecision] = None
    max_model_len: Optional[int] = positive_int(None, _PIN)
    max_num_seqs: Optional[int] = positive_int(None, _PIN)
    max_num_batched_tokens: Optional[int] = positive_int(None, _PIN)
    gpu_memory_utilization: Optional[float] = bounded("a fraction in (0, 1]", None, gt=0, le=1)
    enable_prefix_caching: Optional[bool] = None
    enable_chunked_prefill: Optional[bool] = None
    kv_cache_space_gib: Optional[int] = positive_int(None, _PIN)  # CPU: VLLM_CPU_KVCACHE_SPACE per worker
    stream_interval: Optional[int] = positive_int(None, _PIN)  # output tokens per streamed chunk (--stream-interval)
    disaggregation: Optional[bool] = None  # true: only prefill/decode splits (xPyD); false: aggregated only
    kv_connector: Optional[str] = None  # xPyD: conf/calibration/kv-transfer.yaml connector (nixl, mooncake, lmcache)

    def given(self) -> dict:
        """The pinned fields only, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Request:
    """Everything the user asked for, resolved: the planner's one input."""

    model: ModelSpec
    hw: HwSpec
    target: TargetSpec
    workload: WorkloadSpec
    precision: PrecisionSpec
    backend: BackendSpec = field(default_factory=BackendSpec)
    pins: Pins = field(default_factory=Pins)

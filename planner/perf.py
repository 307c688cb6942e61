"""Performance model: the time of one engine step, and steady-state serving metrics, for a candidate plan.

Step time (one TP rank): per layer, the linear layers as a roofline max(FLOPs / (peak × GEMM efficiency at M
tokens), weight bytes / (HBM bandwidth × efficiency)); attention as KV-cache reads (decode) and causal FLOPs
(prefill chunks); the elementwise kernels (norms, rotary, KV write, activation: floor + bytes); two all-reduces per
layer under TP (the measured NCCL curve); the lm_head; and the engine's own cost per step. MoE layers read only the
experts the batch touches and compute the routed ones at each expert's M; expert parallel swaps the MoE all-reduce
for an all-to-all. Pipeline stages run pp micro-batches at once, as vLLM does, and send activations between stages.
Efficiencies come from conf/calibration (measured, cited), never fitted to end-to-end serving numbers; each term and
its source: docs/perf-model.md.

Steady state (vectorised over candidates in the search): a fixed point of Little's law for the running batch at the
offered load; the discrete-event simulation (planner/simulate.py) gives the chosen plan's percentiles.
"""

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner import memory, moe
from planner.calibration import (BF16, FP8_KIND, FP8_TENSOR, Calibration, borrowed_note,  # noqa: F401 (re-exported)
                                 calibration, transferred_note)
from planner.specs import DeviceKind, Dtype, GpuSpec, HwSpec, Interconnect, KvPrecision, ModelSpec, Quantization


def cpu_thread_share(gpu: GpuSpec, ranks: int) -> float:
    """The share of a CPU's measured matmul peak (all cores, planner/discover.py) that one vLLM worker computes
    with: vLLM 0.32 binds each rank's OpenMP threads to the cores left after reserving one per rank for the other
    processes (vllm/utils/ompmultiprocessing.py:44-50, split among the ranks), "Reducing Torch threads from 2 to 1"
    on a 2-core machine. 1.0 on a GPU."""
    if gpu.kind is not DeviceKind.cpu or not gpu.num_cores:
        return 1.0
    threads = max(1, (gpu.num_cores - ranks) // ranks)
    return min(1.0, threads / gpu.num_cores)


def intra_node_bus_gb_s(cal: Calibration, hw: HwSpec, gpu: GpuSpec, tp: int) -> float:
    """All-reduce bus bandwidth inside a node, GB/s, for the link the GPUs of `hw` share: the calibration's bus figure
    for that kind of link, scaled by this GPU's own link over the one the figure holds for (an H800's 400 GB/s NVLink
    is 4/9 of the H100's 900; a PCIe Gen5 card has twice a Gen4 card's bandwidth). AMD xGMI: n-1 mesh links at TP n."""
    if hw.intra_node is Interconnect.nvlink and gpu.nvlink_bandwidth_gb_s:
        return cal.nvlink_bus_gb_s * gpu.nvlink_bandwidth_gb_s / cal.nvlink_reference_gb_s
    if hw.intra_node is Interconnect.xgmi and cal.xgmi_link_gb_s:
        return cal.xgmi_link_gb_s * max(tp - 1, 1)
    if gpu.kind is DeviceKind.gpu and gpu.pcie_bandwidth_gb_s:
        return cal.pcie_bus_gb_s * gpu.pcie_bandwidth_gb_s / cal.pcie_reference_gb_s
    return cal.pcie_bus_gb_s  # CPU workers: the calibration's own figure


@dataclass(frozen=True)
class StepModel:
    """Step time of one candidate: model × hardware × layout × formats."""

    model: ModelSpec
    gpu: GpuSpec
    hw: HwSpec
    tp: int
    pp: int
    dtype: Dtype
    quant: Quantization
    kv: KvPrecision
    calibrated_on: Optional[str] = None  # use another GPU's calibration file (H100 -> H200 transfer check)
    expert_parallel: bool = False  # MoE experts spread whole over the server's tp x dp GPUs instead of sliced
    dp: int = 1  # attention data-parallel ranks: the step is one DP rank's, every rank carrying the same batch
    stream_interval: int = 1  # output tokens per streamed chunk (the front end's work on a CPU host: steady.py)

    @functools.cached_property
    def _consts(self) -> dict:
        m, gpu, tp = self.model, self.gpu, self.tp
        cal = calibration(self.calibrated_on or gpu.name).on_host(gpu.interpreter_speed_mops)
        c = memory.param_counts(m)
        act = memory.DTYPE_BYTES[self.dtype.value]
        bpw = act if self.quant is Quantization.none else memory.QUANT_BYTES_PER_WEIGHT[self.quant]
        fp8_compute = self.quant is Quantization.fp8 and gpu.supports("fp8")
        # the FP8 GEMM kernel by the checkpoint's scaling (per-tensor when the engine quantizes a bf16 checkpoint)
        gemm_kind = FP8_KIND.get(m.fp8_scaling or "tensor", FP8_TENSOR) if fp8_compute else BF16
        int8_compute = self.quant is Quantization.int8 and gpu.supports("int8")
        peak_tflops = (gpu.dense_tflops_fp8 if fp8_compute else gpu.dense_tflops_int8 if int8_compute else
                       (gpu.dense_tflops_bf16 or gpu.dense_tflops_fp16) if self.dtype is not Dtype.float32 else
                       (gpu.dense_tflops_fp32 or gpu.dense_tflops_fp16)) * cpu_thread_share(gpu, tp * self.pp)
        moe_inter = m.moe_intermediate_size or m.intermediate_size
        layers = max(memory.pp_partition(m.num_hidden_layers, self.pp))
        moe_layers = round(c.moe_layers * layers / m.num_hidden_layers)
        link = intra_node_bus_gb_s(cal, self.hw, gpu, tp)
        return {
            "cal": cal, "bpw": bpw, "act": act, "fp8": fp8_compute, "gemm_kind": gemm_kind,
            # the quantisation kernel o_proj's input runs on its own under FP8 (the other GEMM inputs' fuse into
            # RMSNorm / SiLU-and-mul): its floor, and bf16 in + fp8 out per element of the attention output
            "quant_floor": float(cal.quant_seconds(gemm_kind)) if fp8_compute else 0.0,
            "quant_bytes": 3.0 * m.num_attention_heads * m.head_dim_eff / tp if fp8_compute else 0.0,
            "int4": self.quant in (Quantization.awq, Quantization.gptq, Quantization.nvfp4, Quantization.mxfp4),
            "peak": peak_tflops * 1e12, "bw": gpu.hbm_bandwidth_gb_s * 1e9,
            "layers": layers, "moe_layers": moe_layers, "dense_layers": layers - moe_layers,
            "attn_params": (c.attn_per_layer + c.norms_per_layer) / tp,
            "dense_mlp_params": c.dense_mlp_per_layer / tp,
            "shared_params": 3 * m.hidden_size * (moe_inter * m.num_shared_experts
                                                  + (m.shared_expert_intermediate_size or 0)) / tp,
            **moe.consts(m, tp, self.dp, self.expert_parallel), **self._attention_consts(cal),
            "kv_layer": memory.kv_bytes_per_token_layer(m, tp, act_kv(self.kv, self.dtype)),
            "lm_head_params": m.vocab_size * m.hidden_size / tp,
            "link": link * 1e9, "tp": tp, "pp": self.pp,
            # the MoE group of attention DP spans tp x dp GPUs (on an xGMI mesh: that many links)
            "moe_link": intra_node_bus_gb_s(cal, self.hw, gpu, tp * self.dp) * 1e9,
            "elem_floor": cal.elementwise_floor_seconds(m.hidden_size),
            # pipeline stages across nodes send each micro-batch's hidden states over the node's network share
            # (inter_node_bandwidth_gb_s / GPUs per node); stages within a node over NVLink/PCIe
            "pp_link": (self.hw.inter_node_bandwidth_gb_s / self.hw.gpus_per_node * 1e9
                        if self.hw.nodes > 1 and self.hw.inter_node_bandwidth_gb_s else link * 1e9),
            "hidden": m.hidden_size, "dp_sync": cal.dp_sync_s if self.dp > 1 else 0.0,
            # bytes per token through the elementwise kernels: add+RMSNorm reads x and the residual and writes
            # both (x2 per layer, full hidden on every rank); silu_and_mul reads 2 x and writes 1 x inter/tp (an
            # MoE layer's: moe.expert_seconds; a dense layer of an MoE model: elem_dense_mlp);
            # rotary reads and writes q and k; reshape_and_cache reads and writes k and v.
            "elem_bytes": act * (2 * 4 * m.hidden_size + (0 if m.is_moe else 3 * moe_inter / tp)
                                 + 2 * (m.num_attention_heads + m.num_key_value_heads) * m.head_dim_eff / tp
                                 + 4 * m.num_key_value_heads * m.head_dim_eff / tp),
            "elem_dense_mlp": act * 3 * m.intermediate_size / tp if m.is_moe else 0.0,
        }

    def _attention_consts(self, cal: Calibration) -> dict:
        """The attention terms of _consts: its peak, and FLOPs per context token of prefill and of MLA decode."""
        m, gpu, tp = self.model, self.gpu, self.tp
        return {
            # attention runs in bf16 whatever the weights (FP8 attention is not modelled)
            "peak_attn": ((gpu.dense_tflops_bf16 or gpu.dense_tflops_fp16) if self.dtype is not Dtype.float32
                          else (gpu.dense_tflops_fp32 or gpu.dense_tflops_fp16)) * 1e12
            * cpu_thread_share(gpu, tp * self.pp),
            # causal prefill: QK^T and PV, 2 FLOPs per multiply-add, per head and (query, context) pair; MLA prefill
            # decompresses K and V per head (qk_nope + qk_rope for QK, v_head_dim for PV; vLLM MLA forward_mha)
            "attn_flops_per_ctx": 2 * (m.num_attention_heads / tp) * (
                (m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0) + (m.v_head_dim or 0) if m.is_mla
                else 2 * m.head_dim_eff),
            # MLA decode with absorbed weights (DeepSeek-V2 paper §2.1.3; vLLM MLACommonImpl forward_mqa): every head
            # scores the latent + rope key and sums the latent value, 2·(kv_lora + rope) + 2·kv_lora FLOPs per
            # context token, at FlashMLA's compute efficiency on the bf16 peak (perf-default.yaml mla_decode)
            "mla_decode_flops_per_ctx": 2 * (m.num_attention_heads / tp) * (
                2 * (m.kv_lora_rank or 0) + (m.qk_rope_head_dim or 0)) if m.is_mla else 0.0,
            "mla_peak": (gpu.dense_tflops_bf16 or gpu.dense_tflops_fp16) * 1e12 * cal.mla_decode_efficiency,
        }

    def step_seconds(self, decode_seqs, decode_context, prefill_tokens, prefill_context, busiest_prefill=None,
                     busiest_context=None):
        """Time of one engine step (seconds); arguments may be numpy arrays (broadcast). With attention DP the
        arguments are one rank's (the mean rank's); `busiest_prefill` / `busiest_context`: the prefill tokens and
        their attention context on the busiest rank of the step, which every rank waits for (dp_busiest_prefill)."""
        return _step_time(self._consts, self.model.hidden_size, decode_seqs, decode_context, prefill_tokens,
                          prefill_context, False, busiest_prefill, busiest_context)

    def layer_seconds(self, decode_seqs, decode_context, prefill_tokens, prefill_context):
        """One dense decoder layer (elementwise kernels included) without communication, lm_head or step overhead: what
        benchmarks/gpu/roofline_calibration.py times (layer_step_ms), for checking the model against it."""
        return self._time(decode_seqs, decode_context, prefill_tokens, prefill_context, layer_only=True)

    def comm_seconds(self, tokens):
        """One layer's TP communication for a step of `tokens` tokens: two all-reduces of tokens x hidden."""
        return _comm(self._consts, self.model.hidden_size, np.asarray(tokens, dtype=float))

    def _time(self, decode_seqs, decode_context, prefill_tokens, prefill_context, layer_only: bool):
        return _step_time(self._consts, self.model.hidden_size, decode_seqs, decode_context, prefill_tokens,
                          prefill_context, layer_only)


def _comm(k: dict, hidden: int, tokens):
    return 2 * k["cal"].allreduce_seconds(tokens * hidden * k["act"], k["tp"], k["link"])


def _layer_comm(k: dict, hidden: int, tokens, mean_tokens):
    """(the TP all-reduce of one layer's hidden states, an MoE layer's communication). One all-reduce after
    attention and one after the MLP: a dense layer's, and an MoE layer's without attention DP (TP, or TP + EP:
    vLLM's use_all2all is off at DP 1, config/parallel.py). Attention DP gathers the ranks' tokens for the MoE
    layer and scatters them back instead (moe.dispatch_combine_seconds), over the tp x dp GPUs' links."""
    cal = k["cal"]
    ar = cal.allreduce_seconds(tokens * hidden * k["act"], k["tp"], k["link"])
    if not np.any(k["moe_layers"]):
        return ar, 0.0
    gathered = moe.dispatch_combine_seconds(k, mean_tokens,
                                            lambda nbytes, group: cal.allreduce_seconds(nbytes, group, k["moe_link"]))
    return ar, np.where(k["dp"] > 1, gathered, ar)


def _step_time(k: dict, hidden: int, decode_seqs, decode_context, prefill_tokens, prefill_context,
               layer_only: bool = False, busiest_prefill=None, busiest_context=None):
    """The step time formula (module docstring). `k` holds one candidate's constants (StepModel._consts) or, for
    the search, one array per constant with an entry per candidate (StepGrid): the same arithmetic either way."""
    if busiest_prefill is not None:  # attention DP: the rank-local work runs at the busiest rank's prefill
        busy = np.maximum(np.asarray(busiest_prefill, dtype=float), np.asarray(prefill_tokens, dtype=float))
        busy_ctx = np.maximum(np.asarray(busiest_context, dtype=float), np.asarray(prefill_context, dtype=float))
    else:
        busy, busy_ctx = prefill_tokens, prefill_context
    cal: Calibration = k["cal"]
    # Pipeline parallel: vLLM keeps pp batches in flight (vllm/config/vllm.py max_concurrent_batches,
    # v1/engine/core.py batch_queue), so the running requests split into pp micro-batches and a round in which
    # each advances once takes pp stage times of one micro-batch (the pipeline full; it has bubbles only when a
    # micro-batch is empty).
    mb = np.asarray(k["pp"], dtype=float)
    engine = cal.engine_seconds(np.asarray(decode_seqs, dtype=float), np.asarray(prefill_tokens, dtype=float))
    decode_seqs = np.asarray(decode_seqs, dtype=float) / mb
    decode_context = np.asarray(decode_context, dtype=float) / mb
    prefill_tokens = np.asarray(prefill_tokens, dtype=float) / mb
    prefill_context = np.asarray(busy_ctx, dtype=float) / mb
    mean_tokens = np.maximum(decode_seqs + prefill_tokens, 1.0)  # what this rank sends to the MoE layers
    tokens = np.maximum(decode_seqs + np.asarray(busy, dtype=float) / mb, 1.0)  # the rank-local work's tokens
    # The measured curves are achieved/peak for bf16 or fp8 weights: at small M they already carry those
    # weights' read time. Weight-only int4 reads a quarter of that, so its compute term uses the curve from
    # M >= 256 (compute-bound) and the bandwidth term prices its own bytes.
    eff = cal.gemm_efficiency(np.where(k["int4"], np.maximum(tokens, 256.0), tokens), k["gemm_kind"])
    hbm = k["bw"] * cal.hbm_efficiency

    def linear(params):
        return np.maximum(2.0 * tokens * params / (k["peak"] * eff), params * k["bpw"] / hbm)

    dense = linear(k["attn_params"] + k["dense_mlp_params"])
    # An MoE layer: attention and shared experts as dense GEMMs of this rank's tokens; the routed experts as grouped
    # GEMMs on the busiest GPU of the expert group (planner/moe.py).
    # (each local expert's GEMM at its rows, on the measured grouped-GEMM curve of the weights' kernel)
    moe_layer = 0.0  # dense models (every candidate without MoE layers) skip the grouped-GEMM pricing
    if np.any(k["moe_layers"]):
        routed = moe.expert_seconds(k, mean_tokens,
                                    lambda m, narrow: cal.grouped_efficiency(m, k["gemm_kind"], narrow), hbm)
        moe_layer = linear(k["attn_params"] + k["shared_params"]) + routed
    seqs = np.maximum(np.asarray(decode_seqs, dtype=float), 1.0)
    attn_eff = cal.attention_efficiency(seqs, np.asarray(decode_context, dtype=float) / seqs)
    # decode: the KV cache streamed once (MLA: the latent, compute-bound at many heads per GPU); prefill: FLOPs
    decode = np.maximum(np.asarray(decode_context, dtype=float) * k["kv_layer"] / (k["bw"] * attn_eff),
                        np.asarray(decode_context, dtype=float) * k["mla_decode_flops_per_ctx"] / k["mla_peak"])
    # causal prefill of L tokens attends L^2/2 positions: the chunk's prompt length is 2 x context / tokens
    prompt_len = 2.0 * np.asarray(prefill_context, dtype=float) / np.maximum(tokens - decode_seqs, 1.0)
    attn = decode + (np.asarray(prefill_context, dtype=float) * k["attn_flops_per_ctx"]
                     / (k["peak_attn"] * cal.prefill_efficiency(prompt_len)))
    elem = k["elem_floor"] + tokens * k["elem_bytes"] / hbm + k["quant_floor"] + tokens * k["quant_bytes"] / hbm
    if layer_only:
        return dense + attn + elem
    ar, moe_comm = _layer_comm(k, hidden, tokens, mean_tokens)
    layers = (k["dense_layers"] * (dense + ar + tokens * k["elem_dense_mlp"] / hbm)
              + k["moe_layers"] * (moe_layer + moe_comm) + k["layers"] * (attn + ar + elem))
    lm_head = np.maximum(2 * seqs * k["lm_head_params"] / (k["peak"] * eff),
                         k["lm_head_params"] * k["act"] / hbm)
    send = (k["pp"] > 1) * (cal.allreduce_latency_s + tokens * hidden * k["act"] / k["pp_link"])
    # attention-DP ranks agree on their token counts once a step (vLLM v1/worker/dp_utils.py coordinate_batch_across_dp)
    engine = engine + k["dp_sync"]
    return k["pp"] * (layers + send + lm_head) + engine  # the last stage (lm_head) sets the pace


class StepGrid:
    """Many candidates' step models as one: each constant an array with an entry per candidate (`index` maps a
    candidate to its StepModel), so the search prices the whole space in one numpy expression."""

    def __init__(self, models: list, index):
        self.model = models[0].model
        self.gpu = models[0].gpu
        index = np.asarray(index, dtype=int)
        self.tp = np.array([m.tp for m in models])[index]
        self.pp = np.array([m.pp for m in models])[index]
        self.dp = np.array([m.dp for m in models])[index]
        self.stream_interval = np.array([m.stream_interval for m in models])[index]
        consts = [m._consts for m in models]
        self._consts = {key: (consts[0][key] if key == "cal" else np.array([c[key] for c in consts])[index])
                        for key in consts[0]}

    def step_seconds(self, decode_seqs, decode_context, prefill_tokens, prefill_context, busiest_prefill=None,
                     busiest_context=None):
        return _step_time(self._consts, self.model.hidden_size, decode_seqs, decode_context, prefill_tokens,
                          prefill_context, False, busiest_prefill, busiest_context)


def act_kv(kv: KvPrecision, dtype: Dtype) -> str:
    return dtype.value if kv is KvPrecision.auto else kv.value

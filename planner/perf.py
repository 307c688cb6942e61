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
from importlib import resources
from typing import Optional

import numpy as np
import yaml

from planner.fastyaml import FAST_LOADER

from planner import memory, moe
from planner.specs import DeviceKind, Dtype, GpuSpec, HwSpec, Interconnect, KvPrecision, ModelSpec, Quantization


@dataclass(frozen=True)
class Calibration:
    """Efficiency figures for one GPU (conf/calibration/<gpu>.yaml, else perf-default.yaml)."""

    source: str
    gemm_m: tuple
    gemm_bf16: tuple
    gemm_fp8: tuple
    hbm_efficiency: float
    decode_attention_efficiency: float
    prefill_attention_efficiency: float
    nvlink_bus_gb_s: float
    pcie_bus_gb_s: float
    allreduce_latency_s: float
    step_overhead_s: float
    ar_bytes: tuple = ()  # measured 2-GPU all-reduce time by message size (in a CUDA graph), when measured
    ar_us: tuple = ()
    attn_batch: tuple = ()  # decode attention efficiency grid (batch x context), when measured
    attn_context: tuple = ()
    attn_grid: tuple = ()
    elem_hidden: tuple = ()  # elementwise kernels: hidden sizes of the measured floors
    elem_floor_us: tuple = ()  # per layer (all its elementwise kernels) at each of elem_hidden
    per_seq_s: float = 0.0  # engine cost per running sequence per step (the CPU engine: conf/calibration/cpu.yaml)
    per_prefill_token_s: float = 0.0  # engine cost per prompt token scheduled in a step
    # CPU seconds the serving front end (API server, the EngineCore's socket threads, and the load generator of
    # action=verify) spends on the host per output token, per request and per engine step: on a CPU host they take
    # cores from the engine (conf/calibration/cpu.yaml `frontend`)
    host_cpu_s_per_token: float = 0.0
    host_cpu_s_per_request: float = 0.0
    host_cpu_s_per_step: float = 0.0
    # Time to first token outside the engine step: admission (HTTP, request processing, hand-off to the engine
    # core) and the first token's way back (detokenizing, streaming); `request_ms` in the calibration files
    request_s: float = 0.0
    # Steps a new request waits beyond a synchronous engine's: with async scheduling (vLLM V1's default on GPUs,
    # TensorRT-LLM's and SGLang's overlap schedulers) the next step is scheduled while this one runs, so a request
    # that arrives now is scheduled one step later (conf/calibration `async_scheduling_steps`)
    async_steps: float = 0.0
    xgmi_link_gb_s: float = 0.0  # usable bandwidth of one AMD xGMI link, per direction (a mesh: n-1 links at TP n)
    nvlink_reference_gb_s: float = 900.0  # the NVLink figure (gpu/ nvlink_bandwidth_gb_s) nvlink_bus_gb_s holds for
    pcie_reference_gb_s: float = 32.0  # the PCIe figure per direction (gpu/ pcie_bandwidth_gb_s) pcie_bus_gb_s holds for
    # an all-reduce of a few bytes outside CUDA graphs (launch + sync): what attention-DP ranks pay once a step to
    # agree on their token counts (vLLM v1/worker/dp_utils.py _run_ar); the measured eager curve's small messages
    dp_sync_s: float = 0.0
    mla_decode_efficiency: float = 0.0  # MLA decode attention FLOPs, achieved / dense peak (perf-default.yaml)
    own_file: bool = False  # True: conf/calibration/<gpu>.yaml exists (measured on this GPU); False: perf-default
    measured_vendor: str = "nvidia"  # the vendor of the devices perf-default.yaml was measured on

    def engine_seconds(self, decode_seqs, prefill_tokens):
        """The engine's own cost of a step besides the model's arithmetic (scheduling, inputs, sampling)."""
        return self.step_overhead_s + self.per_seq_s * decode_seqs + self.per_prefill_token_s * prefill_tokens

    def elementwise_floor_seconds(self, hidden: int) -> float:
        """The launch-and-tail floor of one layer's elementwise kernels (norms, rotary, KV write, activation)."""
        if not self.elem_hidden:
            return 0.0
        return float(np.interp(np.log2(hidden), np.log2(self.elem_hidden), self.elem_floor_us)) * 1e-6

    def gemm_efficiency(self, m, fp8=False):
        """Achieved/peak of a GEMM with M rows; `fp8` may be an array (one flag per candidate)."""
        lm = np.log2(np.maximum(m, 1))
        if np.ndim(fp8) == 0:
            return np.interp(lm, np.log2(self.gemm_m), self.gemm_fp8 if fp8 else self.gemm_bf16)
        return np.where(fp8, np.interp(lm, np.log2(self.gemm_m), self.gemm_fp8),
                        np.interp(lm, np.log2(self.gemm_m), self.gemm_bf16))

    def allreduce_seconds(self, nbytes, tp, link_bytes_s):
        """One all-reduce of `nbytes` over `tp` GPUs (0 at TP 1; `tp` may be an array). Measured 2-GPU curve
        (conf/calibration/comm-*.yaml, in a CUDA graph) when there is one, its ring volume scaled by (tp-1)/tp x 2
        for more GPUs (nccl-tests' bus bandwidth relation); else latency + ring volume over the bus bandwidth."""
        nbytes = np.asarray(nbytes, dtype=float)
        tp = np.asarray(tp, dtype=float)
        ring = 2 * (tp - 1) / tp
        if self.ar_bytes:
            two = np.interp(np.log2(np.maximum(nbytes, 1.0)), np.log2(self.ar_bytes), self.ar_us) * 1e-6
            lat = self.ar_us[0] * 1e-6
            t = lat + (two - lat) * ring  # at tp=2 the ring factor is 1: the measurement itself
        else:
            t = self.allreduce_latency_s + nbytes * ring / link_bytes_s
        return np.where(tp > 1, t, 0.0)

    def attention_efficiency(self, batch, context):
        """KV-read efficiency of decode attention at `batch` sequences of mean `context` tokens: bilinear in log2
        over the measured grid (small batches at short context are launch-bound), else the scalar figure."""
        if not self.attn_grid:
            return self.decode_attention_efficiency
        grid = np.asarray(self.attn_grid)
        # Fractional grid coordinates, then the four neighbours (vectorised over any shape of inputs).
        fb = np.interp(np.log2(np.maximum(batch, 1e-9)), np.log2(self.attn_batch), np.arange(grid.shape[0]))
        fc = np.interp(np.log2(np.maximum(context, 1e-9)), np.log2(self.attn_context), np.arange(grid.shape[1]))
        b0 = np.minimum(np.floor(fb).astype(int), grid.shape[0] - 2) if grid.shape[0] > 1 else np.zeros_like(fb, int)
        c0 = np.minimum(np.floor(fc).astype(int), grid.shape[1] - 2) if grid.shape[1] > 1 else np.zeros_like(fc, int)
        wb, wc = fb - b0, fc - c0
        b1, c1 = np.minimum(b0 + 1, grid.shape[0] - 1), np.minimum(c0 + 1, grid.shape[1] - 1)
        return ((1 - wb) * ((1 - wc) * grid[b0, c0] + wc * grid[b0, c1])
                + wb * ((1 - wc) * grid[b1, c0] + wc * grid[b1, c1]))


def _curve(d: dict, key: str, default: dict) -> tuple:
    c = d.get(key) or default
    return tuple(float(x) for x in c["m"]), tuple(float(x) for x in c["efficiency"])


@functools.lru_cache(maxsize=None)
def calibration(gpu_name: str) -> Calibration:
    folder = resources.files("conf").joinpath("calibration")
    base = yaml.load(folder.joinpath("perf-default.yaml").read_text(), Loader=FAST_LOADER)
    name = {"h100-sxm": "h100", "h100-pcie": "h100-pcie"}.get(gpu_name, gpu_name)
    own = folder.joinpath(f"{name}.yaml")
    d = {**base, **(yaml.load(own.read_text(), Loader=FAST_LOADER) if own.is_file() else {})}
    m, bf16 = _curve(d, "gemm_bf16", base["gemm_bf16"])
    attn = ((d.get("decode_attention") or {}).get("configs") or {}).get("llama-3.1-8b") or {}
    grid = attn.get("bandwidth_efficiency") or []
    grid = [[x if x is not None else row[i - 1] for i, x in enumerate(row)] for row in grid]
    batches = tuple(float(b) for b in (d.get("decode_attention") or {}).get("batch", ()))
    contexts = tuple(float(c) for c in (d.get("decode_attention") or {}).get("context", ()))
    m8, fp8 = _curve(d, "gemm_fp8", base["gemm_fp8"])
    fp8 = tuple(np.interp(np.log2(m), np.log2(m8), fp8)) if m8 != m else fp8
    ar = {**base["allreduce"], **(d.get("allreduce") or {})}
    comm_name = {"h100-sxm": "comm-h100x2", "h200": "comm-h100x2"}.get(gpu_name)  # H200: the same NVLink 4 fabric
    comm = yaml.load(folder.joinpath(f"{comm_name}.yaml").read_text(), Loader=FAST_LOADER) if comm_name else {}
    curve = comm.get("allreduce_2gpu") or {}
    elem = d.get("elementwise") or {}
    elem_floor = [sum(n * elem["floor_us"][op][i] for op, n in elem["per_layer"].items())
                  for i in range(len(elem.get("hidden", ())))]
    pairs = sorted(zip(curve.get("bytes", ()), curve.get("graph_us", ())))
    engine = _engine_terms(d)
    eager_small = [us for b, us in zip(curve.get("bytes", ()), curve.get("eager_us", ())) if b <= 65536]
    return Calibration(
        ar_bytes=tuple(float(b) for b, _ in pairs), ar_us=tuple(float(u) for _, u in pairs),
        source=str(d.get("source", "")), gemm_m=m, gemm_bf16=bf16, gemm_fp8=fp8,
        hbm_efficiency=float(d["hbm_efficiency"]),
        decode_attention_efficiency=float(d.get("decode_attention_efficiency", d["hbm_efficiency"])),
        prefill_attention_efficiency=float(d["prefill_attention_efficiency"]),
        nvlink_bus_gb_s=float(ar["nvlink_bus_bandwidth_gb_s"]), pcie_bus_gb_s=float(ar["pcie_bus_bandwidth_gb_s"]),
        allreduce_latency_s=float(ar["latency_us"]) * 1e-6, step_overhead_s=engine["overhead_ms"] * 1e-3,
        attn_batch=batches if grid else (), attn_context=contexts if grid else (),
        attn_grid=tuple(tuple(float(x) for x in row) for row in grid),
        elem_hidden=tuple(float(h) for h in elem.get("hidden", ())), elem_floor_us=tuple(elem_floor),
        per_seq_s=engine["per_seq_us"] * 1e-6, per_prefill_token_s=engine["per_prefill_token_us"] * 1e-6,
        host_cpu_s_per_token=_frontend(d, "us_per_token") * 1e-6,
        host_cpu_s_per_request=_frontend(d, "ms_per_request") * 1e-3,
        host_cpu_s_per_step=_frontend(d, "us_per_step") * 1e-6, request_s=float(d.get("request_ms", 0.0)) * 1e-3,
        async_steps=float(d.get("async_scheduling_steps", 0.0)),
        xgmi_link_gb_s=float(ar.get("xgmi_link_bandwidth_gb_s", 0.0)), own_file=own.is_file(),
        nvlink_reference_gb_s=float(ar["nvlink_reference_gb_s"]), pcie_reference_gb_s=float(ar["pcie_reference_gb_s"]),
        dp_sync_s=float(np.median(eager_small)) * 1e-6 if eager_small else float(ar["latency_us"]) * 1e-6,
        mla_decode_efficiency=float((d.get("mla_decode") or {}).get("flops_efficiency", 0.5)),
        measured_vendor=str(base.get("measured_vendor", "nvidia")))


def _engine_terms(d: dict) -> dict[str, float]:
    """The engine's own cost of a step besides the model's arithmetic: `engine_step` parts summed (each a dict of
    overhead_ms / per_seq_us / per_prefill_token_us: on a CPU the worker, the scheduler and the hand-off between
    their processes, benchmarks/cpu_serve.py), or the flat `step_overhead_ms` (and per_seq_us, per_prefill_token_us)."""
    parts = [p for p in (d.get("engine_step") or {}).values() if isinstance(p, dict)]
    if not parts:
        parts = [{"overhead_ms": d["step_overhead_ms"], "per_seq_us": d.get("per_seq_us", 0.0),
                  "per_prefill_token_us": d.get("per_prefill_token_us", 0.0)}]
    return {k: sum(float(p.get(k, 0.0)) for p in parts) for k in ("overhead_ms", "per_seq_us", "per_prefill_token_us")}


def _frontend(d: dict, unit: str) -> float:
    """A front-end cost summed over its parts (conf/calibration/cpu.yaml `frontend`: {part: {unit: value}})."""
    return sum(float(part.get(unit, 0.0)) for part in (d.get("frontend") or {}).values() if isinstance(part, dict))


def cpu_thread_share(gpu: GpuSpec, ranks: int) -> float:
    """The share of a CPU's measured matmul peak (all cores, planner/discover.py) that one vLLM worker computes
    with: vLLM 0.32 binds each rank's OpenMP threads to the cores left after reserving one per rank for the other
    processes (vllm/utils/ompmultiprocessing.py:44-50, split among the ranks), "Reducing Torch threads from 2 to 1"
    on a 2-core machine. 1.0 on a GPU."""
    if gpu.kind is not DeviceKind.cpu or not gpu.num_cores:
        return 1.0
    threads = max(1, (gpu.num_cores - ranks) // ranks)
    return min(1.0, threads / gpu.num_cores)


def borrowed_note(gpu: GpuSpec) -> tuple[str, ...]:
    """A plan note when `gpu` has no calibration of its own and borrows curves measured on another vendor's GPUs
    (AMD Instinct on NVIDIA's figures): its predictions are a roofline with foreign efficiencies, not measured."""
    cal = calibration(gpu.name)
    if cal.own_file or gpu.kind is not DeviceKind.gpu or gpu.vendor == cal.measured_vendor:
        return ()
    return (f"{gpu.name} has no microbenchmarks here: its GEMM, attention, HBM and all-reduce efficiencies are "
            f"borrowed from {cal.measured_vendor.upper()} H100/H200 measurements (conf/calibration/perf-default.yaml) "
            f"and scaled by its datasheet peaks; the predicted latencies and throughput are estimates, not measured on "
            f"{gpu.vendor.upper()} hardware (run benchmarks/gpu/ on one to calibrate it).",)


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

    @functools.cached_property
    def _consts(self) -> dict:
        m, gpu, tp = self.model, self.gpu, self.tp
        cal = calibration(self.calibrated_on or gpu.name)
        c = memory.param_counts(m)
        act = memory.DTYPE_BYTES[self.dtype.value]
        bpw = act if self.quant is Quantization.none else memory.QUANT_BYTES_PER_WEIGHT[self.quant]
        fp8_compute = self.quant is Quantization.fp8 and gpu.supports("fp8")
        int8_compute = self.quant is Quantization.int8 and gpu.supports("int8")
        peak_tflops = (gpu.dense_tflops_fp8 if fp8_compute else gpu.dense_tflops_int8 if int8_compute else
                       (gpu.dense_tflops_bf16 or gpu.dense_tflops_fp16) if self.dtype is not Dtype.float32 else
                       (gpu.dense_tflops_fp32 or gpu.dense_tflops_fp16)) * cpu_thread_share(gpu, tp * self.pp)
        moe_inter = m.moe_intermediate_size or m.intermediate_size
        layers = max(memory.pp_partition(m.num_hidden_layers, self.pp))
        moe_layers = round(c.moe_layers * layers / m.num_hidden_layers)
        link = intra_node_bus_gb_s(cal, self.hw, gpu, tp)
        return {
            "cal": cal, "bpw": bpw, "act": act, "fp8": fp8_compute,
            "int4": self.quant in (Quantization.awq, Quantization.gptq, Quantization.nvfp4),
            "peak": peak_tflops * 1e12, "bw": gpu.hbm_bandwidth_gb_s * 1e9,
            "layers": layers, "moe_layers": moe_layers, "dense_layers": layers - moe_layers,
            "attn_params": (c.attn_per_layer + c.norms_per_layer) / tp,
            "dense_mlp_params": c.dense_mlp_per_layer / tp,
            "shared_params": 3 * m.hidden_size * (moe_inter * m.num_shared_experts
                                                  + (m.shared_expert_intermediate_size or 0)) / tp,
            **moe.consts(m, tp, self.dp, self.expert_parallel),
            "kv_layer": memory.kv_bytes_per_token_layer(m, tp, act_kv(self.kv, self.dtype)),
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
    eff = cal.gemm_efficiency(np.where(k["int4"], np.maximum(tokens, 256.0), tokens), k["fp8"])
    hbm = k["bw"] * cal.hbm_efficiency

    def linear(params):
        return np.maximum(2.0 * tokens * params / (k["peak"] * eff), params * k["bpw"] / hbm)

    dense = linear(k["attn_params"] + k["dense_mlp_params"])
    # An MoE layer: attention and shared experts as dense GEMMs of this rank's tokens; the routed experts as grouped
    # GEMMs on the busiest GPU of the expert group (planner/moe.py).
    routed = moe.expert_seconds(k, mean_tokens, lambda m: cal.gemm_efficiency(m, k["fp8"]), hbm)
    moe_layer = linear(k["attn_params"] + k["shared_params"]) + routed
    seqs = np.maximum(np.asarray(decode_seqs, dtype=float), 1.0)
    attn_eff = cal.attention_efficiency(seqs, np.asarray(decode_context, dtype=float) / seqs)
    # decode: the KV cache streamed once (MLA: the latent, compute-bound at many heads per GPU); prefill: FLOPs
    decode = np.maximum(np.asarray(decode_context, dtype=float) * k["kv_layer"] / (k["bw"] * attn_eff),
                        np.asarray(decode_context, dtype=float) * k["mla_decode_flops_per_ctx"] / k["mla_peak"])
    attn = decode + (np.asarray(prefill_context, dtype=float) * k["attn_flops_per_ctx"]
                     / (k["peak"] * cal.prefill_attention_efficiency))
    elem = k["elem_floor"] + tokens * k["elem_bytes"] / hbm
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
        consts = [m._consts for m in models]
        self._consts = {key: (consts[0][key] if key == "cal" else np.array([c[key] for c in consts])[index])
                        for key in consts[0]}

    def step_seconds(self, decode_seqs, decode_context, prefill_tokens, prefill_context, busiest_prefill=None,
                     busiest_context=None):
        return _step_time(self._consts, self.model.hidden_size, decode_seqs, decode_context, prefill_tokens,
                          prefill_context, False, busiest_prefill, busiest_context)


def act_kv(kv: KvPrecision, dtype: Dtype) -> str:
    return dtype.value if kv is KvPrecision.auto else kv.value

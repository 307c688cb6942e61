"""Efficiency figures of the performance model for one GPU: its measured calibration file (conf/calibration/<gpu>.yaml,
benchmarks/gpu/calibrate.py), else the closest measured GPU's curves transferred by spec ratios (planner/transfer.py),
else perf-default.yaml's cited figures. Each curve says where it came from (`provenance`), and a plan on a GPU whose
curves are not its own says so in a note.
"""

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import numpy as np
import yaml

from planner import transfer
from planner.fastyaml import FAST_LOADER
from planner.specs import DeviceKind, GpuSpec

# GEMM kinds: the kernel a linear layer runs by weight format (docs/perf-model.md: which engine runs which kernel)
BF16, FP8_TENSOR, FP8_CHANNEL, FP8_BLOCK = 0, 1, 2, 3
FP8_KIND = {"tensor": FP8_TENSOR, "channel": FP8_CHANNEL, "block": FP8_BLOCK}
# calibration file section of each kind, with the sections it falls back to when that one was not measured
GEMM_SECTIONS = {BF16: ("gemm_bf16",), FP8_TENSOR: ("gemm_fp8_tensor", "gemm_fp8"),
                 FP8_CHANNEL: ("gemm_fp8_rowwise", "gemm_fp8_tensor", "gemm_fp8"),
                 FP8_BLOCK: ("gemm_fp8_block", "gemm_fp8_rowwise", "gemm_fp8_tensor", "gemm_fp8")}
# MoE experts: the CUTLASS grouped GEMM curves (torch._grouped_mm bf16, _scaled_grouped_mm fp8), the class of
# TensorRT-LLM's MoE GEMM and vLLM's cutlass_moe_fp8. vLLM's and SGLang's default bf16 / block-FP8 MoE kernel is
# Triton fused_moe run with per-GPU tuned block configs (fused_moe/configs/E=..,N=..,device_name=NVIDIA_H100...json);
# the calibration's Triton curves use fixed untuned blocks and reach under half of the CUTLASS curve at large M
# (H100: 0.29 vs 0.66 of peak at 1024 rows per expert), a lower bound, so they are recorded but not priced (the
# tuned-config curve, calibrate.py's grouped_gemm_tuned, is not measured yet). DeepGEMM's grouped block-FP8 kernel
# is not measurable here: the fp8 CUTLASS curve stands in for it.
GROUPED_SECTIONS = {BF16: "bf16", FP8_TENSOR: "fp8_rowwise", FP8_CHANNEL: "fp8_rowwise", FP8_BLOCK: "fp8_rowwise"}
QUANT_OP = {FP8_TENSOR: "static_tensor", FP8_CHANNEL: "dynamic_token", FP8_BLOCK: "dynamic_group128"}
CAL_NAME = {"h100-sxm": "h100"}  # conf/gpu name -> calibration file stem, where they differ


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
    # action=verify) spends on the host per output token, per streamed chunk, per request and per engine step: on a
    # CPU host they take cores from the engine (conf/calibration/cpu.yaml `frontend`)
    host_cpu_s_per_token: float = 0.0
    host_cpu_s_per_chunk: float = 0.0
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
    gemm_kinds: tuple = ()  # efficiency on gemm_m for each GEMM kind (BF16, FP8_TENSOR, FP8_CHANNEL, FP8_BLOCK)
    grouped_m: tuple = ()  # tokens per expert of the grouped expert GEMM curves
    grouped_kinds: tuple = ()  # efficiency on grouped_m per GEMM kind (empty: the dense curve at each expert's M)
    # the same per measured expert shape: (narrow dimension min(N, K) of the GEMM, efficiency on grouped_m per GEMM
    # kind), shapes of equal narrow dimension averaged; a sliced expert (TP) has a narrow N or K and fewer tiles
    grouped_shapes: tuple = ()
    prefill_len: tuple = ()  # prompt lengths of the prefill attention curve, when measured
    prefill_eff: tuple = ()
    quant_floor_s: tuple = ()  # per GEMM kind: the activation quantisation kernel's floor (0 for bf16)
    transferred_from: str = ""  # the measured GPU whose curves these are (empty: measured here, or perf-default)
    provenance: tuple = ()  # (section, how it was obtained) pairs
    # CPython speed of the host the engine and front-end costs were measured on (planner/discover.py's probe,
    # `interpreter_speed_mops` in conf/calibration/cpu.yaml); 0: not recorded, costs taken as they are
    interpreter_speed_mops: float = 0.0
    # the effective (harmonic-mean) speed the same probe ran at, sampled on its own thread's CPU clock while the calibrating host served
    # (planner/hostload.py SpeedSampler, `sampled_speed_mops` in cpu.yaml): what the host delivered while the costs
    # above were measured. action=verify samples it again and sets the run's speed beside it. 0: not recorded
    sampled_speed_mops: float = 0.0

    def on_host(self, speed_mops: Optional[float]) -> "Calibration":
        """These costs on a host whose CPython runs at `speed_mops` (planner/discover.py measure_interpreter): the
        engine step's own costs, the front end's CPU seconds and the request's way in and out are single-threaded
        Python (vLLM's scheduler, hand-off, API server), so they scale by the calibrating host's speed over this one's.
        A CI runner 25% slower than the calibrating host served the README loop 26% slower per token."""
        if not speed_mops or not self.interpreter_speed_mops:
            return self
        r = self.interpreter_speed_mops / speed_mops
        return dataclasses.replace(
            self, step_overhead_s=self.step_overhead_s * r, per_seq_s=self.per_seq_s * r,
            per_prefill_token_s=self.per_prefill_token_s * r, host_cpu_s_per_token=self.host_cpu_s_per_token * r,
            host_cpu_s_per_chunk=self.host_cpu_s_per_chunk * r,
            host_cpu_s_per_request=self.host_cpu_s_per_request * r, host_cpu_s_per_step=self.host_cpu_s_per_step * r,
            request_s=self.request_s * r, interpreter_speed_mops=speed_mops,
            sampled_speed_mops=self.sampled_speed_mops / r)

    def engine_seconds(self, decode_seqs, prefill_tokens):
        """The engine's own cost of a step besides the model's arithmetic (scheduling, inputs, sampling)."""
        return self.step_overhead_s + self.per_seq_s * decode_seqs + self.per_prefill_token_s * prefill_tokens

    def elementwise_floor_seconds(self, hidden: int) -> float:
        """The launch-and-tail floor of one layer's elementwise kernels (norms, rotary, KV write, activation)."""
        if not self.elem_hidden:
            return 0.0
        return float(np.interp(np.log2(hidden), np.log2(self.elem_hidden), self.elem_floor_us)) * 1e-6

    def gemm_efficiency(self, m, kind=BF16):
        """Achieved/peak of a GEMM with M rows in one of the GEMM kinds (True/False: per-tensor fp8 / bf16);
        `kind` may be an array (one per candidate)."""
        lm = np.log2(np.maximum(m, 1))
        curves = self.gemm_kinds or (self.gemm_bf16, self.gemm_fp8, self.gemm_fp8, self.gemm_fp8)
        kind = np.asarray(kind, dtype=int)
        if kind.ndim == 0:
            return np.interp(lm, np.log2(self.gemm_m), curves[int(kind)])
        return np.choose(kind, [np.interp(lm, np.log2(self.gemm_m), c) for c in curves])

    def grouped_efficiency(self, m, kind=BF16, narrow=None):
        """Achieved/peak of one grouped expert GEMM launch at m rows per expert (the dense curve where no grouped
        curve was measured). With `narrow`, the GEMM's smaller dimension min(N, K): the measured expert shape
        nearest to it in log2 (a TP-sliced Qwen3-235B expert, K = 192, runs at half the efficiency of a whole one),
        else the median over the shapes."""
        if not self.grouped_kinds:
            return self.gemm_efficiency(m, kind)
        lm = np.log2(np.maximum(m, 1))
        kind = np.asarray(kind, dtype=int)

        def on(curves):
            if kind.ndim == 0:
                return np.interp(lm, np.log2(self.grouped_m), curves[int(kind)])
            return np.choose(kind, [np.interp(lm, np.log2(self.grouped_m), c) for c in curves])
        if narrow is None or not self.grouped_shapes:
            return on(self.grouped_kinds)
        per_shape = np.stack(np.broadcast_arrays(*[on(curves) for _, curves in self.grouped_shapes]))
        dist = np.stack(np.broadcast_arrays(*[np.abs(np.log2(np.maximum(narrow, 1)) - np.log2(n)) + 0 * lm
                                              for n, _ in self.grouped_shapes]))
        return np.take_along_axis(per_shape, np.argmin(dist, axis=0)[None], axis=0)[0]

    def prefill_efficiency(self, length):
        """Achieved/peak of causal prefill attention for prompts of `length` tokens (the scalar where no curve)."""
        if not self.prefill_len:
            return self.prefill_attention_efficiency
        return np.interp(np.log2(np.maximum(length, 1)), np.log2(self.prefill_len), self.prefill_eff)

    def quant_seconds(self, kind):
        """The activation quantisation kernel one FP8 layer runs on its own (o_proj's input: the others fuse into
        RMSNorm and SiLU-and-mul under vLLM's torch.compile), per GEMM kind; 0 for bf16."""
        if not self.quant_floor_s:
            return np.zeros(np.shape(kind))
        return np.take(np.asarray(self.quant_floor_s), np.asarray(kind, dtype=int))

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


def _on(m: tuple, sec: dict, xkey: str = "m") -> tuple:
    """A section's efficiency curve interpolated (log2) onto the grid m; gaps take their neighbours."""
    xs = [float(x) for x, e in zip(sec[xkey], sec["efficiency"]) if e is not None]
    ys = [float(e) for e in sec["efficiency"] if e is not None]
    return tuple(float(v) for v in np.interp(np.log2(m), np.log2(xs), ys)) if xs else ()


def _kinds(d: dict, m: tuple) -> tuple:
    out = []
    for kind in (BF16, FP8_TENSOR, FP8_CHANNEL, FP8_BLOCK):
        sec = next((d[s] for s in GEMM_SECTIONS[kind] if d.get(s) and d[s].get("efficiency")), None)
        out.append(_on(m, sec, "m") if sec else ())
    return tuple(out) if all(out) else ()


def _grouped(d: dict) -> tuple[tuple, tuple]:
    g = d.get("grouped_gemm") or {}
    if not g.get("tokens_per_expert") or not all(g.get(v) for v in set(GROUPED_SECTIONS.values())):
        return (), ()
    m = tuple(float(x) for x in g["tokens_per_expert"])
    return m, tuple(_on(m, {**g[GROUPED_SECTIONS[k]], "m": m}) for k in (BF16, FP8_TENSOR, FP8_CHANNEL, FP8_BLOCK))


def _grouped_shapes(d: dict, m: tuple) -> tuple:
    """Per measured expert shape: (min(N, K), its efficiency on m per GEMM kind), equal narrow dimensions averaged
    (benchmarks/gpu/moe_gemm.py MOE_SLICES: whole experts under EP and their TP slices)."""
    g = d.get("grouped_gemm") or {}
    if not m:
        return ()
    sections = [g[GROUPED_SECTIONS[k]].get("configs") or {} for k in (BF16, FP8_TENSOR, FP8_CHANNEL, FP8_BLOCK)]
    names = [n for n in sections[0] if all(n in sec and sec[n].get("efficiency") for sec in sections)]
    by_narrow: dict[float, list] = {}
    for n in names:
        c = sections[0][n]
        by_narrow.setdefault(float(min(c["n"], c["k"])), []).append(
            [_on(m, {**sec[n], "m": m}) for sec in sections])
    return tuple((narrow, tuple(tuple(float(v) for v in np.mean([curves[i] for curves in group], axis=0))
                                for i in range(4)))
                 for narrow, group in sorted(by_narrow.items()))


def _quant_floors(d: dict, hidden_ref: int = 8192) -> tuple:
    q = ((d.get("fp8_quant") or {}).get("compiled") or {})
    widths = (d.get("fp8_quant") or {}).get("width") or []
    if not q or not widths:
        return ()
    i = min(range(len(widths)), key=lambda j: abs(widths[j] - hidden_ref))
    return (0.0,) + tuple(float((q.get(QUANT_OP[k]) or {}).get("floor_us", [0.0] * len(widths))[i] or 0.0) * 1e-6
                          for k in (FP8_TENSOR, FP8_CHANNEL, FP8_BLOCK))


def _folder():
    return resources.files("conf").joinpath("calibration")


def _load(name: str) -> dict:
    return yaml.load(_folder().joinpath(name).read_text(), Loader=FAST_LOADER)


def _peaks_of(gpu_name: str) -> transfer.Peaks | None:
    f = resources.files("conf").joinpath("gpu", f"{gpu_name}.yaml")
    if not f.is_file():
        return None
    c = yaml.load(f.read_text(), Loader=FAST_LOADER)
    bf16 = c.get("dense_tflops_bf16") or c.get("dense_tflops_fp16") or 0.0
    return transfer.Peaks(name=gpu_name, architecture=str(c.get("architecture", "")),
                          compute_capability=float(c.get("compute_capability") or 0.0), bf16_tflops=float(bf16),
                          fp8_tflops=float(c.get("dense_tflops_fp8") or 0.0), hbm_gb_s=float(c["hbm_bandwidth_gb_s"]))


def measured_gpus() -> dict:
    """conf/gpu name -> calibration file of every GPU measured here (files with catalog peaks and GEMM curves)."""
    out = {}
    for f in sorted(_folder().iterdir(), key=lambda p: p.name):
        if not f.name.endswith(".yaml") or f.name == "perf-default.yaml":
            continue
        d = yaml.load(f.read_text(), Loader=FAST_LOADER) or {}
        cat = str((d.get("peaks") or {}).get("catalog", ""))
        if cat.startswith("conf/gpu/") and d.get("gemm_bf16"):
            out[cat[len("conf/gpu/"):-len(".yaml")]] = f.name
    return out


def _own_or_transferred(gpu_name: str) -> tuple[dict, bool, str, tuple]:
    """(calibration content, own file?, the GPU it was transferred from, provenance)."""
    stem = CAL_NAME.get(gpu_name, gpu_name)
    if _folder().joinpath(f"{stem}.yaml").is_file():
        d = _load(f"{stem}.yaml")
        return d, True, "", (("all", f"measured on {gpu_name}: conf/calibration/{stem}.yaml"),)
    target = _peaks_of(gpu_name)
    measured = {n: p for n in measured_gpus() if (p := _peaks_of(n)) is not None}
    src = transfer.closest(target, list(measured.values())) if target and target.hbm_gb_s else None
    if src is None or gpu_name == "cpu" or not target.bf16_tflops:
        return {}, False, "", (("all", "perf-default.yaml (cited figures)"),)
    d, how = transfer.transfer(_load(measured_gpus()[src.name]), src, target)
    return d, False, src.name, how


@functools.lru_cache(maxsize=None)
def calibration(gpu_name: str) -> Calibration:
    base = _load("perf-default.yaml")
    own, is_own, src, how = _own_or_transferred(gpu_name)
    d = {**base, **own}
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
    comm = _load(f"{comm_name}.yaml") if comm_name else {}
    curve = comm.get("allreduce_2gpu") or {}
    elem = d.get("elementwise") or {}
    elem_floor = [sum(n * elem["floor_us"][op][i] for op, n in elem["per_layer"].items())
                  for i in range(len(elem.get("hidden", ())))]
    pairs = sorted(zip(curve.get("bytes", ()), curve.get("graph_us", ())))
    engine = _engine_terms(d)
    eager_small = [us for b, us in zip(curve.get("bytes", ()), curve.get("eager_us", ())) if b <= 65536]
    grouped_m, grouped = _grouped(d)
    pre = d.get("prefill_attention") or {}
    pre_pts = [(float(x), float(e)) for x, e in zip(pre.get("length", ()), pre.get("efficiency", ())) if e]
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
        host_cpu_s_per_token=_frontend(d, "us_per_token") * 1e-6, host_cpu_s_per_chunk=_frontend(d, "us_per_chunk") * 1e-6,
        host_cpu_s_per_request=_frontend(d, "ms_per_request") * 1e-3,
        host_cpu_s_per_step=_frontend(d, "us_per_step") * 1e-6, request_s=float(d.get("request_ms", 0.0)) * 1e-3,
        async_steps=float(d.get("async_scheduling_steps", 0.0)),
        xgmi_link_gb_s=float(ar.get("xgmi_link_bandwidth_gb_s", 0.0)), own_file=is_own,
        nvlink_reference_gb_s=float(ar["nvlink_reference_gb_s"]), pcie_reference_gb_s=float(ar["pcie_reference_gb_s"]),
        dp_sync_s=float(np.median(eager_small)) * 1e-6 if eager_small else float(ar["latency_us"]) * 1e-6,
        mla_decode_efficiency=float((d.get("mla_decode") or {}).get("flops_efficiency", 0.5)),
        measured_vendor=str(base.get("measured_vendor", "nvidia")), gemm_kinds=_kinds(d, m),
        grouped_m=grouped_m, grouped_kinds=grouped, grouped_shapes=_grouped_shapes(d, grouped_m) if grouped else (),
        prefill_len=tuple(x for x, _ in pre_pts),
        prefill_eff=tuple(e for _, e in pre_pts), quant_floor_s=_quant_floors(d), transferred_from=src,
        provenance=how, interpreter_speed_mops=float(d.get("interpreter_speed_mops") or 0.0),
        sampled_speed_mops=float(d.get("sampled_speed_mops") or 0.0))


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


def transferred_note(gpu: GpuSpec) -> tuple[str, ...]:
    """A plan note when `gpu`'s efficiency curves are another GPU's, transferred by spec ratios: which are moved,
    which carried over unchanged, from which GPU, and the command that measures them."""
    cal = calibration(gpu.name)
    if not cal.transferred_from or gpu.kind is not DeviceKind.gpu:
        return ()
    moved = sorted(k for k, how in cal.provenance if how.startswith("transferred"))
    kept = sorted(k for k, how in cal.provenance if how.startswith("carried"))
    return (f"{gpu.name} has no microbenchmarks here: its GEMM efficiency curves ({', '.join(moved)}) are transferred "
            f"from {cal.transferred_from}'s measurements by the two GPUs' datasheet ratios (compute-bound points by "
            f"peak TFLOP/s, bandwidth-bound ones by HBM GB/s), and {', '.join(kept)} are {cal.transferred_from}'s "
            f"as measured (ratios to the bound that binds them). Measure them: python benchmarks/gpu/calibrate.py "
            f"--out conf/calibration/{gpu.name}.yaml on one.",)


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



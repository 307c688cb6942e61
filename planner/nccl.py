"""nccl-tests preflight for multi-GPU plans: the `all_reduce_perf` (TP group) and `sendrecv_perf` (pipeline stages
across nodes) commands to run before serving, a parser of their output (the text table, or the `-J` JSON file), and
the verdict: measured time by message size against what the perf model assumed (planner/perf.py's all-reduce curve,
conf/calibration/comm-h100x2.yaml), and the plan's step time re-predicted with the measured curve.

    script = render(plan, hw)                                # preflight/nccl-tests.sh (action=render)
    rows = parse(text)                                       # nccl-tests stdout or its -J JSON
    verdict = judge(plan, model, hw, prediction, target, rows, "all_reduce")   # action=preflight log=FILE

nccl-tests options (NVIDIA/nccl-tests README at a0b82b2, 2026-07): -b/-e sizes, -f step factor, -g GPUs per thread,
-G CUDA-graph launches (vLLM replays decode steps in a CUDA graph, as the calibration was measured), -d datatype,
-J JSON output file. JSON layout: src/util.cu writeBenchmarkLinePreamble/Body (results[]: size, count, type, redop,
root, out_of_place/in_place: {time, alg_bw, bus_bw, nwrong}). busbw = algbw x 2(n-1)/n for all-reduce
(doc/PERFORMANCE.md); sendrecv's busbw is its algbw.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner.errors import InputError

ACT_BYTES = 2  # bf16/fp16 activations: what the TP all-reduces and the PP sends carry
GRAPH_LAUNCHES = 20  # -G: like benchmarks/gpu/allreduce.py (20 all-reduces captured and replayed)
SLOWER_WARN = 1.10  # a step 10% slower than predicted is worth a warning even when the SLOs still hold
_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+([\d.e+]+)\s+([\d.e+]+)\s+([\d.e+]+)\s+(\S+)"
                  r"(?:\s+([\d.e+]+)\s+([\d.e+]+)\s+([\d.e+]+)\s+(\S+))?")


@dataclass(frozen=True)
class Row:
    """One message size of an nccl-tests run (out-of-place numbers; in-place when only those exist)."""

    size_bytes: int
    time_us: float
    algbw_gb_s: float
    busbw_gb_s: float


@dataclass(frozen=True)
class Group:
    """A set of GPUs the plan communicates over, and the nccl-tests binary that measures that traffic."""

    name: str  # "tp" or "pp-inter-node"
    test: str  # all_reduce_perf | sendrecv_perf
    ranks: int
    nodes: int
    min_bytes: int
    max_bytes: int


@dataclass(frozen=True)
class SizeCheck:
    size_bytes: int
    assumed_us: float
    measured_us: float

    @property
    def ratio(self) -> float:
        return self.measured_us / self.assumed_us


@dataclass(frozen=True)
class Verdict:
    """Measured against assumed, and what the plan's step (and TPOT) becomes with the measured curve."""

    group: str
    checks: tuple[SizeCheck, ...]
    step_ms_assumed: float  # one decode step at the plan's batch
    step_ms_measured: float
    tpot_ms_predicted: Optional[float]  # the plan's prediction at the target's percentile
    tpot_ms_repredicted: Optional[float]
    breaks_prediction: bool
    why: str


def groups(plan, hw, hidden: int) -> tuple[Group, ...]:
    """The communicating groups of one replica: its TP group (within a node, or across nodes when TP spans them),
    and the pipeline stages' inter-node links when stages sit on different nodes. Empty for a single GPU."""
    out = []
    lo = _pow2_floor(hidden * ACT_BYTES)  # one token's activations
    hi = _pow2_ceil(plan.max_num_batched_tokens * hidden * ACT_BYTES)  # a full prefill chunk
    if plan.tensor_parallel > 1:
        nodes = max(1, math.ceil(plan.tensor_parallel / hw.gpus_per_node))
        out.append(Group("tp", "all_reduce_perf", plan.tensor_parallel, nodes, lo, hi))
    if plan.pipeline_parallel > 1 and plan.nodes > 1 and plan.tensor_parallel <= hw.gpus_per_node:
        out.append(Group("pp-inter-node", "sendrecv_perf", plan.nodes * hw.gpus_per_node, plan.nodes, lo, hi))
    return tuple(out)


def commands(group: Group, gpus_per_node: int, out: str) -> tuple[str, ...]:
    """Shell lines measuring `group`: one process driving its GPUs inside a node; mpirun and srun lines (one
    rank per GPU, nccl-tests built with MPI=1) when it spans nodes. `out` is the -J JSON file."""
    flags = ["-b", str(group.min_bytes), "-e", str(group.max_bytes), "-f", "2", "-d", "bfloat16",
             "-G", str(GRAPH_LAUNCHES), "-J", out]
    if group.nodes == 1:
        return (shlex.join([group.test, *flags, "-g", str(group.ranks)]),)
    per_node = min(group.ranks, gpus_per_node)
    mpi = ["mpirun", "-np", str(group.ranks), "-N", str(per_node), "--hostfile", "hosts", group.test, *flags,
           "-g", "1"]
    srun = ["srun", "-N", str(group.nodes), f"--ntasks-per-node={per_node}", f"--gpus-per-node={per_node}",
            group.test, *flags, "-g", "1"]
    return shlex.join(mpi), shlex.join(srun)


def render(plan, hw, hidden: int) -> Optional[str]:
    """preflight/nccl-tests.sh for the plan, or None when it runs on one GPU."""
    found = groups(plan, hw, hidden)
    if not found:
        return None
    lines = ["#!/usr/bin/env bash",
             "# Rendered by the planner: measure the plan's collectives with NVIDIA/nccl-tests before serving, then",
             "#   python -m planner plan=<this plan>.yaml action=preflight log=<the -J file or the printed table>",
             "# Multi-node lines need nccl-tests built with MPI=1 (make MPI=1) and a hostfile named hosts (mpirun)",
             "# or a Slurm allocation (srun): use one of the two.", "set -euo pipefail"]
    for g in found:
        what = (f"TP group: {g.ranks} GPUs all-reduce tokens x hidden ({g.min_bytes}..{g.max_bytes} bytes)"
                if g.test == "all_reduce_perf" else
                f"pipeline stages across {g.nodes} nodes: send/recv of activations ({g.min_bytes}..{g.max_bytes} "
                "bytes)")
        lines += ["", f"# {what}"] + list(commands(g, hw.gpus_per_node, f"nccl-{g.name}.json"))
    return "\n".join(lines) + "\n"


def parse(text: str) -> tuple[Row, ...]:
    """Rows of an nccl-tests run: its -J JSON document, or the table it prints (comment lines skipped)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _parse_json(stripped)
    rows = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        rows.append(Row(int(m.group(1)), float(m.group(6)), float(m.group(7)), float(m.group(8))))
    if not rows:
        raise InputError("log=: no nccl-tests result rows found (size, count, type, redop, root, time, algbw, busbw "
                         "...). Fix: give the output of all_reduce_perf/sendrecv_perf, or the file its -J option "
                         "wrote.")
    return tuple(sorted(rows, key=lambda r: r.size_bytes))


def _parse_json(text: str) -> tuple[Row, ...]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(f"log=: not valid JSON ({exc}). Fix: give the file nccl-tests' -J option wrote.") from None
    rows = []
    for r in doc.get("results") or ():
        body = r.get("out_of_place") or r.get("in_place")
        if body:
            time = body.get("time", body.get("cpu_time"))
            rows.append(Row(int(r["size"]), float(time), float(body["alg_bw"]), float(body["bus_bw"])))
    if not rows:
        raise InputError("log=: the JSON has no results[] with out_of_place/in_place timings. Fix: give the file "
                         "nccl-tests' -J option wrote.")
    return tuple(sorted(rows, key=lambda r: r.size_bytes))


def measured_us(rows: tuple[Row, ...], nbytes) -> np.ndarray:
    """Measured time at `nbytes`, log-log interpolated between the run's sizes (judge() asks inside its range)."""
    sizes = np.log2([max(r.size_bytes, 1) for r in rows])
    times = np.log2([max(r.time_us, 1e-3) for r in rows])
    return 2 ** np.interp(np.log2(np.maximum(np.asarray(nbytes, dtype=float), 1.0)), sizes, times)


def judge(plan, model, hw, prediction, target, rows: tuple[Row, ...], group: str = "tp") -> Verdict:
    """Compare the measured curve with the perf model's at the plan's message sizes and re-predict its decode
    step (and TPOT) with the measured times in place of the assumed ones."""
    from planner import perf

    sm = perf.StepModel(model, hw.gpu, hw, plan.tensor_parallel, plan.pipeline_parallel, plan.dtype,
                        plan.quantization, plan.kv_cache_dtype, expert_parallel=plan.expert_parallel)
    k = sm._consts
    batch = max(1, plan.max_num_seqs // plan.pipeline_parallel)
    sizes = sorted({batch * model.hidden_size * ACT_BYTES, plan.max_num_batched_tokens * model.hidden_size * ACT_BYTES,
                    model.hidden_size * ACT_BYTES})
    if group == "tp":
        assumed = [float(k["cal"].allreduce_seconds(s, plan.tensor_parallel, k["link"])) * 1e6 for s in sizes]
    else:
        assumed = [(k["cal"].allreduce_latency_s + s / k["pp_link"]) * 1e6 for s in sizes]
    lo, hi = rows[0].size_bytes, rows[-1].size_bytes
    decode_bytes = batch * model.hidden_size * ACT_BYTES
    if not lo <= decode_bytes <= hi:
        raise InputError(f"log=: the nccl-tests run covers {lo:,}..{hi:,} bytes, not the plan's decode all-reduce of "
                         f"{decode_bytes:,} bytes ({batch} sequences x hidden {model.hidden_size} x {ACT_BYTES} B), so "
                         "it cannot say what the plan's steps will take. Fix: rerun with the sizes "
                         "preflight/nccl-tests.sh renders (-b/-e around that size).")
    checks = tuple(SizeCheck(s, a, float(measured_us(rows, s))) for s, a in zip(sizes, assumed) if lo <= s <= hi)
    context = plan.max_model_len // 2
    step = float(sm.step_seconds(batch * plan.pipeline_parallel, batch * plan.pipeline_parallel * context, 0, 0))
    decode = next(c for c in checks if c.size_bytes == decode_bytes)
    per_step = (2 * k["layers"] if group == "tp" else 1) * plan.pipeline_parallel
    new_step = step + per_step * (decode.measured_us - decode.assumed_us) * 1e-6
    return _verdict(group, checks, step, new_step, prediction, target)


def _verdict(group, checks, step, new_step, prediction, target) -> Verdict:
    q = target.percentile
    tpot = dict(prediction.tpot_ms.quantiles).get(q) if prediction is not None else None
    new_tpot = tpot * new_step / step if tpot else None
    misses = bool(target.tpot_ms and new_tpot and new_tpot > target.tpot_ms >= tpot)  # met before, missed now
    slower = new_step / step
    worst = max(checks, key=lambda c: c.ratio)
    why = (f"{group}: measured {worst.measured_us:.1f} us vs assumed {worst.assumed_us:.1f} us at "
           f"{worst.size_bytes:,} bytes (x{worst.ratio:.2f}); the decode step becomes {new_step * 1e3:.3f} ms "
           f"(predicted {step * 1e3:.3f} ms, x{slower:.2f})")
    if new_tpot is not None:
        why += (f"; p{q:g} TPOT {new_tpot:.2f} ms re-predicted vs {tpot:.2f} ms"
                + (f", over the target's {target.tpot_ms:g} ms that the prediction met" if misses else ""))
    return Verdict(group, checks, round(step * 1e3, 4), round(new_step * 1e3, 4), tpot,
                   round(new_tpot, 3) if new_tpot else None, misses or slower > SLOWER_WARN, why)


def _pow2_floor(n: int) -> int:
    return 1 << max(0, int(n).bit_length() - 1)


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())

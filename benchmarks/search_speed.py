"""Search speed: candidates scored per second by the vectorised scorer the search uses (perf.StepGrid +
predict.score_grid), on the whole space (quantization x KV dtype x TP x chunk budget x replicas x max_num_seqs,
memory not pruned); the search's own count and compile time (rules excluded: memory, scoring, one simulation per
finalist); and the CLI's wall time (`python -m planner ...`, a fresh process). Run: python benchmarks/search_speed.py
With AIC_PYTHON set to a virtualenv's python with aiconfigurator, also prints benchmarks/aiconfigurator_compare.py.
"""

import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiconfigurator_compare  # noqa: E402

from planner import compose, perf, predict, rules, search  # noqa: E402
from planner.errors import NoFeasiblePlan  # noqa: E402
from planner.specs import Dtype, KvPrecision, Quantization  # noqa: E402

QUERIES = [["model=llama3-70b", "hw=h100x8"], ["model=llama3-8b", "hw=h100x8", "target=latency"],
           ["model=qwen3-235b-a22b", "hw=h200x8"], ["model=mixtral-8x7b", "hw=a100x8", "target=throughput"]]


def request(overrides):
    with compose.Composer() as c:
        cfg, _ = compose.resolve(c, overrides)
        return compose.to_request(cfg)


def full_space(req):
    """Every (quantization, KV dtype, TP, chunk, replicas, max_num_seqs) the hardware's node allows."""
    models, rows = [], []
    for quant, kv, tp in itertools.product((Quantization.none, Quantization.fp8, Quantization.awq),
                                           (KvPrecision.bf16, KvPrecision.fp8), (1, 2, 4, 8)):
        if tp > req.hw.gpus_per_node:
            continue
        models.append(perf.StepModel(req.model, req.hw.gpu, req.hw, tp, 1, Dtype.bf16, quant, kv))
        rows += [(len(models) - 1, m, r, s) for m in (2048, 4096, 8192, 16384)
                 for r in range(1, req.hw.total_gpus // tp + 1) for s in (8, 16, 32, 64, 128, 256, 512, 1024)]
    return models, np.array(rows, dtype=float)


def score(req, models, rows):
    idx = rows[:, 0].astype(int)
    return predict.score_grid(req, perf.StepGrid(models, idx), replicas=rows[:, 2], max_num_seqs=rows[:, 3],
                              max_num_batched_tokens=rows[:, 1], kv_capacity_seqs=np.full(len(rows), 1000.0),
                              prefix_caching=True, explicit=False)


def main() -> None:
    table = Table(title="Search speed", title_justify="left")
    for col in ("query", "space", "space scored/s", "search candidates", "compile_plan s", "CLI s"):
        table.add_column(col, justify="left" if col == "query" else "right")
    rows = []
    for q in QUERIES:
        req = request(q)
        t0 = time.perf_counter()
        models, space = full_space(req)  # StepModel constants included: the search builds them too
        g = score(req, models, space)
        rate = len(g) / (time.perf_counter() - t0)
        cons = rules.constraints_for(req)
        times, compiled = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            try:
                compiled = search.compile_plan(req, cons)
            except NoFeasiblePlan as e:  # an infeasible target still costs the whole search
                compiled = e.closest
            times.append(time.perf_counter() - t0)
        n = compiled.search.candidates_scored if compiled else 0
        table.add_row(" ".join(q), f"{len(g):,}", f"{rate:,.0f}", f"{n:,}", f"{statistics.median(times):.3f}",
                      f"{aiconfigurator_compare.cli_wall_s(q):.2f}")
        rows.append(aiconfigurator_compare.Ours(q, req, rate, statistics.median(times)))
    Console(width=140).print(table)
    try:
        aic = aiconfigurator_compare.locate()
    except LookupError as e:  # not installed here: the table above is the whole result
        print(f"aiconfigurator side by side skipped: {e}", file=sys.stderr)
        return
    aiconfigurator_compare.side_by_side(rows, aic)


if __name__ == "__main__":
    main()

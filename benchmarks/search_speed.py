"""Search speed: candidates scored per second by the analytic model (planner/predict.estimate), and the whole
compile (rules, memory, ranking, one simulation) per query. Run: python benchmarks/search_speed.py

(aiconfigurator side by side: not run in this session; see the issue notes.)
"""

import itertools
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner import compose, perf, predict, rules, search  # noqa: E402
from planner.specs import Dtype, KvPrecision, Quantization  # noqa: E402

QUERIES = [["model=llama3-70b", "hw=h100x8"], ["model=llama3-8b", "hw=h100x8", "target=latency"],
           ["model=qwen3-235b-a22b", "hw=h200x8"], ["model=mixtral-8x7b", "hw=a100x8", "target=throughput"]]


def request(overrides):
    with compose.Composer() as c:
        cfg, _ = compose.resolve(c, overrides)
        return compose.to_request(cfg)


def main() -> None:
    table = Table(title="Search speed", title_justify="left")
    for col in ("query", "candidates scored", "candidates/s", "compile_plan median s"):
        table.add_column(col)
    for q in QUERIES:
        req = request(q)
        # As the search scores them: one vectorised call per layout and format over a ladder of batch limits.
        grid = list(itertools.product((Quantization.none, Quantization.fp8, Quantization.awq),
                                      (KvPrecision.bf16, KvPrecision.fp8), (1, 2, 4, 8), (2048, 8192)))
        ladder = [8, 16, 32, 64, 128, 256, 512, 1024]
        t0 = time.perf_counter()
        n = 0
        for quant, kv, tp, mnbt in grid:
            sm = perf.StepModel(req.model, req.hw.gpu, req.hw, tp, 1, Dtype.bf16, quant, kv)
            predict.estimates(req, sm, replicas=max(1, 8 // tp), seqs=ladder, max_num_batched_tokens=mnbt,
                              kv_capacity_seqs=1000.0, prefix_caching=True)
            n += len(ladder)
        rate = n / (time.perf_counter() - t0)
        cons = rules.constraints_for(req)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            try:
                search.compile_plan(req, cons)
            except Exception:  # noqa: BLE001 - an infeasible target still costs the whole search
                pass
            times.append(time.perf_counter() - t0)
        table.add_row(" ".join(q), str(n), f"{rate:,.0f}", f"{statistics.median(times):.3f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()

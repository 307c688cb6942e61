"""Wall time of the plan CLI, as a user runs it (a fresh `python -m planner` process), for five queries.

Prints the median of several runs per query. Run: python benchmarks/plan_speed.py [runs]
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [
    "model=llama3-70b hw=h100x4",
    "model=llama3-70b hw=h100x4 target=latency format=json",
    "model=llama3.1-405b hw=2xh100x8 precision=bf16",
    "model=deepseek-v3 hw=h200x8",
    "model=qwen3-235b-a22b hw=h100x8 workload=summarization",
]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    table = Table(title=f"planner CLI wall time (median of {runs} runs, save=false)", title_justify="left")
    table.add_column("query")
    table.add_column("exit", justify="right")
    table.add_column("median s", justify="right")
    table.add_column("min s", justify="right")
    for q in QUERIES:
        times, code = [], None
        for _ in range(runs):
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "planner", *q.split(), "save=false"], cwd=ROOT,
                               capture_output=True)
            times.append(time.perf_counter() - t0)
            code = p.returncode
        table.add_row(q, str(code), f"{statistics.median(times):.3f}", f"{min(times):.3f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()

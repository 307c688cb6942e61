"""The KV-cache pool one engine schedules against: blocks held by each request, and prefix blocks cached per prompt
group (a shared system prompt, or one prompt of a small pool that benchmarks rotate through), resident while any
request uses them and evictable, least recently used first, once none does.

All three engines' prefix caches share this shape at block granularity: vLLM's hash-keyed blocks
(vllm/v1/core/kv_cache_manager.py, full blocks only, the prompt's last token always recomputed), TensorRT-LLM's
block reuse (KvCacheConfig.enable_block_reuse, on by default) and SGLang's radix tree (page size 1).
"""

from collections import OrderedDict


class KvCache:
    """Blocks of `block_size` tokens; `groups[r]` is request r's prefix group (-1: none) and `prefix_tokens` the
    length of every group's shared prefix."""

    def __init__(self, blocks: int, block_size: int, groups: list[int], prefix_tokens: int) -> None:
        self.blocks, self.block_size = blocks, block_size
        self.groups = groups
        self.prefix_blocks = prefix_tokens // block_size  # only whole blocks are cached
        self.own = [0] * len(groups)  # blocks a request holds alone
        self.shared = [0] * len(groups)  # blocks of its group's cached prefix it references
        self.cached: dict[int, int] = {}  # group -> resident prefix blocks
        self.refs: dict[int, int] = {}  # group -> requests referencing its cached blocks
        self.idle: OrderedDict[int, None] = OrderedDict()  # groups nobody references, least recent first
        self.used = 0  # Σ own
        self.attached = [False] * len(groups)

    def free(self) -> int:
        """Blocks no request holds and no cache keeps."""
        return self.blocks - self.used - sum(self.cached.values())

    def available(self) -> int:
        """Free blocks plus cached blocks nobody references (evicted on demand)."""
        return self.free() + sum(self.cached[g] for g in self.idle)

    def hit(self, r: int, prompt: int) -> int:
        """Cached prefix blocks a fresh request can reuse (never the prompt's last token: it is recomputed)."""
        g = self.groups[r]
        return min(self.cached.get(g, 0), (prompt - 1) // self.block_size) if g >= 0 else 0

    def take(self, n: int) -> bool:
        """Make `n` free blocks, evicting idle cached prefixes (LRU); False when even that is not enough."""
        while self.free() < n and self.idle:
            g = next(iter(self.idle))
            self.cached[g] -= 1
            if self.cached[g] == 0:
                del self.cached[g]
                del self.idle[g]
        return self.free() >= n

    def attach(self, r: int, hit: int) -> None:
        """A fresh request references `hit` cached blocks of its group."""
        g = self.groups[r]
        self.shared[r] = hit
        self.attached[r] = True
        if g >= 0:
            self.refs[g] = self.refs.get(g, 0) + 1
            self.idle.pop(g, None)

    def grow(self, r: int, need: int, filled_tokens: int) -> None:
        """Give `r` `need` more blocks (`take` made room), then publish the prefix blocks its computed tokens
        (`filled_tokens`) now fill: a later request of the group hits them (vLLM caches them when allocated)."""
        self.own[r] += need
        self.used += need
        g = self.groups[r]
        if g < 0:
            return
        have = self.cached.get(g, 0)
        full = min(self.prefix_blocks, filled_tokens // self.block_size)
        if self.shared[r] == have and full > have:
            self.own[r] -= full - have
            self.used -= full - have
            self.shared[r] = self.cached[g] = full

    def release(self, r: int) -> None:
        """`r` finished or was preempted: its own blocks are freed, its group's cached prefix stays (evictable
        once nobody references it)."""
        self.used -= self.own[r]
        self.own[r] = 0
        g = self.groups[r]
        if g >= 0 and self.attached[r]:
            self.refs[g] -= 1
            if self.refs[g] == 0 and self.cached.get(g):
                self.idle[g] = None
        self.shared[r] = 0
        self.attached[r] = False

    def holds(self, r: int) -> int:
        """Blocks request r has (its own and the shared prefix it references)."""
        return self.own[r] + self.shared[r]

"""Mixture-of-experts layers in the step model: where the experts live for a layout, how unevenly a step's tokens
land on the GPUs that hold them, and what the grouped expert GEMMs and their dispatch/combine cost.

Layouts (the engines' own, read in their source; docs/perf-model.md cites each):
  - pure TP: every expert sliced over the TP group; each GPU does 1/TP of every token-expert pair's FLOPs; one
    all-reduce of the hidden states after the layer (as for a dense MLP).
  - TP attention + EP (data_parallel 1): whole experts spread over the TP group; the tokens are already on every
    rank, each computes its own experts and an all-reduce sums them (vLLM: no all2all at DP 1,
    config/parallel.py ParallelConfig.use_all2all; TRT-LLM and SGLang alike).
  - attention DP + EP (data_parallel > 1): each DP rank attends over its own requests; the MoE layer gathers every
    rank's tokens (all-gather), each GPU computes its experts for the whole gathered batch, and a reduce-scatter
    returns each rank its tokens: the engines' default single-node dispatch (vLLM AgRsAll2AllManager,
    distributed/device_communicators/all2all.py; TRT-LLM CutlassFusedMoE allgather + reducescatter under
    enable_attention_dp, tensorrt_llm/_torch/modules/fused_moe/fused_moe_cutlass.py; SGLang dp_gather/dp_scatter,
    python/sglang/srt/layers/dp_attention.py).

Every function takes numpy arrays (one entry per candidate) or scalars.
"""

import functools
import math

import numpy as np


def routed_experts_per_gpu(num_experts: int, tp: int, dp: int = 1, ep: bool = False) -> float:
    """Routed experts' worth of weights on the most loaded GPU. The MoE layers span the server's tp x dp GPUs
    (vLLM config/parallel.py ParallelConfig.data_parallel_size: "MoE layers will be sharded according to the
    product of the tensor, prefill-context, and data parallel sizes"): expert parallel places whole experts, the
    most loaded GPU holding ceil(E / group) (vLLM fused_moe determine_expert_map gives the remainder to the first
    ranks); without it every expert is sliced over the group (E / group experts' worth)."""
    group = tp * dp
    return math.ceil(num_experts / group) if ep else num_experts / group


@functools.lru_cache(maxsize=None)
def expected_max_normal(n: int) -> float:
    """E[max of n independent standard normals] (0 for n = 1; 0.564 for 2, 1.029 for 4, 1.424 for 8): the
    integral of x · n · φ(x) · Φ(x)^(n-1) over a fine grid (order statistics of the normal distribution)."""
    if n <= 1:
        return 0.0
    x = np.linspace(-10.0, 10.0, 40001)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    return float(np.sum(x * n * pdf * cdf ** (n - 1)) * (x[1] - x[0]))


def imbalance(tokens, topk, experts, group, z_group, ep):
    """Token-expert pairs on the busiest GPU over the mean, for a step of `tokens` tokens over an EP `group` (1
    without EP: sliced experts give every GPU the same share). Each token picks `topk` distinct experts; the
    number of them a GPU holding E/group experts gets is hypergeometric, variance
    k·(1/g)·(1-1/g)·(E-k)/(E-1) per token; over independent tokens the GPU's load is about normal, and the busiest
    of `group` GPUs sits z_group standard deviations above the mean (expected_max_normal). This assumes the
    router spreads tokens uniformly (what load-balancing losses aim for); measured skew beyond it is not
    modelled (docs/perf-model.md)."""
    tokens = np.maximum(np.asarray(tokens, dtype=float), 1.0)
    g = np.maximum(np.asarray(group, dtype=float), 1.0)
    e = np.maximum(np.asarray(experts, dtype=float), 2.0)
    mean = tokens * topk / g
    var = tokens * topk * (1.0 / g) * (1.0 - 1.0 / g) * np.maximum(e - topk, 0.0) / (e - 1.0)
    return np.where(np.asarray(ep, dtype=bool) & (g > 1), 1.0 + z_group * np.sqrt(var) / np.maximum(mean, 1e-9), 1.0)


def expert_seconds(k: dict, rank_tokens, gemm_efficiency, hbm_bytes_s):
    """One MoE layer's routed experts on the busiest GPU: the grouped GEMMs (gate_up and down of every local
    expert, 3·hidden·moe_intermediate parameters each) over the token-expert pairs that GPU gets, as a roofline of
    compute at each expert's M (`gemm_efficiency(M, narrow)`, the measured grouped-GEMM curve of the GEMM's shape)
    and the bytes of the distinct experts the step touches, plus the activation kernel over those rows and the combine
    (moe_sum over every token's top-k rows). `rank_tokens`: tokens of this DP rank's
    step; the layer sees `dp` times as many (all DP ranks' tokens, gathered)."""
    topk, experts, group = k["topk"], np.maximum(k["experts"], 1), k["moe_group"]
    tokens = np.maximum(rank_tokens * k["dp"], 1.0)
    pairs = tokens * topk
    # distinct experts the step routes to: each is missed by all tokens with probability (1 - k/E)^tokens
    touched = experts * (1.0 - (1.0 - topk / experts) ** tokens)
    skew = imbalance(tokens, topk, experts, group, k["z_group"], k["ep"])
    worst = pairs / group * skew
    # Each expert's GEMM on the busiest GPU has `skew` times the mean rows; they are priced at the mean rows'
    # efficiency (the measured curve is interpolated in log M, which would credit the extra rows with efficiency
    # they do not have in the bandwidth-bound range): the busiest GPU pays its extra pairs in full.
    rows = pairs / np.maximum(touched, 1.0)
    rows = np.where(k["int4"], np.maximum(rows, 256.0), rows)
    # gate_up (N = 2·I/s, K = h) and down (N = h, K = I/s) of each expert slice: s = the group under TP (sliced
    # experts), 1 under EP; each at the measured grouped-GEMM efficiency of its shape's narrow dimension
    inter = k["moe_inter"] / k["expert_slice"]
    eff_up = gemm_efficiency(rows, np.minimum(2.0 * inter, k["hidden"]))
    eff_down = gemm_efficiency(rows, np.minimum(inter, k["hidden"]))
    compute = 2.0 * worst * k["expert_params"] * (2.0 / 3.0 / eff_up + 1.0 / 3.0 / eff_down) / k["peak"]
    reads = touched / group * k["expert_params"] * k["bpw"] / hbm_bytes_s
    activation = worst * 3 * k["moe_inter"] * k["act"] / hbm_bytes_s  # silu_and_mul: reads 2, writes 1 x inter
    # The combine: the down GEMM writes each of this GPU's (token, expert) rows at full hidden size (every pair's
    # partial sum under TP, its own experts' pairs under EP) and moe_sum reads them back and writes one row per token
    # (vLLM 0.32 fused_moe/experts/triton_moe.py TritonExperts.moe_sum: under EP it skips the slots of remote experts)
    local_rows = np.where(k["ep"], worst, pairs)
    combine = (local_rows + tokens) * k["hidden"] * k["act"] / hbm_bytes_s
    return np.maximum(compute, reads) + activation + combine


def dispatch_combine_seconds(k: dict, rank_tokens, allreduce):
    """The MoE layer's communication under attention DP (dp > 1): an all-gather of every DP rank's hidden states
    to the whole group, and a reduce-scatter of the partial outputs back. Each moves (g-1)/g of the gathered
    bytes per GPU, the two together the bus volume of one ring all-reduce of that size (nccl-tests' bus-bandwidth
    relations), priced with the measured all-reduce curve (`allreduce(nbytes, group)`) plus one more collective's
    latency. 0 without attention DP: the layer's all-reduce is counted with the TP all-reduces."""
    gathered = np.maximum(rank_tokens * k["dp"], 1.0) * k["hidden"] * k["act"]
    two = allreduce(gathered, k["moe_group"]) + allreduce(0.0, k["moe_group"])
    return np.where(k["dp"] > 1, two, 0.0)


def consts(m, tp: int, dp: int, expert_parallel: bool) -> dict:
    """The step model's MoE constants of one layout (planner/perf.py StepModel._consts): the group the experts
    span, whether they are spread whole (EP), the busiest-GPU factor of that group, one expert's parameters."""
    group = tp * dp
    ep = bool(expert_parallel and m.is_moe and group > 1)
    return {"dp": dp, "moe_group": group, "ep": ep, "z_group": expected_max_normal(group) if ep else 0.0,
            "expert_slice": 1 if ep else group,
            "experts": m.num_experts, "topk": m.num_experts_per_tok,
            "moe_inter": m.moe_intermediate_size or m.intermediate_size,
            "expert_params": 3 * m.hidden_size * (m.moe_intermediate_size or m.intermediate_size)}


def busiest_rank_prefill(ranks, mean_prefill, chunk):
    """Prefill tokens on the busiest of `ranks` attention-DP ranks in a step. Each rank's prefill arrives in chunks
    of `chunk` tokens (a prompt, or what the token budget leaves it), a rank carrying one in a given step with
    probability q = mean_prefill / chunk; the busiest of n ranks carries one when any does: chunk·(1 − (1 − q)^n).
    The attention side of an iteration lasts as long as its busiest rank's (TensorRT-LLM tech blog 10, "ADP
    Balance Strategy": iteration time = max over ranks; with in-flight batching some ranks run context phases while
    others decode, and its DeepSeek-V3 ADP8 baseline averaged a 54% balance ratio). n = 1 gives the mean."""
    chunk = np.maximum(np.asarray(chunk, dtype=float), 1.0)
    q = np.clip(np.asarray(mean_prefill, dtype=float) / chunk, 0.0, 1.0)
    return chunk * (1.0 - (1.0 - q) ** np.asarray(ranks, dtype=float))

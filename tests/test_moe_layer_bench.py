"""benchmarks/gpu/moe_layer.py, the device benchmark of an MoE layer as vLLM runs it: its moe_align stand-in and its
harness around vLLM's fused_moe_kernel, checked on the CPU (the kernel under Triton's interpreter)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GPU_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU_BENCH))
import moe_layer  # noqa: E402


def test_align_groups_pairs_by_expert_padded_to_the_row_block():
    torch = pytest.importorskip("torch")
    b = moe_layer.Bench.__new__(moe_layer.Bench)
    b.torch = torch
    e, bm, topk = 6, 4, 2
    ids = torch.stack([torch.randperm(e)[:topk] for _ in range(11)]).to(torch.int32)
    sorted_ids, expert_ids, total = b.align(ids, e, bm)
    flat = ids.flatten()
    counts = torch.bincount(flat.long(), minlength=e)
    assert int(total) == int(((counts + bm - 1) // bm * bm).sum())
    seen = []
    for blk in range(int(total) // bm):
        rows = sorted_ids[blk * bm:(blk + 1) * bm]
        real = rows[rows < flat.numel()]
        assert all(int(flat[r]) == int(expert_ids[blk]) for r in real)  # every pair in its expert's block
        seen += real.tolist()
    assert sorted(seen) == list(range(flat.numel()))  # each pair exactly once
    assert (sorted_ids[int(total):] == flat.numel()).all()  # the rest is padding


def test_default_config_restates_vllm_for_prefill_sizes():
    assert moe_layer.default_config(8192, 128, False) == {
        "BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 8,
        "num_stages": 3}
    assert moe_layer.default_config(8192, 16, True)["BLOCK_SIZE_K"] == 128
    assert moe_layer.config_name(128, 192, "NVIDIA_H100_80GB_HBM3", False) == \
        "E=128,N=192,device_name=NVIDIA_H100_80GB_HBM3.json"


def test_dry_run_matches_a_dense_reference_under_the_interpreter(tmp_path):
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("triton") is None:
        pytest.skip("needs vLLM (its fused_moe_kernel) and Triton: the cpu extra")
    kernels, out = tmp_path / "k", tmp_path / "moe.json"
    subprocess.run([sys.executable, str(GPU_BENCH / "moe_layer.py"), "--extract", str(kernels)], check=True,
                   capture_output=True, timeout=120)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, str(GPU_BENCH / "moe_layer.py"), "--kernels", str(kernels), "--dry-run",
                        "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert not d["errors"] and len(d["moe"]) == 3 and d["dense"]
    for row in d["moe"]:  # 16-bit: rounding only; block FP8: the operands' own 8-bit rounding
        assert row["check_rel_err"] < (0.15 if row["weights"] == "fp8block" else 1e-2), row

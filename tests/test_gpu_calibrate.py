"""benchmarks/gpu/calibrate.py (one command, any CUDA GPU, a complete calibration file), the kernel curves it measured
on an H100 as the planner reads them, and the transfer of curves to GPUs that have none (planner/transfer.py)."""

import json
import statistics
import subprocess
import sys

import pytest
import yaml
import dataclasses

from conftest import ROOT, request_for

from planner import calibration as cal_mod
from planner import perf, transfer
from planner.specs import Dtype, KvPrecision, Quantization

GPU_BENCH = ROOT / "benchmarks" / "gpu"
sys.path.append(str(GPU_BENCH))

import calibration_summary  # noqa: E402  (benchmarks/gpu is a folder of scripts)
import roofline_calibration  # noqa: E402

KERNEL_SECTIONS = ("gemm_fp8_tensor", "grouped_gemm", "prefill_attention", "fp8_quant", "elementwise")


def _yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "calibration" / name).read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("cal") / "dryrun.yaml"
    r = subprocess.run([sys.executable, str(GPU_BENCH / "calibrate.py"), "--dry-run", "--out", str(out),
                        "--only", "fp8_gemm,grouped_gemm,prefill_attention,fp8_quant,hbm,elementwise",
                        "--time-budget", "300"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def test_dry_run_writes_a_calibration_file_of_the_documented_shape(dry_run):
    d = yaml.safe_load(dry_run.read_text())
    prov = d["provenance"]
    assert {"device", "driver", "torch", "date_utc", "command", "raw", "clocks_whole_run", "sections"} <= set(prov)
    assert set(prov["sections"]) == {"fp8_gemm", "grouped_gemm", "prefill_attention", "fp8_quant", "hbm",
                                     "elementwise"}
    # elementwise floors are per fused kernel: the kernel count comes from the CUDA profiler, so a CPU run has none
    assert {"peaks", "hbm", "hbm_efficiency", *KERNEL_SECTIONS} - {"elementwise"} <= set(d)
    curve = d["gemm_fp8_tensor"]
    assert curve["kernel"] and len(curve["m"]) == len(curve["efficiency"]) and all(e > 0 for e in curve["efficiency"])
    g = d["grouped_gemm"]
    assert len(g["bf16"]["efficiency"]) == len(g["tokens_per_expert"]) and g["bf16"]["configs"]
    assert len(d["prefill_attention"]["efficiency"]) == len(d["prefill_attention"]["length"])
    assert {"eager", "compiled"} <= set(d["fp8_quant"]) and d["fp8_quant"]["compiled"]["dynamic_token"]["floor_us"]
    raw = json.loads((dry_run.parent / "calibrate_dryrun.json").read_text())
    assert raw["schema"] == "roofline-calibration/1" and raw["environment"]["dry_run"] is True
    assert raw["results"]["elementwise"]["rows"]


def test_unknown_section_says_fix(tmp_path):
    r = subprocess.run([sys.executable, str(GPU_BENCH / "calibrate.py"), "--dry-run", "--out", str(tmp_path / "x.yaml"),
                        "--only", "gemm,flux"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode != 0 and "--only flux is no section. Fix:" in r.stderr


def test_kernels_only_run_extends_a_base_file(tmp_path):
    """--kernels-only --base after a live run: the base's sections kept, the new ones added, the file written (a live
    run's TorchVersion in its environment made yaml fail after the measurements, losing them)."""
    pytest.importorskip("torch")
    out = tmp_path / "h200.yaml"
    r = subprocess.run([sys.executable, str(GPU_BENCH / "calibrate.py"), "--dry-run", "--kernels-only", "--base",
                        str(ROOT / "conf" / "calibration" / "h200.yaml"), "--only", "fp8_quant", "--out", str(out),
                        "--time-budget", "120"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = yaml.safe_load(out.read_text())
    assert d["gemm_bf16"] == _yaml("h200.yaml")["gemm_bf16"]
    assert d["provenance_kernels"]["sections"] == ["fp8_quant"] and isinstance(d["provenance_kernels"]["torch"], str)


def test_gpu_named_for_another_device_is_refused():
    sys.path.insert(0, str(GPU_BENCH))
    import calibrate

    assert calibrate.conf_gpu_name("NVIDIA H100 80GB HBM3", "h100-pcie") == "h100-pcie"
    with pytest.raises(SystemExit, match="--gpu h200 names another GPU than the one measured"):
        calibrate.conf_gpu_name("NVIDIA H100 80GB HBM3", "h200")


def test_h100_kernel_sections_are_the_committed_raw_run():
    """conf/calibration/h100.yaml's kernel sections are calibration_summary's reading of the raw H100 run."""
    h100 = _yaml("h100.yaml")
    raw = json.loads((ROOT / h100["provenance_kernels"]["raw"]).read_text())
    assert raw["environment"]["device_name"] == "NVIDIA H100 80GB HBM3" == h100["provenance_kernels"]["device"]
    again = roofline_calibration.sig(calibration_summary.kernel_sections(raw["results"], h100["peaks"]))
    for key in ("gemm_fp8_tensor", "gemm_fp8_rowwise", "gemm_fp8_block", "gemm_fp8_block_triton", "grouped_gemm",
                "prefill_attention", "fp8_quant"):
        assert again[key] == h100[key], key


def test_fp8_kernels_measured_on_h100_are_ordered_as_published():
    """Large-M FP8 GEMMs: per-tensor and rowwise CUTLASS/cuBLASLt kernels within a few percent of each other, 128x128
    block scaling slower (its scales are applied in the main loop), the untuned Triton block kernel slowest."""
    h = _yaml("h100.yaml")
    big = {k: h[k]["efficiency"][-1] for k in ("gemm_fp8_tensor", "gemm_fp8_rowwise", "gemm_fp8_block",
                                                "gemm_fp8_block_triton")}
    assert big["gemm_fp8_tensor"] == pytest.approx(big["gemm_fp8_rowwise"], rel=0.05)
    assert big["gemm_fp8_block_triton"] < big["gemm_fp8_block"] < big["gemm_fp8_tensor"]


def test_step_model_takes_the_checkpoints_fp8_kernel():
    req = request_for("model=llama3.1-70b", "hw=h100x8")

    def step(scaling):
        model = dataclasses.replace(req.model, fp8_scaling=scaling)
        sm = perf.StepModel(model, req.hw.gpu, req.hw, 4, 1, Dtype.bf16, Quantization.fp8, KvPrecision.bf16)
        return float(sm.step_seconds(0, 0, 8192, 8192 * 4096))

    assert step("block") > step("tensor") * 1.05  # block scaling: ~0.59 vs ~0.70 of the fp8 peak at large M


def test_moe_experts_use_the_grouped_gemm_curve():
    c = perf.calibration("h100-sxm")
    assert c.grouped_kinds and c.grouped_efficiency(1024, cal_mod.BF16) == pytest.approx(
        _yaml("h100.yaml")["grouped_gemm"]["bf16"]["efficiency"][-1], rel=1e-3)


def transfer_errors(key: str) -> tuple[float, float]:
    """Median |time error| of H200's measured GEMM points predicted from H100's curves (transfer), and of taking the
    H100's efficiencies as they are (the naive transfer)."""
    h100, h200 = _yaml("h100.yaml"), _yaml("h200.yaml")
    src, dst = cal_mod._peaks_of("h100-sxm"), cal_mod._peaks_of("h200")
    moved, _ = transfer.transfer(h100, src, dst)
    errs, naive = [], []
    for fam, s in h200[key]["shapes"].items():
        for meas, pred, as_is in zip(s["efficiency"], moved[key]["shapes"][fam]["efficiency"],
                                     h100[key]["shapes"][fam]["efficiency"]):
            if meas and pred and as_is:
                errs.append(abs(meas / pred - 1))
                naive.append(abs(meas / as_is - 1))
    return statistics.median(errs), statistics.median(naive)


@pytest.mark.parametrize("key", ["gemm_bf16", "gemm_fp8"])
def test_transfer_predicts_h200_from_h100(key):
    """Both GPUs measured: H200's 560 GEMM points (40 shapes x 14 M) from H100's curves by the spec ratios.
    Measured 2026-12-07: bf16 5.9% median |time error| (naive 13.3%), fp8 6.5% (naive 9.4%)."""
    err, naive = transfer_errors(key)
    assert err < 0.08 and err < naive


def test_a_gpu_without_microbenchmarks_says_its_curves_are_transferred():
    req = request_for("model=llama3-8b", "hw=h100x1", "gpu@hw.gpu=l40s")
    notes = perf.transferred_note(req.hw.gpu)
    assert len(notes) == 1 and "transferred from h100-sxm" in notes[0] and "calibrate.py" in notes[0]
    assert perf.transferred_note(request_for("model=llama3-8b", "hw=h100x1").hw.gpu) == ()


def test_closest_prefers_the_same_architecture():
    p = cal_mod._peaks_of
    assert transfer.closest(p("b200"), [p("h100-sxm"), p("h200")]).name in ("h100-sxm", "h200")
    hopper = transfer.Peaks("x", "hopper", 9.0, 900.0, 1800.0, 4000.0)
    assert transfer.closest(hopper, [p("h100-sxm"), p("h200")]).name == "h200"  # ridge 225 FLOP/B: H200's 206

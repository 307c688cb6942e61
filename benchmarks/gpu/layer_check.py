"""Predicted vs measured decoder-layer step times on H100 and H200 (issue 8), and the H100 → H200 transfer.

Measured: conf/calibration/h100.yaml and h200.yaml `layer_step_ms` (benchmarks/gpu/roofline_calibration.py, CUDA
graph replay, one layer, no all-reduce). Predicted: planner/perf.py StepModel.layer_seconds with each GPU's own
calibration, and with the H100 calibration applied to the H200's datasheet numbers (transfer).
Run: python benchmarks/gpu/layer_check.py
"""

import statistics
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from planner import compose, perf  # noqa: E402
from planner.specs import Dtype, KvPrecision, Quantization  # noqa: E402

SHAPES = {"llama-3.1-8b.tp1": ("llama3.1-8b", 1), "llama-3.1-70b.tp4": ("llama3.1-70b", 4),
          "llama-3.1-70b.tp8": ("llama3.1-70b", 8)}
GPUS = {"h100": "h100-sxm", "h200": "h200"}


def specs(model_names, gpu_names) -> tuple[dict, dict]:
    """ModelSpecs by catalog model name and HwSpecs (an 8-GPU NVLink node of that GPU) by catalog GPU name,
    composed as the CLI composes them."""
    with compose.Composer() as c:
        models = {m: compose.to_request(c.compose([f"model={m}"])).model for m in model_names}
        hws = {g: compose.to_request(c.compose(["hw=h100x8", f"gpu@hw.gpu={g}"])).hw for g in gpu_names}
    return models, hws


def step_model(model, hw, tp: int, quant: Quantization = Quantization.none, calibrated_on=None) -> perf.StepModel:
    """The planner's step model for a bf16 layer slice at `tp` (KV cache bf16, no pipeline)."""
    return perf.StepModel(model, hw.gpu, hw, tp, 1, Dtype.bf16, quant, KvPrecision.bf16, calibrated_on)


def layer_args(phase: str, size: int, context: int) -> tuple:
    """StepModel arguments (decode_seqs, decode_context, prefill_tokens, prefill_context) for the benchmark's
    decode step (`size` sequences at `context` tokens each) or causal prefill of `size` tokens."""
    return (size, size * context, 0, 0) if phase == "decode" else (0, 0, size, size * size / 2)


def main() -> None:
    models, hws = specs({m for m, _ in SHAPES.values()}, GPUS.values())
    table = Table(title="Decoder layer step: measured vs predicted (ms)", title_justify="left")
    for col in ("GPU", "shape", "dtype", "phase", "size", "measured", "predicted", "error", "H100-calibrated", "error"):
        table.add_column(col, justify="right" if col not in ("GPU", "shape", "dtype", "phase") else "left")
    errs: dict = {"own": {"h100": [], "h200": []}, "transfer": [], "bf16": {"h100": [], "h200": []}}
    for short, gpu_name in GPUS.items():
        cal = yaml.safe_load(resources.files("conf").joinpath("calibration", f"{short}.yaml").read_text())
        ctx = cal["layer_step_ms"]["decode_context"]
        for shape, data in cal["layer_step_ms"]["shapes"].items():
            model_name, tp = SHAPES[shape]
            for dt, quant in (("bf16", Quantization.none), ("fp8", Quantization.fp8)):
                own = step_model(models[model_name], hws[gpu_name], tp, quant)
                moved = replace(own, calibrated_on="h100-sxm")
                for phase, key in (("decode", "batch"), ("prefill", "tokens")):
                    series = data[phase][dt]
                    for size, measured in zip(series[key], series["graph_ms"]):
                        pred = float(own.layer_seconds(*layer_args(phase, size, ctx))) * 1e3
                        tr = float(moved.layer_seconds(*layer_args(phase, size, ctx))) * 1e3
                        e = (pred - measured) / measured * 100
                        et = (tr - measured) / measured * 100
                        errs["own"][short].append(abs(e))
                        if dt == "bf16":
                            errs["bf16"][short].append(abs(e))
                        if short == "h200":
                            errs["transfer"].append(abs(et))
                        table.add_row(short, shape, dt, phase, str(size), f"{measured:.3f}", f"{pred:.3f}",
                                      f"{e:+.0f}%", f"{tr:.3f}" if short == "h200" else "",
                                      f"{et:+.0f}%" if short == "h200" else "")
    console = Console(width=160)
    console.print(table)
    console.print(f"median |error|: H100 {statistics.median(errs['own']['h100']):.1f}% "
                  f"({len(errs['own']['h100'])} points), H200 {statistics.median(errs['own']['h200']):.1f}%, "
                  f"H100-calibrated model on H200 (transfer) {statistics.median(errs['transfer']):.1f}%; bf16 rows only: "
                  f"H100 {statistics.median(errs['bf16']['h100']):.1f}%, H200 {statistics.median(errs['bf16']['h200']):.1f}% "
                  f"(the fp8 rows time torch's unfused per-GEMM quantisation, which vLLM fuses)")


if __name__ == "__main__":
    main()

"""Calibrate the planner's performance model on the CUDA GPU at hand, in one command.

  python benchmarks/gpu/calibrate.py --out conf/calibration/<gpu>.yaml [--gpu <conf/gpu name>]
  python benchmarks/gpu/calibrate.py --dry-run --out /tmp/cal.yaml      # any machine, tiny shapes (tests the script)
  python benchmarks/gpu/calibrate.py --summarize RAW.json --out X.yaml  # rebuild the file from a raw run, no GPU

Measures, under one time budget (default 540 s), the kernels each engine step runs, in this order:
  fp8_gemm           FP8 GEMM per scaling: per-tensor (cuBLASLt), rowwise (CUTLASS), 128x128 block (cuBLASLt, Triton)
  grouped_gemm       MoE expert GEMMs (torch._grouped_mm bf16, _scaled_grouped_mm fp8, Triton fused-MoE bf16/fp8)
  prefill_attention  causal flash-style attention by prompt length (torch SDPA backends)
  fp8_quant          activation quantisation, eager and torch.compile'd (fused) variants
  hbm                device-to-device copy, read, fill bandwidth
  gemm_reference     8192^3 bf16 / fp8 reference products
  gemm               bf16 (F.linear) and fp8 per-tensor GEMM curves at Llama-3.1 8B/70B per-rank shapes
  decode_attention   decode attention by batch x context (SDPA default dispatch)
  elementwise        per-kernel floors of RMSNorm+residual, rotary, KV write, SiLU-and-mul
  grouped_gemm_tuned the Triton fused-MoE kernel at its fastest of 7 block configs (what a tuned engine runs)
and writes the raw JSON (--raw, default beside --out) and the calibration file: roofline_calibration.py's sections
(gemm_bf16, gemm_fp8, hbm, decode_attention ...) plus calibration_summary.py's (gemm_fp8_rowwise, gemm_fp8_block,
grouped_gemm, prefill_attention, fp8_quant, elementwise), with the device, driver, torch, clocks and date in
`provenance`. `--base FILE` keeps FILE's sections that this run did not measure (for a partial `--only` run).
Peaks (the efficiency denominators) come from conf/gpu/<gpu>.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import calibration_summary  # noqa: E402
import roofline_calibration as rc  # noqa: E402

REPO = HERE.parents[1]
SECTIONS = ("fp8_gemm", "grouped_gemm", "prefill_attention", "fp8_quant", "hbm", "gemm_reference", "gemm",
            "decode_attention", "elementwise", "grouped_gemm_tuned")
QUICK_GEMM = {f"llama-3.1-8b.tp1.{p}" for p in ("qkv", "o", "gate_up", "down", "lm_head")} | \
    {f"llama-3.1-70b.tp{t}.{p}" for t in (4, 8) for p in ("qkv", "o", "gate_up", "down")}
QUICK_DECODE = ({"llama-3.1-8b": (32, 8, 128), "llama-3.1-70b.tp8": (8, 1, 128)},
                [1, 4, 16, 64, 256], [512, 2048, 8192, 32768])
ELEMENTWISE_ROWS = [1, 4, 8]


def conf_gpu_name(device_name: str, explicit: str | None) -> str:
    """The conf/gpu entry of this device: --gpu, else the device name's key when conf/gpu has that file."""
    if explicit:
        family = rc.gpu_key(device_name)
        if family in ("h200", "h100", "a100", "l40s", "l4", "b200") and not explicit.startswith(family):
            raise SystemExit(f"calibrate: --gpu {explicit} names another GPU than the one measured ('{device_name}'): "
                             f"its curves would be divided by the wrong datasheet peaks. Fix: drop --gpu, or pass the "
                             f"conf/gpu name of this device (one starting with '{family}').")
        return explicit
    key = rc.gpu_key(device_name)
    known = {"h100": "h100-sxm"}  # NVIDIA H100 80GB HBM3 is the SXM part
    name = known.get(key, key)
    if not (REPO / "conf" / "gpu" / f"{name}.yaml").is_file():
        raise SystemExit(f"calibrate: the device '{device_name}' has no conf/gpu entry named '{name}' to take its "
                         f"datasheet peaks from. Fix: pass --gpu NAME with one of "
                         f"{sorted(p.stem for p in (REPO / 'conf' / 'gpu').glob('*.yaml'))}, or add its spec file.")
    return name


def peaks_of(gpu: str) -> dict:
    if gpu == "dryrun":
        return rc.catalog_peaks("dryrun")
    import yaml

    c = yaml.safe_load((REPO / "conf" / "gpu" / f"{gpu}.yaml").read_text())
    return {"catalog": f"conf/gpu/{gpu}.yaml", "bf16_tflops": c.get("dense_tflops_bf16") or c["dense_tflops_fp16"],
            "fp8_tflops": c.get("dense_tflops_fp8") or c.get("dense_tflops_bf16") or c["dense_tflops_fp16"],
            "hbm_gb_s": c["hbm_bandwidth_gb_s"]}


def run_elementwise(b) -> dict:
    """elementwise.py's ops at a few rows per model width: the per-layer floors the step model adds."""
    import elementwise
    from timing import Timer

    models = rc.TINY_MODELS if b.dry else rc.MODELS
    dtype = b.torch.bfloat16 if b.cuda else b.torch.float32
    timer = Timer(b.torch, b.cuda, repeats=3 if b.dry else 20, warmup=1 if b.dry else 2)
    rows = []
    for kernel in ("rmsnorm_residual", "rotary", "kv_cache_write", "silu_and_mul"):
        for model in models:
            for r in ELEMENTWISE_ROWS:
                if b.time_left() < 5:
                    break
                rows.append(elementwise.measure(b.torch, b.F, timer, kernel, model, r, models[model], b.dev, dtype,
                                                b.dry))
    if b.cuda:  # kernels per op (profiler), after the timings: the step model prices one fused kernel per op
        elementwise.annotate_kernels(b.torch, b.F, rows, models, b.dev, dtype)
    return {"rows": rows, "summary": elementwise.summarize(rows), "models": models}


def run(args) -> tuple[dict, str]:
    """Every selected section under the time budget; the raw document and the conf/gpu name."""
    import torch

    b = rc.Bench(argparse.Namespace(dry_run=args.dry_run, cpu=args.dry_run, time_budget=args.time_budget,
                                    target_ms=args.target_ms))
    b.gemm_families, b.decode_grid, b.sdpa_names = QUICK_GEMM, QUICK_DECODE, {"default"}
    b.env = b.environment()
    gpu = "dryrun" if args.dry_run else conf_gpu_name(b.env.get("device_name", ""), args.gpu)
    b.env["conf_gpu"] = gpu
    print(json.dumps({k: v for k, v in b.env.items() if k != "nvidia_smi"}, default=str), flush=True)
    import fp8_gemm
    import moe_gemm
    import prefill_attention

    fns = {"fp8_gemm": fp8_gemm.run_fp8_gemm, "grouped_gemm": moe_gemm.run_grouped_gemm,
           "prefill_attention": prefill_attention.run_prefill_attention, "fp8_quant": fp8_gemm.run_quant,
           "hbm": b.run_hbm, "gemm_reference": b.run_gemm_reference, "gemm": b.run_gemm,
           "decode_attention": b.run_decode_attention, "elementwise": run_elementwise,
           "grouped_gemm_tuned": moe_gemm.run_grouped_tuned}
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"calibrate: --only {','.join(sorted(unknown))} is no section. Fix: choose from "
                         f"{','.join(SECTIONS)}.")
    b.partial_path = Path(args.raw)
    with torch.inference_mode():
        for name in SECTIONS:
            if name in only:
                bound = name in ("hbm", "gemm_reference", "gemm", "decode_attention")  # Bench's own methods
                b.section(name, fns[name] if bound else (lambda f=fns[name]: f(b)))
    b.env["total_wall_s"] = round(time.time() - b.t_start, 1)
    if b.sampler:
        b.sampler.stop()
        b.env["clocks_whole_run"] = b.sampler.window(b.t_start, time.time())
    b.save_partial()
    return b.raw(), gpu


def summarize(raw: dict, gpu: str, raw_name: str, base: dict | None, summary_cmd: str | None) -> tuple[dict, str]:
    """The calibration file: roofline_calibration's sections, the kernel sections, and base's unmeasured ones."""
    pk = peaks_of(gpu)
    summary, _ = rc.summarize(raw, raw_name, summary_cmd, peaks=pk)
    summary["provenance"]["conf_gpu"] = gpu
    summary["provenance"]["sections"] = sorted(k for k in raw["results"])
    summary.update(rc.sig(calibration_summary.kernel_sections(raw["results"], pk)))
    summary["peaks"] = dict(pk)
    summary["source"] = (f"measured by benchmarks/gpu/calibrate.py on {summary['provenance']['device']} "
                         f"({summary['provenance']['date_utc']}); raw: {raw_name}")
    if base:
        kept = sorted(k for k in base if k not in summary)
        for k in kept:
            summary[k] = base[k]
        if kept:
            summary["provenance"]["kept_from_base"] = {"sections": kept, "provenance": base.get("provenance")}
    c = summary["provenance"]
    header = (f"# Calibration of the performance model measured by benchmarks/gpu/calibrate.py.\n"
              f"# device: {c['device']}  driver: {c['driver']}  torch: {c['torch']} (CUDA {c['cuda']})\n"
              f"# date: {c['date_utc']}\n# command: {c['command']}\n# raw results: {raw_name}\n"
              f"# Efficiencies are achieved / catalog peak ({pk['catalog']}: bf16 {pk['bf16_tflops']}, "
              f"fp8 {pk['fp8_tflops']} dense TFLOP/s, {pk['hbm_gb_s']} GB/s). 3 significant digits.\n")
    return summary, header


def add_kernels(raw: dict, gpu: str, raw_name: str, base: dict, summary_cmd: str | None,
                only: tuple = ()) -> tuple[dict, str]:
    """base with this run's kernel sections added (replacing base's of the same name), their provenance apart."""
    pk = peaks_of(gpu)
    kernels = rc.sig(calibration_summary.kernel_sections(raw["results"], pk))
    # base's GPU already has elementwise floors from elementwise.py's full run (perf-default.yaml, 14 row counts):
    # this run's 3-row check stays in the raw file only
    kernels.pop("elementwise", None)
    kernels = {k: v for k, v in kernels.items() if k in (only or kernels)}
    env = raw["environment"]
    out = {**base, **kernels}
    new = {
        "sections": sorted(kernels), "device": env.get("device_name"), "driver": env.get("driver"),
        "torch": env.get("torch"), "triton": env.get("triton"), "cuda": env.get("cuda_runtime"),
        "date_utc": env.get("date_utc"), "command": env.get("command"), "raw": raw_name,
        "clocks_whole_run": env.get("clocks_whole_run"), "summary_command": summary_cmd}
    prev = base.get("provenance_kernels")  # a later run adds its sections to an extended file: both provenances
    out["provenance_kernels"] = new if not prev else {**prev, "more_runs": [*(prev.get("more_runs") or []), new]}
    header = (f"# Roofline calibration (benchmarks/gpu/roofline_calibration.py, provenance) extended with the kernels the "
              f"engines run\n# (benchmarks/gpu/calibrate.py, provenance_kernels: {env.get('device_name')}, "
              f"{env.get('date_utc')}).\n# Efficiencies are achieved / catalog peak ({pk['catalog']}: bf16 "
              f"{pk['bf16_tflops']}, fp8 {pk['fp8_tflops']} dense TFLOP/s, {pk['hbm_gb_s']} GB/s). 3 significant "
              f"digits.\n")
    return out, header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the calibration file to write (conf/calibration/<gpu>.yaml)")
    ap.add_argument("--raw", default=None, help="raw JSON (default: calibrate_<gpu>.json beside --out)")
    ap.add_argument("--gpu", default=None, help="conf/gpu name of this device (default: from the device name)")
    ap.add_argument("--only", default="", help=f"comma list of sections: {','.join(SECTIONS)}")
    ap.add_argument("--base", default=None, help="an earlier calibration file whose other sections are kept")
    ap.add_argument("--kernels-only", action="store_true",
                    help="with --summarize and --base: add only the kernel sections (FP8 variants, grouped GEMM, "
                         "prefill attention, quantisation, elementwise) to --base, keeping its own GEMM/HBM/attention")
    ap.add_argument("--time-budget", type=float, default=540.0, help="seconds; sections skip work past it")
    ap.add_argument("--target-ms", type=float, default=25.0, help="timed milliseconds per measurement (approx.)")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (tests the script)")
    ap.add_argument("--summarize", metavar="RAW_JSON", help="only rebuild --out from a raw JSON file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*both fused kernels require query, key and value to have the same")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    base = yaml.safe_load(Path(args.base).read_text()) if args.base else None
    if args.summarize:
        raw = json.loads(Path(args.summarize).read_text())
        gpu = args.gpu or raw["environment"].get("conf_gpu") or "dryrun"
        raw_name = args.raw or args.summarize
        cmd = " ".join(["python"] + [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    else:
        args.raw = args.raw or str(out.with_name(f"calibrate_{out.stem}.json"))
        raw, gpu = run(args)
        # plain types, as --summarize reads them back: the live environment holds torch.__version__ (a
        # TorchVersion), which yaml cannot dump (a --kernels-only --base run failed on it after measuring)
        raw = json.loads(json.dumps(raw, default=str))
        raw_name, cmd = args.raw, None
    if args.kernels_only and base:
        summary, header = add_kernels(raw, gpu, raw_name, base, cmd, tuple(args.only.split(",")) if args.only else ())
    else:
        summary, header = summarize(raw, gpu, raw_name, base, cmd)
    out.write_text(rc.dump_yaml(summary, header))
    print(f"wrote {out} ({len(summary)} sections) and {raw_name}", flush=True)


if __name__ == "__main__":
    main()

"""Verify a plan against a running server: load it as the plan's workload says, check the target, compare the
measurements with the plan's prediction, and write report.json (keys as `vllm bench serve` where they overlap).

Schema of report.json:
    plan: the plan file's name; endpoint; target: {name, percentile, ttft_ms, tpot_ms, e2e_latency_ms, ...}
    load: the LoadSpec used (no secrets); summary: LoadResult.summary() (vllm bench serve keys)
    checks: [{metric, measured, limit, passed}]   # one per bounded SLO, at the target's percentile
    predicted_vs_measured: [{metric, predicted, measured, error_pct}]
    server: {kv_cache_tokens_reported, kv_cache_tokens_planned, ready_s}; remediation: [{what, why}]
    server_metrics: peaks of vLLM's running/waiting requests and KV usage over the run (/metrics scrapes)
    sweep: [{request_rate, goodput, output_throughput, passed}] when sweep=true asked for a rate sweep
    passed: every check passed and no request failed
    complete: true once the run finished. A run writes {"complete": false, "passed": false, "plan", "why"} here when
              it starts (mark_started: the previous run's report and plots are gone), and the whole report only at
              the end, so a run that was interrupted or failed never leaves an earlier `passed: true` behind.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from planner import loadgen


@dataclass(frozen=True)
class Check:
    metric: str
    measured: float
    limit: float
    passed: bool


@dataclass(frozen=True)
class Report:
    plan: str
    endpoint: str
    target: dict
    load: dict
    summary: dict
    checks: tuple
    predicted_vs_measured: tuple
    server: dict = field(default_factory=dict)
    remediation: tuple = ()
    server_metrics: dict = field(default_factory=dict)
    sweep: tuple = ()  # SweepPoint rows when a rate sweep ran

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and self.summary.get("failed", 0) == 0 and \
            self.summary.get("completed", 0) > 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["checks"] = [asdict(c) for c in self.checks]
        d["sweep"] = [asdict(p) for p in self.sweep]
        d["passed"] = self.passed
        d["complete"] = True
        return d


def load_spec(doc: dict, endpoint: str, model_name: str, vocab_size: int, num_prompts: Optional[int] = None,
              time_limit_s: float = 300.0) -> loadgen.LoadSpec:
    """The load a plan asks for, against one server: the workload's lengths and rate or concurrency (per replica:
    this server is one replica), the target's SLOs for goodput."""
    wl, target, plan = doc["request"]["workload"], doc["request"]["target"], doc["plan"]
    replicas = max(1, plan["replicas"])
    rate = (wl.get("request_rate") or target.get("min_request_rate"))
    rate = rate / replicas if rate else None
    concurrency = wl.get("max_concurrency") or target.get("min_concurrency")
    if concurrency and rate is None:
        concurrency = max(1, math.ceil(concurrency / replicas))
    return loadgen.LoadSpec(
        base_url=endpoint.rstrip("/"), model=model_name, input_len=wl["input_len"], output_len=wl["output_len"],
        num_prompts=num_prompts or wl["num_prompts"], request_rate=rate, burstiness=wl.get("burstiness", 1.0),
        max_concurrency=concurrency, range_ratio=wl.get("range_ratio", 0.0),
        shared_prefix_len=wl.get("shared_prefix_len", 0), vocab_size=vocab_size, timeout_s=time_limit_s,
        slo_ttft_ms=target.get("ttft_ms"), slo_tpot_ms=target.get("tpot_ms"),
        slo_e2el_ms=target.get("e2e_latency_ms"))


_METRIC_KEYS = {"ttft_ms": "ttft", "tpot_ms": "tpot", "e2e_latency_ms": "e2el"}


def checks(summary: dict, target: dict, replicas: int = 1, sustained_rps: Optional[float] = None) -> tuple:
    """Each SLO at the target's percentile; rates for this one server, i.e. the deployment's over `replicas`. A QPS
    target is checked on the rate the server sustained (`sustained_rps`, from departures vs arrivals) when the run
    was an open loop, else on its whole-run request throughput."""
    p = target.get("percentile", 90)
    out = []
    for metric, short in _METRIC_KEYS.items():
        limit = target.get(metric)
        if limit is None:
            continue
        key = f"p{p:g}_{short}_ms"
        measured = summary.get(key, summary.get(f"p{int(p)}_{short}_ms"))
        if measured is None:
            continue
        out.append(Check(f"{key}", float(measured), float(limit), float(measured) <= float(limit)))
    if target.get("min_request_rate"):
        served = summary["request_throughput"] if sustained_rps is None else sustained_rps
        need = target["min_request_rate"] / replicas
        out.append(Check("request_throughput", served, need, served >= need * 0.999))
    if target.get("min_output_throughput_tok_s"):
        out.append(Check("output_throughput", summary["output_throughput"], target["min_output_throughput_tok_s"],
                         summary["output_throughput"] >= target["min_output_throughput_tok_s"]))
    return tuple(out)


def compare(summary: dict, prediction: dict, replicas: int) -> tuple:
    """Predicted vs measured, one server (a replica): medians and p90s of latencies, output throughput."""
    rows = []
    for metric, short in _METRIC_KEYS.items():
        dist = prediction.get(metric) or {}
        for q in ("p50", "p90"):
            measured = summary.get(f"{'median' if q == 'p50' else 'p90'}_{short}_ms")
            pred = dist.get(q)
            if measured and pred:
                rows.append({"metric": f"{q}_{short}_ms", "predicted": round(pred, 3),
                             "measured": round(measured, 3), "error_pct": round((pred - measured) / measured * 100, 1)})
    if prediction.get("output_throughput_tok_s") and summary.get("output_throughput"):
        pred = prediction["output_throughput_tok_s"] / max(1, replicas)
        rows.append({"metric": "output_throughput", "predicted": round(pred, 2),
                     "measured": round(summary["output_throughput"], 2),
                     "error_pct": round((pred - summary["output_throughput"]) / summary["output_throughput"] * 100,
                                        1)})
    return tuple(rows)


def build(doc: dict, plan_name: str, endpoint: str, spec: loadgen.LoadSpec, result, server: dict,
          remediation: tuple = ()) -> Report:
    summary = result.summary()
    target = doc["request"]["target"]
    load = {k: v for k, v in asdict(spec).items() if k != "api_key_env"}
    return Report(plan=plan_name, endpoint=endpoint, target=target, load=load, summary=summary,
                  checks=checks(summary, target, doc["plan"]["replicas"], sustained(spec, result)),
                  predicted_vs_measured=compare(summary, doc.get("prediction") or {}, doc["plan"]["replicas"]),
                  server=server, remediation=remediation, server_metrics=server_metrics(result))


def sustained(spec: loadgen.LoadSpec, result) -> Optional[float]:
    """Requests/s this server sustained under an open loop (None for a closed loop)."""
    if not spec.request_rate:
        return None
    from planner.simulate import kept_up

    sent = [r.sent_s for r in result.records]
    done = [r.sent_s + r.e2e_s for r in result.records]
    return spec.request_rate * kept_up(sent, done)


def server_metrics(result) -> dict:
    """The server's own view during the run (Prometheus /metrics scrapes): peaks of running and waiting requests
    and of KV-cache usage, and preemptions counted over the run."""
    series = list(result.metrics_series)
    if not series:
        return {}
    out = {}
    for name in {k for s in series for k in s.values}:
        values = [s.values[name] for s in series if name in s.values]
        key = name.replace("vllm:", "")
        out[f"{key}_max"] = round(max(values), 4)
        if name.endswith("_total"):
            out[f"{key}_delta"] = round(values[-1] - values[0], 4)
    out["samples"] = len(series)
    return out


@dataclass(frozen=True)
class SweepPoint:
    request_rate: float
    goodput: float
    output_throughput: float
    passed: bool


def sweep(spec: loadgen.LoadSpec, target: dict, rates: list[float]) -> tuple[Optional[SweepPoint], tuple]:
    """Raise the request rate step by step; the best point is the highest goodput whose checks still pass (the
    run stops at the first rate that misses the target: beyond it the server is saturated)."""
    from dataclasses import replace as with_

    points, best = [], None
    for rate in sorted(rates):
        res = loadgen.run_sync(with_(spec, request_rate=rate, max_concurrency=None))
        summary = res.summary()
        slos = {k: v for k, v in target.items() if k != "min_request_rate"}  # the sweep itself looks for the rate
        ok = all(c.passed for c in checks(summary, slos)) and summary.get("failed", 0) == 0
        point = SweepPoint(rate, float(summary.get("request_goodput") or 0.0), float(summary["output_throughput"]),
                           ok)
        points.append(point)
        if ok and (best is None or point.goodput > best.goodput):
            best = point
        if not ok:
            break
    return best, tuple(points)


def write(report: Report, outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "report.json"
    path.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    return path


def mark_started(outdir: Path, plan_name: str) -> Path:
    """At the start of a run: remove the previous run's plots and leave report.json saying 'not complete'."""
    outdir.mkdir(parents=True, exist_ok=True)
    for png in outdir.glob("*.png"):  # planner/plots.py's plots; nothing else in the folder is a PNG
        png.unlink()
    path = outdir / "report.json"
    path.write_text(json.dumps({"plan": plan_name, "complete": False, "passed": False,
                                "why": "a run started here and has not finished (interrupted, or it failed before "
                                       "measuring: see the planner's error and server.log)"}, indent=2) + "\n")
    return path

"""Exit 3's fix hints, checked: each candidate change (a relaxed SLO, less load, FP8, other hardware presets) is
re-planned, and only those whose plan meets the target are named, with what the new plan predicts."""

import logging
from typing import Optional

from planner.errors import InputError, NoFeasiblePlan, PlannerError

log = logging.getLogger(__name__)
HARDWARE_TRIES = 4  # hardware presets re-planned at most (cheapest first)
SHOWN = 3  # fixes named at most


def _plan(composer, overrides: list[str], rule_set):
    from planner import compose, search
    from planner import rules as rule_engine

    cfg, _ = compose.resolve(composer, overrides)
    req = compose.to_request(cfg)
    return req, search.compile_plan(req, rule_engine.evaluate(req, rule_set))


def _predicted(req, compiled) -> str:
    p = compiled.prediction
    q = req.target.percentile
    return (f"predicted p{q:g} TTFT {p.ttft_ms.at(q):,.0f} ms, TPOT {p.tpot_ms.at(q):,.1f} ms, "
            f"{p.output_throughput_tok_s_per_gpu:,.0f} tok/s/GPU")


def _hardware(composer, req) -> list[tuple[str, float]]:
    """Presets of at least this memory in all, not this one, cheapest first (unpriced last)."""
    out = []
    for name in composer.options("hw"):
        if name in (req.hw.name, "auto", "cpu"):
            continue
        try:
            hw = composer.compose([f"hw={name}"]).hw
        except PlannerError:
            continue
        total_gib = hw.gpu.memory_gib * hw.gpus_per_node * hw.nodes
        if total_gib + 1e-9 < req.hw.gpu.memory_gib * req.hw.total_gpus:
            continue
        price = hw.gpu.price_usd_per_hour
        out.append((name, price * hw.gpus_per_node * hw.nodes if price else float("inf")))
    return sorted(out, key=lambda x: (x[1], x[0]))[:HARDWARE_TRIES]


def checked(overrides: list[str], req, exc: NoFeasiblePlan, rule_set) -> Optional[str]:
    """'Fix: ...' naming the changes that re-plan to a plan meeting the target, or None when none does."""
    from planner import compose

    base = [o for o in overrides if not o.startswith(("hw=", "action=", "format=", "out=", "save="))]
    hw_over = [o for o in overrides if o.startswith("hw=")]
    tries = [(list(f.overrides), f.says) for f in exc.fixes]
    found = []
    with compose.Composer() as composer:
        tries += [([f"hw={name}"], f"${usd:,.2f}/h" if usd != float("inf") else "no price listed")
                  for name, usd in _hardware(composer, req)]
        for extra, says in tries:
            if len(found) >= SHOWN:
                break
            over = base + (hw_over if not extra[0].startswith("hw=") else []) + extra + ["save=false"]
            try:
                new_req, compiled = _plan(composer, over, rule_set)
            except (NoFeasiblePlan, InputError):
                continue
            found.append(f"{' '.join(extra)} ({says}; {_predicted(new_req, compiled)})")
    if not found:
        return None
    return "Fix: " + "; or ".join(found) + ". (Each fix was re-planned and predicted to meet the target.)"

"""hw=any: which hardware to buy or rent. Every GPU of the catalog (conf/gpu) with an on-demand price is planned by
the ordinary search (rules, layouts, formats, replicas, xPyD splits) in the counts one node holds (1, 2, 4, 8) or, for
a rate to sustain, as a pool of 8-GPU nodes up to what target.max_usd_per_hour allows; the cheapest plan that meets
the target wins and the others are ranked by cost.

    options = shop(req, rule_set)            # every GPU type x count, planned, ranked: meets, $/hour, $/Mtok
    best = options[0]                         # Option: its hw, compiled plan, $/hour and $/Mtok

Cost is the GPUs a plan uses times the GPU's on-demand price per GPU-hour (conf/gpu price_usd_per_hour, with its
source and date), as the plan's own cost_usd_per_mtok counts it.
"""

import dataclasses
import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import yaml

from planner.errors import InputError, NoFeasiblePlan
from planner.fastyaml import FAST_LOADER
from planner.plan import CompiledPlan
from planner.specs import DeviceKind, GpuSpec, HwSpec, Interconnect, Request

COUNTS = (1, 2, 4, 8)  # GPUs per node searched (cloud instances and servers come in these sizes)
PER_NODE = 8  # a pool's node size
MAX_NODES = 4  # pool nodes searched without a budget (and beyond one, to say what would be needed)
BUDGET_NODES = 16  # at most this many nodes however large the budget
SHOWN = 5  # runners-up listed in the plan's alternatives


@dataclass(frozen=True)
class Option:
    """One hardware choice planned: its plan (or the closest one), whether it meets the target, and its cost."""

    hw: HwSpec
    compiled: Optional[CompiledPlan]
    meets: bool
    why: str = ""  # no plan at all: why (memory, precision, no price)

    @property
    def gpus(self) -> int:
        p = self.compiled.plan
        used = p.replicas * p.gpus_per_replica
        if p.disaggregation is not None:
            used += p.disaggregation.prefill.replicas * p.disaggregation.prefill.gpus_per_replica
        return used

    @property
    def usd_per_hour(self) -> Optional[float]:
        price = self.hw.gpu.price_usd_per_hour
        return None if self.compiled is None or price is None else price * self.gpus

    @property
    def usd_per_mtok(self) -> Optional[float]:
        return None if self.compiled is None else self.compiled.prediction.cost_usd_per_mtok

    def layout(self) -> str:
        p = self.compiled.plan
        if p.disaggregation is not None:
            return f"xPyD {p.disaggregation.summary()}"
        return f"TP{p.tensor_parallel} PP{p.pipeline_parallel} {p.quantization.value} x {p.replicas} replica(s)"

    def summary(self) -> str:
        return f"{self.gpus} x {self.hw.gpu.name}: {self.layout()}"


@functools.lru_cache(maxsize=1)
def catalog() -> tuple[GpuSpec, ...]:
    """Every GPU of conf/gpu (not the CPU profile), by name."""
    from planner.document import from_plain

    folder = resources.files("conf").joinpath("gpu")
    specs = []
    for f in sorted(folder.iterdir(), key=lambda p: p.name):
        if f.name.endswith(".yaml"):
            spec = from_plain(GpuSpec, yaml.load(f.read_text(), Loader=FAST_LOADER))
            if spec.kind is DeviceKind.gpu:
                specs.append(spec)
    return tuple(specs)


@functools.lru_cache(maxsize=1)
def networks() -> dict[str, float]:
    """GPU name → the inter-node bandwidth (GB/s per node) of a multi-node hw preset of it (conf/hw)."""
    out = {}
    for f in resources.files("conf").joinpath("hw").iterdir():
        if not f.name.endswith(".yaml"):
            continue
        d = yaml.load(f.read_text(), Loader=FAST_LOADER) or {}
        gpu = next((x["/gpu@gpu"] for x in d.get("defaults", ()) if isinstance(x, dict) and "/gpu@gpu" in x), None)
        if gpu and d.get("nodes", 1) > 1 and d.get("inter_node_bandwidth_gb_s"):
            out[gpu] = float(d["inter_node_bandwidth_gb_s"])
    return out


def _hw(gpu: GpuSpec, per_node: int, nodes: int) -> HwSpec:
    fabric = Interconnect.none if per_node == 1 else Interconnect.nvlink if gpu.nvlink_bandwidth_gb_s else \
        Interconnect.xgmi if gpu.vendor == "amd" else Interconnect.pcie
    name = f"{gpu.name}x{per_node}" if nodes == 1 else f"{nodes}x{gpu.name}x{per_node}"
    return HwSpec(name=name, source=f"hw=any: {per_node} x {gpu.name} per node ({gpu.source})", gpu=gpu,
                  gpus_per_node=per_node, nodes=nodes, intra_node=fabric,
                  inter_node_bandwidth_gb_s=networks().get(gpu.name) if nodes > 1 else None)


def hardware(req: Request) -> list[HwSpec]:
    """The hardware searched: each priced GPU in COUNTS per node; for a rate to sustain, one pool of 8-GPU nodes per
    GPU (the search takes the fewest replicas), as many nodes as the budget buys (at least MAX_NODES, to say what
    would be needed); GPUs with a known network also get multi-node options (a replica too large for one node)."""
    budget = req.target.max_usd_per_hour
    out = []
    for gpu in catalog():
        if gpu.price_usd_per_hour is None:
            continue
        nodes = MAX_NODES if budget is None else \
            min(max(MAX_NODES, math.ceil(budget / (gpu.price_usd_per_hour * PER_NODE))), BUDGET_NODES)
        if req.target.min_request_rate is not None:
            out.append(_hw(gpu, PER_NODE, nodes))
            continue
        out += [_hw(gpu, n, 1) for n in COUNTS]
        if gpu.name in networks():
            out += [_hw(gpu, PER_NODE, k) for k in range(2, MAX_NODES + 1)]
    return out


def plan_option(req: Request, hw: HwSpec, rule_set) -> Option:
    """`req` planned on `hw` (its rules evaluated for that GPU); the closest plan when none meets the target."""
    from planner import rules as rule_engine
    from planner import search

    option_req = dataclasses.replace(req, hw=hw)
    try:
        compiled = search.compile_plan(option_req, rule_engine.evaluate(option_req, rule_set))
        meets = True
    except NoFeasiblePlan as exc:
        if exc.closest is None:
            return Option(hw, None, False, str(exc).split(". ")[0])
        compiled, meets = exc.closest, False
    except InputError as exc:
        return Option(hw, None, False, exc.paragraphs[0].split(". ")[0])
    if compiled.plan.nodes > 1 and not hw.inter_node_bandwidth_gb_s:
        return Option(hw, None, False, f"a replica spans nodes and no network bandwidth is known for {hw.gpu.name}")
    return Option(hw, compiled, meets)


def key(o: Option) -> tuple:
    """Rank: meets the target, then $/hour, then $/Mtok (plans first, unplanned last)."""
    if o.compiled is None:
        return (2, math.inf, math.inf, o.hw.name)
    return (0 if o.meets else 1, o.usd_per_hour, o.usd_per_mtok if o.usd_per_mtok is not None else math.inf,
            o.hw.name)


def shop(req: Request, rule_set) -> list[Option]:
    """The hardware options planned, best first (key). Each is planned without the budget (so a plan over it still
    says what it would need), then held to it: a plan dearer than target.max_usd_per_hour misses the target.
    Without a rate a plan uses every GPU of its option, so its cost is known before planning: options are planned
    cheapest first and the search stops once SHOWN + 1 meet (none cheaper can follow)."""
    free = dataclasses.replace(req, target=dataclasses.replace(req.target, max_usd_per_hour=None))
    options = hardware(req)
    if req.target.min_request_rate is not None:
        return sorted((within_budget(req, plan_option(free, hw, rule_set)) for hw in options), key=key)
    out, met = [], 0
    for hw in sorted(options, key=lambda h: (h.gpu.price_usd_per_hour * h.total_gpus, h.name)):
        o = within_budget(req, plan_option(free, hw, rule_set))
        out.append(o)
        met += o.meets
        if met > SHOWN:
            break
    return sorted(out, key=key)


def within_budget(req: Request, o: Option) -> Option:
    """`o` with the budget's verdict (slo.check's usd_per_hour) added to its prediction."""
    from planner import slo
    from planner.plan import Violation

    budget = req.target.max_usd_per_hour
    if budget is None or o.compiled is None or o.usd_per_hour is None:
        return o
    bad = tuple(Violation(c.metric, float(c.observed), c.limit) for c in
                slo.check(req.target, slo.Observed(usd_per_hour=o.usd_per_hour)) if not c.passed)
    if not bad:
        return o
    pred = o.compiled.prediction
    violations = pred.violations + bad
    pred = dataclasses.replace(pred, violations=violations,
                               binding_constraint=slo.describe(slo.binding(violations), pred.percentile))
    return dataclasses.replace(o, compiled=dataclasses.replace(o.compiled, prediction=pred), meets=False)


def over_budget(req: Request, o: Option) -> bool:
    """The option meets every SLO but the budget."""
    v = o.compiled.prediction.violations if o.compiled is not None else ()
    return bool(v) and all(x.metric == "usd_per_hour" for x in v)


def no_option(req: Request, options: list[Option]) -> NoFeasiblePlan:
    """Exit 3 for hw=any: the cheapest option that would meet the target, and what it needs (the budget, or the SLO
    the best plan misses)."""
    planned = [o for o in options if o.compiled is not None]
    if not planned:
        reasons = "; ".join(f"{o.hw.name}: {o.why}" for o in options[:4])
        return NoFeasiblePlan(f"hw=any: no GPU of the catalog can serve {req.model.name} ({reasons}). Fix: a smaller "
                              "model or precision=int4-awq.")
    budget = [o for o in planned if over_budget(req, o)]
    if budget:
        o = min(budget, key=lambda x: x.usd_per_hour)
        return NoFeasiblePlan(
            f"hw=any: no GPU of the catalog meets target={req.target.name} within target.max_usd_per_hour="
            f"{req.target.max_usd_per_hour:g}: the cheapest that meets every other SLO is {o.summary()} at "
            f"${o.usd_per_hour:,.2f}/h (${o.usd_per_mtok:,.3f}/Mtok). Fix: target.max_usd_per_hour="
            f"{math.ceil(o.usd_per_hour * 100) / 100:g}, or a lower target.min_request_rate.", closest=o.compiled,
            request=dataclasses.replace(req, hw=rented(o)))
    o = planned[0]
    from planner import slo

    v = slo.describe(slo.binding(o.compiled.prediction.violations), req.target.percentile)
    return NoFeasiblePlan(f"hw=any: no GPU of the catalog meets target={req.target.name}: the closest, {o.summary()} "
                          f"(${o.usd_per_hour:,.2f}/h), misses {v}. Fix: relax that SLO, or a lower request rate.",
                          closest=o.compiled, request=dataclasses.replace(req, hw=rented(o)))



def _alternative(o: Option, best: Option):
    from planner.plan import Alternative

    pred = o.compiled.prediction
    if not o.meets:
        from planner import slo

        why = f"misses {slo.describe(slo.binding(pred.violations), pred.percentile)}"
    else:
        why = f"dearer: ${o.usd_per_hour:,.2f}/h against ${best.usd_per_hour:,.2f}/h"
    cost = f"${o.usd_per_hour:,.2f}/h" + (f", ${o.usd_per_mtok:,.3f}/Mtok" if o.usd_per_mtok is not None else "")
    return Alternative(summary=f"hw={rented(o).name}: {o.summary()} ({cost})", rejected_because=why,
                       prediction=_brief(pred),
                       layout="xPyD" if o.compiled.plan.disaggregation is not None else "aggregated")


def _brief(pred):
    from planner.plan import Brief

    q = pred.percentile
    return Brief(ttft_ms=pred.ttft_ms.at(q), tpot_ms=pred.tpot_ms.at(q),
                 output_tok_s_per_gpu=pred.output_throughput_tok_s_per_gpu, meets_target=pred.meets_target)


def chosen(req: Request, options: list[Option]) -> tuple[Request, CompiledPlan]:
    """The best option as the request and plan to emit: its hardware in the request, the next SHOWN options (with
    their costs) first among its alternatives, and a note on what was searched."""
    from planner.plan import settled

    best = options[0]
    planned = [o for o in options[1:] if o.compiled is not None][:SHOWN]
    searched = len(options)
    hw = rented(best)  # the pool searched for a rate (e.g. 4 x 8 GPUs) is larger than what the plan uses
    note = (f"hw=any searched {searched} hardware options ({len({o.hw.gpu.name for o in options})} GPU types with a "
            f"price); {hw.name} is the cheapest that meets the target: ${best.usd_per_hour:,.2f}/h for "
            f"{best.gpus} GPU{'s' if best.gpus != 1 else ''} (price: {best.hw.gpu.price_source}).")
    c = best.compiled
    compiled = settled(dataclasses.replace(
        c, alternatives=tuple(_alternative(o, best) for o in planned) + c.alternatives, notes=c.notes + (note,)))
    return dataclasses.replace(req, hw=hw), compiled


def rented(o: Option) -> HwSpec:
    """The hardware the plan uses (a pool searched for a rate is bigger): its GPUs on nodes of up to PER_NODE, each
    replica within one node unless the plan spans nodes."""
    p = o.compiled.plan
    per_node = o.hw.gpus_per_node if p.nodes > 1 else min(o.gpus, PER_NODE)
    per_node = next(n for n in COUNTS if n >= per_node) if per_node <= PER_NODE else per_node
    return _hw(o.hw.gpu, per_node, max(1, math.ceil(o.gpus / per_node)))

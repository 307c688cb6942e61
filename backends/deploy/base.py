"""What a deploy target is (one cluster stack a plan can be rendered for), its declared table, and what it renders.

A deploy target (KServe, llm-d, Dynamo, LeaderWorkerSet, Ray Serve, Slurm) wraps an engine: the engine's own
flag table (backends/<engine>.py) decides every engine flag, and the target's `DeployTable` declares where the stack
reads them and which plan fields the stack reads from its own keys (replicas, parallelism, GPUs per pod). Nothing
here changes a number: a target either places the plan's values or says why it cannot serve the plan.
"""

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Protocol

from backends.table import Applied, FlagTable, apply
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

Value = object


@dataclass(frozen=True)
class Placement:
    """One plan value the stack reads from its own key: `keys` lead into a YAML file (list items by index), or for
    a shell script name one line prefix (the value is the rest of the first line that starts with it)."""

    field: str  # the Plan attribute (or derived quantity) this carries
    file: str
    keys: tuple
    value: Callable[[Plan], Value]
    source: str  # where the stack documents the key


@dataclass(frozen=True)
class EngineArgs:
    """Where the engine's own flags go in the stack's files, and the flags the stack sets itself."""

    file: str
    keys: tuple  # into the file: a list of words, one shell line (str), or (kwargs=True) a mapping
    taken: tuple[str, ...]  # engine flag names the stack passes itself from `Placement`s (or rejects)
    source: str
    kwargs: bool = False  # a mapping of EngineArgs field names (Ray Serve LLM's engine_kwargs), not words


@dataclass(frozen=True)
class DeployTable:
    """One target's declared table for one engine: where the engine flags go and what the stack reads itself."""

    engine: BackendName
    engine_args: EngineArgs
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class Deployment:
    """The rendered files of one plan on one target (file name → text, in a fixed order)."""

    target: str
    files: Mapping[str, str]
    notes: tuple[str, ...] = ()


class Target(Protocol):
    """One cluster stack."""

    name: str  # the `deploy=` value
    title: str  # what a person calls it
    engines: tuple[BackendName, ...]  # the engines this module renders for the stack

    def table(self, plan: Plan, gpu: GpuSpec) -> DeployTable:
        """The declared table for `plan`'s engine (call `unsupported` first)."""
        ...

    def unsupported(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        """Why this stack (as rendered here) cannot serve `plan`, with the source; None when it can."""
        ...

    def render(self, plan: Plan, name: str, gpu: GpuSpec) -> Deployment:
        """The stack's files for `plan`; objects named `name` (a DNS-1123 label)."""
        ...


def engine_flags(plan: Plan, taken: tuple[str, ...] = ()) -> Applied:
    """The engine's flag table applied to `plan`, without the model (each stack names it its own way) and the flags
    in `taken` (the stack passes those itself)."""
    from backends import get

    table = get(plan.backend).table
    rows = tuple(r for r in table.flags if r.field != "model_path" and r.name not in taken)
    return apply(FlagTable(rows, table.no_flag), plan)


def engine_unsupported(target: str, engines: tuple[BackendName, ...], plan: Plan, source: str) -> Optional[str]:
    """The reason string when `plan`'s engine is not one this target renders."""
    if plan.backend in engines:
        return None
    names = ", ".join(e.value for e in engines)
    return (f"deploy={target} runs {names} workers here, the plan's backend is {plan.backend.value} "
            f"[source: {source}]. Fix: pin backend={engines[0].value}, or deploy=lws (every engine)")


def gpus_per_node(plan: Plan) -> int:
    """GPUs one pod (one node of a replica) asks for."""
    return plan.gpus_per_replica // plan.nodes


def disaggregated_unsupported(target: str, plan: Plan, native: str) -> Optional[str]:
    """The reason string when `plan` is disaggregated and this target does not render prefill/decode pools here;
    `native` says what the stack itself offers for them (so the user knows it is this planner's gap)."""
    if plan.disaggregation is None:
        return None
    return (f"deploy={target}: the plan is disaggregated ({plan.disaggregation.summary()}), which this planner renders "
            f"for deploy=lws (DisaggregatedSet) and deploy=dynamo only; {native}. Fix: deploy=lws or dynamo, or "
            "plan.disaggregation=false for an aggregated plan")

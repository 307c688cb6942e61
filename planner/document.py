"""The plan document (DESIGN.md keys): pure (de)serialisation of a Request and its CompiledPlan.

    text = dumps(build(req, compiled))          # byte-stable: fixed key order, rounded floats, no timestamps
    req, compiled = load(path)                   # the same objects back (compiled equals what was written)

This is the only module that reads or writes the plan's file form; everything else passes the typed objects.
"""

import dataclasses
import enum
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from planner import __version__
from planner.errors import InputError
from planner.fastyaml import FAST_LOADER
from planner.plan import CompiledPlan, Dist, Launch, MemoryBreakdown, Prediction
from planner.specs import Request

PLAN_KEYS = ("planner", "request", "plan", "memory", "prediction", "decisions", "alternatives")
_MEMORY_KEYS = ("total_gib", "usable_gib", "weights_gib", "kv_cache_gib", "activations_gib", "runtime_overhead_gib",
                "kv_bytes_per_token", "block_size", "kv_cache_blocks", "kv_cache_tokens", "max_concurrency_at_max_len")


def plain(value: Any, digits: int = 4) -> Any:
    """JSON/YAML-ready data: enums by value, dataclasses as dicts, floats rounded to `digits` decimals."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Dist):
        return _dist(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name), digits) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, digits) for v in value]
    if isinstance(value, float):
        r = round(value, digits)
        return int(r) if r.is_integer() and abs(r) >= 1e6 else r
    return value


def _dist(d: Dist) -> dict:
    out = {f"p{q:g}": v for q, v in d.quantiles}
    out["mean"] = d.mean
    return out


def request_dict(req: Request) -> dict:
    d = plain(req)
    d["model"].pop("path", None)  # a local path is machine-specific; model_path in the plan says what is served
    return d


def inputs_sha256(req: Request) -> str:
    return hashlib.sha256(json.dumps(request_dict(req), sort_keys=True).encode()).hexdigest()


def _prediction(p: Optional[Prediction]) -> dict:
    if p is None:
        return {}
    return {"model": p.model, "load": p.load.describe(), "offered": plain(p.load),
            "ttft_ms": _dist(p.ttft_ms), "tpot_ms": _dist(p.tpot_ms), "e2e_latency_ms": _dist(p.e2e_latency_ms),
            "output_throughput_tok_s": p.output_throughput_tok_s,
            "output_throughput_tok_s_per_gpu": p.output_throughput_tok_s_per_gpu,
            "request_throughput_rps": p.request_throughput_rps, "concurrency": p.concurrency,
            "cost_usd_per_mtok": p.cost_usd_per_mtok, "meets_target": p.meets_target,
            "binding_constraint": p.binding_constraint, "percentile": p.percentile,
            "violations": plain(p.violations),
            "kv_transfer_ms": None if p.kv_transfer_ms is None else _dist(p.kv_transfer_ms)}


def build(req: Request, compiled: CompiledPlan) -> dict:
    """The plan document as plain data, keys in DESIGN.md's order."""
    mem = plain(compiled.memory)
    doc = {
        "planner": {"version": __version__, "inputs_sha256": inputs_sha256(req)},
        "request": request_dict(req),
        "plan": plain(compiled.plan),
        "memory": {k: mem[k] for k in _MEMORY_KEYS},  # per GPU (the most loaded rank), GiB
        "prediction": _prediction(compiled.prediction),
        "decisions": plain(compiled.decisions),
        "alternatives": plain(compiled.alternatives),
        "search": plain(compiled.search),
        "pareto_front": plain(compiled.pareto_front),
        "notes": list(compiled.notes),
        "rules_fired": list(compiled.rules_fired),
    }
    if compiled.launch is not None:
        doc["launch"] = plain(compiled.launch)
    return doc


def dumps(doc: dict, fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True)


def write(doc: dict, path: Path) -> None:
    """Write the plan file; unchanged content is not rewritten (keeps mtimes stable for make-like tools)."""
    text = dumps(doc, "json" if path.suffix == ".json" else "yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# --- reading back -------------------------------------------------------------------------------------------------

def from_plain(tp: Any, data: Any) -> Any:
    """Rebuild a value of type `tp` (a dataclass, enum, Optional, tuple, dict or scalar) from plain data."""
    origin = typing.get_origin(tp)
    if data is None:
        return None
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return from_plain(args[0], data) if len(args) == 1 else data
    if tp is Dist:
        quantiles = tuple(sorted((float(k[1:]), v) for k, v in data.items() if k.startswith("p")))
        return Dist(mean=data["mean"], quantiles=quantiles)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: from_plain(hints[k], v) for k, v in data.items() if k in names})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v) for v in data)
        return tuple(from_plain(a, v) for a, v in zip(args, data))
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    return data


def _compiled(doc: dict) -> CompiledPlan:
    hints = typing.get_type_hints(CompiledPlan)
    pred = doc.get("prediction") or None
    memory = dict(doc["memory"], max_model_len=doc["plan"]["max_model_len"])
    return CompiledPlan(
        plan=from_plain(hints["plan"], doc["plan"]),
        memory=from_plain(MemoryBreakdown, memory),
        decisions=from_plain(hints["decisions"], doc["decisions"]),
        alternatives=from_plain(hints["alternatives"], doc["alternatives"]),
        prediction=None if pred is None else from_plain(Prediction, dict(pred, load=pred["offered"])),
        notes=tuple(doc.get("notes") or ()),
        rules_fired=tuple(doc.get("rules_fired") or ()),
        search=from_plain(hints["search"], doc.get("search") or {}),
        pareto_front=from_plain(hints["pareto_front"], doc.get("pareto_front") or []),
        launch=None if not doc.get("launch") else from_plain(Launch, doc["launch"]))


def parse(doc: Any, where: str) -> tuple[Request, CompiledPlan]:
    """The Request and CompiledPlan of a plan document, or InputError saying what is wrong with it."""
    missing = [k for k in PLAN_KEYS if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise InputError(f"plan={where}: not a plan document (missing {', '.join(missing)}). Fix: give a plan file "
                         "the planner wrote (python -m planner ... writes plans/<model>-<hw>-<target>.yaml).")
    try:
        return from_plain(Request, doc["request"]), _compiled(doc)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InputError(f"plan={where}: a plan document this planner cannot read ({type(exc).__name__}: {exc}); "
                         f"it was written by planner {doc['planner'].get('version', '?')}, this is {__version__}. "
                         "Fix: compile the plan again with this planner (the same overrides, without plan=).") \
            from None


def load(path: str) -> tuple[Request, CompiledPlan]:
    """A saved plan file as (Request, CompiledPlan), or InputError saying what is wrong with the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"plan={path}: no such file. Fix: give the path of a plan written by the planner, "
                         "e.g. plans/llama3-70b-h100x4-balanced.yaml.")
    try:
        doc = yaml.load(p.read_text(), Loader=FAST_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"plan={path}: not a YAML/JSON plan document ({str(exc).splitlines()[0]}). Fix: give a "
                         "plan file the planner wrote.") from None
    return parse(doc, path)

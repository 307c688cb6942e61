"""The plan document (DESIGN.md keys): build it from a CompiledPlan, write it byte-stably, read it back.

Same inputs → the same bytes: key order is fixed by the code, floats are rounded, there are no timestamps or
absolute paths.
"""

import dataclasses
import enum
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from planner.fastyaml import FAST_LOADER

from planner import __version__
from planner.errors import InputError
from planner.plan import CompiledPlan
from planner.specs import Request

PLAN_KEYS = ("planner", "request", "plan", "memory", "prediction", "decisions", "alternatives")


def plain(value: Any, digits: int = 4) -> Any:
    """JSON/YAML-ready data: enums by value, dataclasses as dicts, floats rounded to `digits` decimals."""
    if isinstance(value, enum.Enum):
        return value.value
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


def request_dict(req: Request) -> dict:
    d = plain(req)
    d["model"].pop("path", None)  # a local path is machine-specific; model_path in the plan says what is served
    return d


def inputs_sha256(req: Request) -> str:
    return hashlib.sha256(json.dumps(request_dict(req), sort_keys=True).encode()).hexdigest()


def build(req: Request, compiled: CompiledPlan) -> dict:
    """The plan document as plain data, keys in DESIGN.md's order."""
    mem = compiled.memory
    return {
        "planner": {"version": __version__, "inputs_sha256": inputs_sha256(req)},
        "request": request_dict(req),
        "plan": plain(compiled.plan),
        "memory": {
            # per GPU (the most loaded rank), GiB
            "total_gib": plain(mem.total_gib, 3),
            "usable_gib": plain(mem.usable_gib, 3),
            "weights_gib": plain(mem.weights_gib, 3),
            "kv_cache_gib": plain(mem.kv_cache_gib, 3),
            "activations_gib": plain(mem.activations_gib, 3),
            "runtime_overhead_gib": plain(mem.runtime_overhead_gib, 3),
            "kv_bytes_per_token": plain(mem.kv_bytes_per_token, 1),
            "block_size": mem.block_size,
            "kv_cache_blocks": mem.kv_cache_blocks,
            "kv_cache_tokens": mem.kv_cache_tokens,
            "max_concurrency_at_max_len": plain(mem.max_concurrency_at_max_len, 2),
        },
        "prediction": plain(compiled.prediction),
        "decisions": [plain(d) for d in compiled.decisions],
        "alternatives": [plain(a) for a in compiled.alternatives],
        "search": plain(compiled.search),
        "pareto_front": [plain(p) for p in compiled.pareto_front],
        "notes": list(compiled.notes),
        "rules_fired": list(compiled.rules_fired),
    }


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


def load(path: str) -> dict:
    """A saved plan document, or InputError saying what is wrong with the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"plan={path}: no such file. Fix: give the path of a plan written by the planner, "
                         "e.g. plans/llama3-70b-h100x4-balanced.yaml.")
    try:
        doc = yaml.load(p.read_text(), Loader=FAST_LOADER)
    except yaml.YAMLError as exc:
        raise InputError(f"plan={path}: not valid YAML/JSON ({str(exc).splitlines()[0]}). Fix: give a plan file "
                         "the planner wrote.") from None
    missing = [k for k in PLAN_KEYS if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise InputError(f"plan={path}: not a plan document (missing {', '.join(missing)}). Fix: give a plan file "
                         "the planner wrote (python -m planner ... writes plans/<model>-<hw>-<target>.yaml).")
    return doc

"""Bounds on the fields: which values a spec field or command option accepts, declared on the field itself, and the
one check that turns every value out of bounds into a paragraph (STYLE.md "Bounds and docs on the field", after
vLLM's `Field(default=..., ge=1)` in vllm/config/scheduler.py). Types are Hydra's to check; this checks ranges.
"""

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

NAME = r"\w[\w.+-]*"  # a catalog name: it becomes part of a plan file's name, so no '/', no spaces, not empty
NOT_BLANK = r"(?s).*\S.*"


@dataclass(frozen=True)
class Bound:
    """What a field's values must be, in words for the error (`what`) and as limits: numbers within ge/gt/le/lt
    (and finite), text matching `pattern`. None (an optional field left unset) is always accepted."""

    what: str
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    pattern: Optional[str] = None

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, str):
            return self.pattern is None or re.fullmatch(self.pattern, value) is not None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        return (math.isfinite(value) and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))


FINITE = Bound("a finite number")  # every float field, bounded or not: inf and nan are not values a plan can use


def bounded(what: str, default: Any = dataclasses.MISSING, *, flag: Optional[str] = None, doc: str = "",
            metavar: str = "", **limits: Any) -> Any:
    """A dataclass field whose values must be `what` (limits: ge, gt, le, lt, pattern). `flag` is the name the
    command line gives the field when it differs from the field's own (plan_file is `plan=`); `doc` and `metavar`
    are its line in `--help` (planner/usage.py)."""
    return dataclasses.field(default=default, metadata=_metadata(Bound(what, **limits), flag, doc, metavar))


def option(default: Any, doc: str, metavar: str = "", **kwargs: Any) -> Any:
    """A command option with no bound beyond its type (a bool, a choice, a section), documented for `--help`."""
    return dataclasses.field(default=default, metadata=_metadata(None, None, doc, metavar), **kwargs)


def _metadata(bound: Optional[Bound], flag: Optional[str], doc: str, metavar: str) -> dict:
    found = {"bound": bound, "flag": flag, "doc": doc, "metavar": metavar}
    return {k: v for k, v in found.items() if v}


def positive_int(default: Any = dataclasses.MISSING, what: str = "a positive integer", **doc: Any) -> Any:
    return bounded(what, default, ge=1, **doc)


def at_least_zero(default: Any = dataclasses.MISSING, what: str = "zero or more", **doc: Any) -> Any:
    return bounded(what, default, ge=0, **doc)


def positive(default: Any = dataclasses.MISSING, what: str = "a positive number", **doc: Any) -> Any:
    return bounded(what, default, gt=0, **doc)


def catalog_name(default: Any = dataclasses.MISSING) -> Any:
    return bounded("a name of letters, digits and . _ + - (it becomes part of the plan file's name)", default,
                   pattern=NAME)


def not_blank(what: str, default: Any = dataclasses.MISSING, **doc: Any) -> Any:
    return bounded(what, default, pattern=NOT_BLANK, **doc)


def doc(f: dataclasses.Field) -> tuple[str, str]:
    """(metavar, doc) of a documented field, ('', '') for others."""
    return f.metadata.get("metavar", ""), f.metadata.get("doc", "")


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", f.name)


def shown(value: Any) -> str:
    """A value as the user would type it back: text quoted when empty or spaced."""
    if isinstance(value, str) and (not value or re.search(r"\s|'", value)):
        return repr(value)
    return str(value)


def problems(obj: Any, prefix: str = "") -> list[str]:
    """One paragraph per field of the dataclass instance `obj` (nested ones too) whose value is out of its bound;
    `prefix` is the command-line path of `obj` ("model.", "plan.")."""
    found = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = prefix + flag_name(f)
        if dataclasses.is_dataclass(value):
            found += problems(value, path + ".")
            continue
        bound = f.metadata.get("bound")
        if bound is None and isinstance(value, float):
            bound = FINITE
        if bound is not None and not bound.accepts(value):
            finite = "" if not isinstance(value, float) or math.isfinite(value) else " (a finite number)"
            found.append(f"{path}={shown(value)}: must be {bound.what}{finite}. Fix: set {path} to such a value.")
    return found

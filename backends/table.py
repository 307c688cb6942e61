"""The plan-field → engine-flag table: one declared row per flag, applied to a Plan to get argv, env and config.

STYLE.md: "Rendering is a pure translation of the plan, driven by one declared plan-field → flag table per
backend". Each backend module declares one `FlagTable`; every Plan field is either a `Flag` row (it reaches the
engine) or a `NoFlag` row (why it does not: deployment shape, or the engine has no equivalent, with a source).
"""

import dataclasses
import enum
from dataclasses import dataclass
from typing import Callable, Optional, Union

from planner.plan import Plan

Value = Union[str, bool, int, float, dict, None]


class Where(str, enum.Enum):
    """Where a flag goes: the command line, the process environment, or a key path in the engine's config file."""

    positional = "positional"  # a bare value on the command line (the name is for people: "MODEL")
    argv = "argv"
    env = "env"
    config = "config"


@dataclass(frozen=True)
class Flag:
    """One plan field → one engine setting.

    `value(plan)` gives what the engine is told: a str for `--flag VALUE` (or the env value / YAML scalar), True for
    a bare switch (False: `--no-<name>` when `negatable`, else nothing; a config value keeps False), a dict for a
    nested config value, None when nothing is passed because the engine's default is exactly the plan's value (the
    row's `default_note` says so).
    """

    field: str  # Plan attribute
    name: str  # "--max-num-seqs", "VLLM_CPU_KVCACHE_SPACE", or a dotted key path "kv_cache_config.dtype"
    where: Where
    value: Callable[[Plan], Value]
    source: str  # file:line (or doc) in the backend's source for the pinned version
    default_note: str = ""  # when value() may be None: why passing nothing is the plan's value
    negatable: bool = False  # argparse BooleanOptionalAction: False is passed as --no-<name>


@dataclass(frozen=True)
class NoFlag:
    """A plan field that no engine flag carries, and why (deployment shape, or no equivalent in this engine)."""

    field: str
    reason: str
    source: str = ""


@dataclass(frozen=True)
class FlagTable:
    flags: tuple[Flag, ...]
    no_flag: tuple[NoFlag, ...]

    def rows_for(self, field: str) -> tuple[Flag, ...]:
        return tuple(f for f in self.flags if f.field == field)

    def no_flag_for(self, field: str) -> Optional[NoFlag]:
        return next((n for n in self.no_flag if n.field == field), None)

    def uncovered(self) -> tuple[str, ...]:
        """Plan fields the table forgets (neither a Flag nor a NoFlag row): must be empty."""
        named = {f.field for f in self.flags} | {n.field for n in self.no_flag}
        return tuple(f.name for f in dataclasses.fields(Plan) if f.name not in named)


@dataclass(frozen=True)
class Applied:
    """A table applied to one plan: the engine flags, environment and config-file content it yields."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    config: dict  # nested mapping for the engine's config file ({} when the backend has none)


def apply(table: FlagTable, plan: Plan) -> Applied:
    """Translate `plan` through `table`, in the table's row order (so output is deterministic)."""
    argv: list[str] = []
    env: list[tuple[str, str]] = []
    config: dict = {}
    for row in table.flags:
        value = row.value(plan)
        if value is False and row.negatable:
            argv.append("--no-" + row.name[2:])
            continue
        if value is None or (value is False and row.where is not Where.config):
            continue
        if row.where is Where.positional:
            argv.append(str(value))
        elif row.where is Where.argv:
            argv += [row.name] if value is True else [row.name, str(value)]
        elif row.where is Where.env:
            env.append((row.name, str(value)))
        else:
            _set_path(config, row.name, value)
    return Applied(tuple(argv), tuple(env), config)


def _set_path(config: dict, dotted: str, value: Value) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def get_path(config: dict, dotted: str) -> Value:
    """The value at a dotted key path of a nested mapping (None when absent)."""
    node: Value = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


# Small converters the tables share.

def enum_value(field: str, mapping: dict) -> Callable[[Plan], Value]:
    """value(plan) = mapping[plan.<field>] (a KeyError here is a table bug: unsupported() screens values first)."""
    return lambda plan: mapping[getattr(plan, field)]


def quantization_value(mapping: dict) -> Callable[[Plan], Value]:
    """The engine's name for quantizing at load (mapping[plan.quantization]); nothing when the plan serves a
    checkpoint in its stored format (plan.quantization_method): every engine here reads that format from the
    checkpoint's own config, and SGLang's docs say not to add --quantization then (docs.sglang.io, Quantization)."""
    return lambda plan: None if plan.quantization_method else mapping[plan.quantization]


def number(field: str, when: Callable[[Plan], bool] = lambda plan: True) -> Callable[[Plan], Value]:
    """value(plan) = str(plan.<field>) when `when(plan)` and the field is set, else None."""
    def value(plan: Plan) -> Value:
        v = getattr(plan, field)
        return None if v is None or not when(plan) else str(v)
    return value

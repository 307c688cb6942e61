"""Check each command-line override's key against the planner's schema before Hydra composes it.

The planner's config is closed (planner/schema.py): every field is always there, with a value or null, and nothing
reads a key the schema does not name. So of Hydra's override kinds (hydra.cc, "Override grammar/Basic"):
- `key=value` and `++key=value` (add or override) set a field that exists; `+key=value` (append) sets one that
  has no value yet. On a key the schema does not name, all three are refused here: Hydra would add the key to
  the config, where nobody reads it (`+target.tpot=5` planned with tpot_ms unchanged).
- `~key` (delete) has nothing to delete: refused, with what the user can do instead (null, another option).
- `group=option` is checked by planner.compose against conf/<group>/; `hydra.*` and `group@package=option` are
  Hydra's own and pass through.
"""

import dataclasses
import typing
from typing import Any, Mapping, Optional

from planner import schema
from planner.errors import did_you_mean

_HIDDEN = ("plan_file",)  # fields the command line names differently (`plan=FILE`): not listed as names to use


def problems(overrides: list[str], options: Mapping[str, list[str]]) -> list[str]:
    """One paragraph per override whose key is not in the schema, or that uses `+`/`++`/`~` where the planner
    cannot honour it. `options` maps each config group to its option names (for the Fix of `~group`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    found = []
    for line in overrides:
        try:
            override = parser.parse_override(line)
        except HydraException:
            continue  # a syntax error: Hydra's composition names it (planner.compose)
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")) or override.package is not None:
            continue
        problem = _problem(override, line, key, options)
        if problem:
            found.append(problem)
    return found


def _problem(override, line: str, key: str, options: Mapping[str, list[str]]) -> Optional[str]:
    if key in options:  # a config group: its option is checked against conf/<group>/ by planner.compose
        return _delete_group(line, key, options[key]) if override.is_delete() else None
    field_type, problem = field_at(key)
    if problem:
        return f"{line}: {problem}"
    if override.is_delete():
        return _delete_field(line, key, field_type)
    if _is_section(field_type):
        names = ", ".join(f"{key}.{f.name}" for f in dataclasses.fields(field_type))
        return (f"{line}: {key} is a section (its fields: {names}), so one value cannot replace it. Fix: set the "
                f"field you mean, e.g. {key}.{dataclasses.fields(field_type)[0].name}=...")
    if not override.is_sweep_override() and override.value() == "???":
        return (f"{line}: ??? is OmegaConf's marker for a value that is missing, not a value. Fix: give {key} a "
                "value, or leave it out for its default.")
    return None


def field_at(key: str) -> tuple[Any, Optional[str]]:
    """The schema type of the dotted `key`, or (None, why it is not a field)."""
    tp: Any = schema.root_schema()
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if _is_section(tp):
            names = [f.name for f in dataclasses.fields(tp)]
            if part not in names:
                return None, unknown(key, where, part, [n for n in names if n not in _HIDDEN])
            tp = _unwrap(typing.get_type_hints(tp)[part])
        elif typing.get_origin(tp) in (list, tuple) and part.lstrip("-").isdigit():
            tp = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        else:
            return None, (f"'{key}' is not a field of this config: {where} is a value, not a section with fields. "
                          f"Fix: {where}=VALUE.")
    return tp, None


def unknown(key: str, where: str, leaf: str, names: list[str]) -> str:
    """The paragraph (after `override: `) for a key the schema does not name."""
    section = f"{where} has" if where else "the planner's options and groups are"
    return (f"'{key}' is not a field of this config ({section}: {', '.join(names)}).{did_you_mean(leaf, names)} "
            "The planner reads only these, so a new key (`+key=value` in Hydra) would change nothing. Fix: check "
            "the spelling; `python -m planner --cfg job` prints every field with its current value.")


def _delete_group(line: str, group: str, valid: list[str]) -> str:
    instead = f"{group}=auto lets the planner choose, or " if "auto" in valid else ""
    return (f"{line}: removes the {group} group, and every plan needs a {group}. Fix: {instead}choose another with "
            f"{group}=NAME (Valid: {', '.join(valid)}).")


def _delete_field(line: str, key: str, field_type: Any) -> str:
    if _is_section(field_type):
        first = dataclasses.fields(field_type)[0].name
        return (f"{line}: {key} is a section of the planner's schema, always there; nothing can delete it. Fix: leave "
                f"out the {key}.<field> overrides you do not want (e.g. {key}.{first}); a field left unset keeps "
                "its default.")
    if "." not in key:
        return (f"{line}: {key} is one of the planner's options, always there with its default; nothing can delete "
                f"it. Fix: leave {key} out for its default.")
    if _optional(key):
        return f"{line}: {key} cannot be deleted from the schema. Fix: {key}=null unsets it."
    return (f"{line}: {key} is a required field of the schema; it cannot be deleted or unset. Fix: give it another "
            f"value ({key}=...).")


def _optional(key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    tp, _ = field_at(parent)
    return type(None) in typing.get_args(typing.get_type_hints(tp)[leaf])


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X; typing.List[X] -> list[X]."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    return tp

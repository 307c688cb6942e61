"""`python -m planner --help`: Hydra renders the template of conf/hydra/help/planner.yaml (Hydra's `hydra/help`
config group); the `${planner:...}` resolvers here fill in what is data elsewhere: the config groups' options (the
catalog in conf/), the command's options (their docs on schema.AppConfig's fields) and the version."""

import dataclasses
import enum
import shutil
import textwrap
import typing

from planner import bounds, schema

KEY_WIDTH = 26  # the key=value column of the option lines


def register() -> None:
    """Register the `planner` resolver the help template uses (before Hydra renders it)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("planner", resolve, replace=True)


def resolve(what: str) -> str:
    if what == "groups":
        return groups()
    if what == "options":
        return options()
    if what == "version":
        from planner import __version__

        return __version__
    raise ValueError(f"${{planner:{what}}}: no such help section (groups, options, version)")


def width() -> int:
    """Lines fit the terminal (COLUMNS, one column spare), within 60..100 columns."""
    return max(60, min(shutil.get_terminal_size((80, 24)).columns - 1, 100))


def groups() -> str:
    """One entry per config group: its name, then its options wrapped under it."""
    from hydra.core.global_hydra import GlobalHydra

    from planner.compose import GROUPS

    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group in GROUPS:
        names = ", ".join(sorted(loader.get_group_options(group)))
        lines += textwrap.wrap(names, width(), initial_indent=f"  {group:<11}", subsequent_indent=" " * 13,
                               break_on_hyphens=False)
    return "\n".join(lines)


def options() -> str:
    """One entry per command option: `key=VALUE` and its doc, from the field's metadata (planner/bounds.py)."""
    lines = []
    for f, key, hint in _documented(schema.AppConfig):
        metavar, doc = bounds.doc(f)
        entry = f"  {key}={metavar or _value_hint(f, hint)}"
        body = textwrap.wrap(doc, width() - KEY_WIDTH - 1, break_on_hyphens=False)
        if len(entry) < KEY_WIDTH:
            lines.append(f"{entry:<{KEY_WIDTH}} {body[0]}")
        else:
            lines += [entry, " " * KEY_WIDTH + " " + body[0]]
        lines += [" " * KEY_WIDTH + " " + line for line in body[1:]]
    return "\n".join(lines)


def _documented(cls: type, prefix: str = "") -> list[tuple[dataclasses.Field, str, typing.Any]]:
    """(field, command-line key, type) for each documented field of `cls`, sections expanded."""
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found += _documented(hints[f.name], prefix + f.name + ".")
        elif bounds.doc(f)[1]:
            found.append((f, prefix + bounds.flag_name(f), hints[f.name]))
    return found


def _value_hint(f: dataclasses.Field, hint: typing.Any) -> str:
    """A choice lists its values; a switch shows the value that changes something (save=false, force=true)."""
    choices = [a for a in (hint, *typing.get_args(hint)) if isinstance(a, type) and issubclass(a, enum.Enum)]
    if choices:
        return "|".join(m.value for m in choices[0])
    if isinstance(f.default, bool):
        return str(not f.default).lower()
    return str(f.default)

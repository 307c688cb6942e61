"""Hydra structured-config schema, derived from the frozen specs so YAML, validation and code share one truth.

OmegaConf makes a frozen dataclass read-only (overrides would fail), so each spec gets a generated mutable twin
that Hydra validates against; `freeze` turns a validated twin back into the frozen spec.
"""

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, List, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from planner import specs

_TWINS: dict[type, type] = {}


def _is_spec(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and tp.__module__ == specs.__name__


def _twin_type(tp: Any) -> Any:
    if _is_spec(tp):
        return twin(tp)
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and _is_spec(args[0]):
            return Optional[twin(args[0])]
    return tp


def twin(spec_cls: type) -> type:
    """The mutable schema dataclass with the same fields, types and defaults as `spec_cls`."""
    if spec_cls in _TWINS:
        return _TWINS[spec_cls]
    hints = typing.get_type_hints(spec_cls)
    fields = []
    for f in dataclasses.fields(spec_cls):
        tp = _twin_type(hints[f.name])
        if f.default is not dataclasses.MISSING:
            spec = field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            spec = field(default_factory=_twin_type(f.default_factory))
        else:
            spec = field(default=MISSING)
        fields.append((f.name, tp, spec))
    cls = dataclasses.make_dataclass(f"{spec_cls.__name__}Schema", fields)
    cls.__doc__ = spec_cls.__doc__
    _TWINS[spec_cls] = cls
    return cls


def freeze(obj: Any, spec_cls: type) -> Any:
    """Convert a twin instance (from OmegaConf.to_object) into the frozen spec, recursively."""
    hints = typing.get_type_hints(spec_cls)
    kwargs = {}
    for f in dataclasses.fields(spec_cls):
        value = getattr(obj, f.name)
        tp = hints[f.name]
        if typing.get_origin(tp) is Union:
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = inner[0] if len(inner) == 1 else tp
        if value is not None and _is_spec(tp):
            value = freeze(value, tp)
        kwargs[f.name] = value
    return spec_cls(**kwargs)


@dataclass
class RulesConfig:
    """The rule set: conf/rules/*.yaml plus the user's files, minus disabled ids."""

    extra: List[str] = field(default_factory=list)  # paths of the user's own rule files
    disable: List[str] = field(default_factory=list)  # rule ids to switch off


@dataclass
class AppConfig:
    """The root of the composed config: the request groups plus the command's own options."""

    model: Any = MISSING
    hw: Any = MISSING
    target: Any = MISSING
    workload: Any = MISSING
    precision: Any = MISSING
    backend: Any = MISSING
    plan: Any = MISSING
    action: specs.Action = specs.Action.plan
    format: specs.Format = specs.Format.table
    out: Optional[str] = None  # plan file to write; default plans/<model>-<hw>-<target>.yaml
    save: bool = True  # write the plan file
    plan_file: Optional[str] = None  # `plan=FILE` on the command line: re-print a saved plan
    endpoint: Optional[str] = None  # action=verify against a running server
    log: Optional[str] = None  # action=diagnose
    debug: bool = False  # show tracebacks of internal errors
    port: Optional[int] = None  # launch/verify: the local server's port (default: a free one)
    num_prompts: Optional[int] = None  # launch/verify: measured requests (default: workload.num_prompts)
    ready_timeout_s: float = 900.0  # launch/verify: how long the server may take to become ready
    sweep: bool = False  # verify endpoint=URL: also sweep the request rate for the highest goodput under the SLO
    force: bool = False  # launch/verify: launch the closest plan even when the prediction says it misses the target
    # render/launch/verify: the NAME of the environment variable that holds the server's API key (never the key):
    # rendered as `--api-key ${NAME}` (k8s: from a Secret), sent as `Authorization: Bearer $NAME` by verify
    api_key_env: Optional[str] = None
    # action=render: also write the files of a cluster stack (or all) under plans/<name>/deploy/<target>/
    deploy: Optional[specs.DeployTarget] = None
    rules: RulesConfig = field(default_factory=RulesConfig)


_GROUPS = {
    "model": specs.ModelSpec,
    "hw": specs.HwSpec,
    "target": specs.TargetSpec,
    "workload": specs.WorkloadSpec,
    "precision": specs.PrecisionSpec,
    "backend": specs.BackendSpec,
    "plan": specs.Pins,
}


def _root_schema() -> type:
    fields = []
    for f in dataclasses.fields(AppConfig):
        if f.name in _GROUPS:
            tp = twin(_GROUPS[f.name])
            default = field(default_factory=tp) if f.name in ("plan", "backend") else field(default=MISSING)
            fields.append((f.name, tp, default))
        elif f.default_factory is not dataclasses.MISSING:
            fields.append((f.name, f.type, field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type, field(default=f.default)))
    return dataclasses.make_dataclass("PlannerConfig", fields)


def register_configs() -> None:
    """Store the root schema as `planner_schema`; conf/config.yaml lists it first in its defaults."""
    ConfigStore.instance().store(name="planner_schema", node=_root_schema())


def to_request(cfg: Any) -> specs.Request:
    """Build the frozen Request from a composed, validated config."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    parts = {name: freeze(getattr(obj, name), cls) for name, cls in _GROUPS.items()}
    parts["pins"] = parts.pop("plan")
    return specs.Request(**parts)

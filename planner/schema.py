"""Hydra structured-config schema, derived from the frozen specs so YAML, validation and code share one truth.

OmegaConf makes a frozen dataclass read-only (overrides would fail), so each spec gets a generated mutable twin
that Hydra validates against; `freeze` turns a validated twin back into the frozen spec.
"""

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, List, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from planner import specs
from planner.bounds import NOT_BLANK, bounded, not_blank, option, positive, positive_int

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
        elif isinstance(value, list) and typing.get_origin(tp) is tuple:
            value = tuple(value)  # OmegaConf gives a Tuple field back as a list; frozen specs stay hashable
        kwargs[f.name] = value
    return spec_cls(**kwargs)


@dataclass
class RulesConfig:
    """The rule set: conf/rules/*.yaml plus the user's files, minus disabled ids."""

    extra: List[str] = option(dataclasses.MISSING, "your own rule files (YAML, like conf/rules/)", "[FILE,...]",
                              default_factory=list)
    disable: List[str] = option(dataclasses.MISSING, "rule ids to switch off (action=rules lists them)", "[ID,...]",
                                default_factory=list)


@dataclass
class AppConfig:
    """The root of the composed config: the request groups plus the command's own options. Each option carries its
    bound (compose.check_options refuses a value out of it before anything runs) and its line in `--help`."""

    model: Any = MISSING
    hw: Any = MISSING
    target: Any = MISSING
    workload: Any = MISSING
    precision: Any = MISSING
    backend: Any = MISSING
    plan: Any = MISSING
    action: specs.Action = option(specs.Action.plan, "what to do (Actions, below)")
    format: specs.Format = option(specs.Format.table, "tables, or one JSON or YAML document on stdout")
    out: Optional[str] = not_blank("a file path; leave out= off for plans/<model>-<hw>-<target>.yaml", None,
                                   doc="where the plan is written (default: under plans/)",
                                   metavar="FILE")
    save: bool = option(True, "print the plan, write no file")
    plan_file: Optional[str] = bounded("the path of a saved plan file", None, flag="plan", pattern=NOT_BLANK,
                                       doc="a saved plan: show, render, launch or verify it as is",
                                       metavar="FILE")
    endpoint: Optional[str] = bounded("the http:// or https:// URL of a running server, e.g. http://127.0.0.1:8000",
                                      None, pattern=r"https?://(\[[0-9A-Fa-f:.]+\]|[^\s/?#:\[\]]+)(:\d{1,5})?(/\S*)?",
                                      metavar="URL",
                                      doc="verify plan=FILE: load-test this running server")
    log: Optional[str] = not_blank("the path of a server log or of nccl-tests output", None,
                                   doc="the server log action=diagnose reads; nccl-tests output for preflight",
                                   metavar="FILE")
    debug: bool = option(False, "show the traceback of an internal error")
    port: Optional[int] = bounded("a TCP port from 1 to 65535, or left out for a free one", None, ge=1, le=65535,
                                  doc="launch/verify: server port (default: a free one)", metavar="N")
    num_prompts: Optional[int] = positive_int(None, "at least 1 measured request, or left out for the workload's "
                                                    "num_prompts", metavar="N",
                                              doc="launch/verify: requests to send (default: workload's)")
    ready_timeout_s: float = positive(900.0, "a positive number of seconds", metavar="900",
                                      doc="launch/verify: seconds the server may take to start")
    sweep: bool = option(False, "verify endpoint=URL: also sweep the request rate")
    force: bool = option(False, "launch even a plan predicted to miss its target")
    api_key_env: Optional[str] = bounded("the NAME of an environment variable (letters, digits and _, not starting "
                                         "with a digit), e.g. VLLM_API_KEY", None, pattern=r"[A-Za-z_][A-Za-z0-9_]*",
                                         doc="name of the variable holding the server's API key", metavar="NAME")
    deploy: Optional[specs.DeployTarget] = option(None, "render: also the files of a cluster stack, or all")
    profile: Optional[specs.Profiler] = option(None, "render/launch/verify: run the server under nsys (vLLM, GPU)")
    quality: bool = option(False, "launch/verify: also score accuracy with lm-eval (quantized: vs the baseline)")
    quality_task: Optional[str] = not_blank("an lm-eval task name or a task YAML file, or left out for the shipped "
                                            "offline task", None, metavar="TASK",
                                            doc="quality=true: the lm-eval task (default: shipped, offline)")
    quality_baseline: Optional[str] = not_blank("the path of a quality.json an earlier quality=true run wrote", None,
                                                metavar="FILE",
                                                doc="quality=true: a stored baseline instead of running one")
    rules: RulesConfig = option(dataclasses.MISSING, "the rule set", default_factory=RulesConfig)


_GROUPS = {
    "model": specs.ModelSpec,
    "hw": specs.HwSpec,
    "target": specs.TargetSpec,
    "workload": specs.WorkloadSpec,
    "precision": specs.PrecisionSpec,
    "backend": specs.BackendSpec,
    "plan": specs.Pins,
}


@functools.cache
def root_schema() -> type:
    """The root schema Hydra validates against: AppConfig with each group typed by its spec's mutable twin."""
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
    ConfigStore.instance().store(name="planner_schema", node=root_schema())


def to_request(cfg: Any) -> specs.Request:
    """Build the frozen Request from a composed, validated config."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    parts = {name: freeze(getattr(obj, name), cls) for name, cls in _GROUPS.items()}
    parts["pins"] = parts.pop("plan")
    return specs.Request(**parts)

"""Compose the Hydra config from command-line overrides, and turn Hydra's errors into our one-paragraph errors.

The single-run path uses Hydra's compose API (fast, and its exceptions can be caught and explained); multirun
goes through @hydra.main in planner.app, which then calls `request_from_cfg` here for each job.
"""

import logging
from collections.abc import Iterator, Mapping
from typing import Any, Optional

from planner import discover, schema
from planner.errors import InputError, did_you_mean

log = logging.getLogger(__name__)

CONFIG_MODULE = "conf"
GROUPS = ("model", "hw", "target", "workload", "precision", "backend")


def split_plan_file(overrides: list[str]) -> list[str]:
    """`plan=FILE` (a saved plan) shares its key with the `plan.<field>` pins: rewrite it to `plan_file=FILE`."""
    return [f"plan_file={o[5:]}" if o.startswith("plan=") else o for o in overrides]


class Composer:
    """Holds an initialized Hydra (config module `conf`) and composes configs from overrides."""

    def __init__(self) -> None:
        from hydra import initialize_config_module
        from hydra.core.global_hydra import GlobalHydra

        schema.register_configs()
        self._options: dict[str, list[str]] = {}
        if not GlobalHydra.instance().is_initialized():
            self._ctx = initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3")
            self._ctx.__enter__()
        else:
            self._ctx = None

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def __enter__(self) -> "Composer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def options(self, group: str) -> list[str]:
        """The options of a config group (conf/<group>/ and the ConfigStore), listed once per Composer."""
        from hydra.core.global_hydra import GlobalHydra

        if group not in self._options:
            self._options[group] = sorted(GlobalHydra.instance().config_loader().get_group_options(group))
        return self._options[group]

    def compose(self, overrides: list[str]) -> Any:
        """The composed DictConfig, or InputError listing every bad override at once."""
        from hydra import compose

        bad = self.problems(overrides)
        if not bad:
            try:
                return compose(config_name="config", overrides=overrides)
            except Exception as exc:  # Hydra/OmegaConf raise many types; each becomes a paragraph below
                first = exc
        problems = list(bad.values())
        # Find every bad override, not just the first: try each value override on its own, over the group
        # choices when those are valid (a field can exist in one model's config and not in another's).
        groups = [o for o in overrides if o.split("=", 1)[0] in GROUPS]
        base = [] if any(o in bad for o in groups) else groups
        for override in overrides:
            if override in bad or override.split("=", 1)[0] in GROUPS:
                continue
            try:
                compose(config_name="config", overrides=base + [override])
            except Exception as exc:
                problems.append(explain_hydra_error(exc, override))
        raise InputError(*(problems or [explain_hydra_error(first, None)]))

    def problems(self, overrides: list[str]) -> dict[str, str]:
        """override -> its paragraph, for group choices not in conf/ and keys not in the schema (planner/overrides.py),
        found before Hydra composes anything."""
        from planner import overrides as keys

        found = self._check_choices(overrides)
        options = _GroupOptions(self)  # listed only for an override that needs them (`~group`)
        for override in overrides:
            if override not in found:
                found.update({override: p for p in keys.problems([override], options)})
        return found

    def _check_choices(self, overrides: list[str]) -> dict[str, str]:
        problems = {}
        for override in overrides:
            key, _, value = override.partition("=")
            group = key.lstrip("+~")
            if group in GROUPS and value and "," not in value:
                valid = self.options(group)
                if value not in valid:
                    problems[override] = (
                        f"{group}={value}: no such {group} in the catalog (conf/{group}/).{did_you_mean(value, valid)} "
                        f"Valid: {', '.join(valid)}. Fix: pick one of these, or add conf/{group}/{value}.yaml."
                    )
        return problems


class _GroupOptions(Mapping):
    """GROUPS -> their options, each listed (a directory scan) only when asked for."""

    def __init__(self, composer: Composer) -> None:
        self.composer = composer

    def __getitem__(self, group: str) -> list[str]:
        if group not in GROUPS:
            raise KeyError(group)
        return self.composer.options(group)

    def __contains__(self, group: object) -> bool:
        return group in GROUPS

    def __iter__(self) -> Iterator[str]:
        return iter(GROUPS)

    def __len__(self) -> int:
        return len(GROUPS)


def check_options(cfg: Any) -> None:
    """InputError for every command option out of its bound (schema.AppConfig), before anything is launched."""
    import dataclasses

    from planner import bounds

    names = [f.name for f in dataclasses.fields(schema.AppConfig) if f.name not in GROUPS + ("plan", "rules")]
    found = bounds.problems(schema.AppConfig(**{name: cfg[name] for name in names}))
    if found:
        raise InputError(*found)


def explain_hydra_error(exc: BaseException, override: Optional[str]) -> str:
    """One paragraph for a Hydra/OmegaConf composition error: field=value, what is wrong, Fix."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    where = f"{override}: " if override else ""
    if isinstance(cause, ConfigKeyError) or "Could not override" in str(exc) or "Key '" in str(exc):
        from planner.overrides import field_at

        key = override.split("=", 1)[0].lstrip("+~") if override else getattr(cause, "full_key", "?")
        _, problem = field_at(key)
        return f"{where}{problem or repr(key) + ' is not a field of this config.'}" + (
            "" if problem else " Fix: check the spelling; `python -m planner --cfg job` prints every field.")
    if "Could not append to config" in str(exc) and override:
        key = override.split("=", 1)[0].lstrip("+")
        return (f"{where}{key} already has a value, and `+` (Hydra's append) only sets a field that has none. Fix: "
                f"{override.lstrip('+')} (without the +) sets it.")
    if isinstance(cause, ValidationError):
        key = getattr(cause, "full_key", None) or (override or "?").split("=", 1)[0]
        value = getattr(cause, "value", None)
        return (
            f"{where}{key}={value!r} has the wrong type or value: {cause.msg.splitlines()[0]}. "
            f"Fix: give {key} a value of the type its field declares (planner/specs.py), e.g. a number without "
            "units, true/false, or one of the listed choices."
        )
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{where}{msg}. Fix: check the override's syntax (key=value, group=option); see README's config groups."


def resolve(composer: Composer, overrides: list[str], cfg: Any = None) -> tuple[Any, Optional[str]]:
    """Compose, then fill what the config asks to be found: a local HF model's architecture (model=hf) and this
    machine's hardware (hw=auto, hw=cpu). Returns the final config and what discovery found, if anything."""
    from omegaconf import OmegaConf

    from planner import catalog

    cfg = cfg if cfg is not None else composer.compose(overrides)
    if cfg.model.name == "hf" and not cfg.plan_file:
        if OmegaConf.is_missing(cfg.model, "path") or not (cfg.model.path or "").strip():
            raise InputError("model=hf needs model.path=DIR, a local Hugging Face model directory with "
                             "config.json. Fix: add model.path=/path/to/model.")
        overrides = catalog.model_overrides(cfg.model.path) + overrides
        cfg = composer.compose(overrides)
    return resolve_hardware(composer, cfg, overrides)


def resolve_hardware(composer: Composer, cfg: Any, overrides: list[str]) -> tuple[Any, Optional[str]]:
    """Recompose with the discovered machine when the hw preset asks for discovery (hw=auto, hw=cpu)."""
    if not cfg.hw.discover:
        return cfg, None
    found = discover.local_overrides(want_gpu=cfg.hw.name == "auto")
    # The user's own overrides come last so they still win over what was discovered.
    return composer.compose(list(found.overrides) + overrides), found.summary


def to_request(cfg: Any):
    """The frozen Request, or InputError naming what is missing or invalid in the composed config."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    from planner import validate

    try:
        req = schema.to_request(cfg)
    except MissingMandatoryValue as exc:
        key = exc.full_key
        raise InputError(
            f"{key} is required but has no value (???). Fix: set it on the command line ({key}=...) or in the "
            f"config file of its group (conf/{key.split('.')[0]}/)."
        ) from None
    except (OmegaConfBaseException, TypeError, ValueError) as exc:
        raise InputError(f"The composed config is invalid: {exc}. Fix: check the values you overrode.") from None
    return validate.check(req)

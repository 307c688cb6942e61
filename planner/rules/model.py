"""What a rule is: identity, condition, effects, reason, source, examples; parsed from conf/rules/*.yaml.

A rule file is a YAML list of rules. Plan rules constrain the search (`then`); troubleshooting rules map a
symptom in a server log (`match`: regular expressions) or a verification result (`symptom`) to remedies.
"""

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from planner.errors import InputError

# Effects a plan rule may have, and the plan fields each may name (the search reads exactly these).
CHOICE_FIELDS = ("backend", "dtype", "quantization", "kv_cache_dtype")  # allow / exclude / prefer
SET_FIELDS = ("max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization", "enable_prefix_caching",
              "enable_chunked_prefill", "stream_interval", "speculative", "expert_parallel", "parallelism",
              "max_tensor_parallel")
PARALLELISM = ("narrow", "wide")  # narrow: the fewest GPUs per replica that fit; wide: all of a node's GPUs


@dataclass(frozen=True)
class Effects:
    allow: dict = field(default_factory=dict)  # field → allowed values (others are excluded)
    exclude: dict = field(default_factory=dict)  # field → excluded values
    prefer: dict = field(default_factory=dict)  # field → values in order of preference
    set: dict = field(default_factory=dict)  # field → value, or "=expression" over the context
    warn: Optional[str] = None  # a note for the user when the rule fires


@dataclass(frozen=True)
class Relaunch:
    """What launch pins before starting again, as expressions over the failed plan (`plan.<field>`, rule-engine
    syntax); `when` says on which plans it applies. An expression that yields null leaves its field free."""

    pins: dict  # plan field -> expression
    when: str = "true"


@dataclass(frozen=True)
class Remedy:
    """One fix a troubleshooting rule proposes: plan overrides to try and what they do."""

    overrides: tuple[str, ...]
    says: str
    relaunch: Optional[Relaunch] = None  # set when launch can apply it by itself


@dataclass(frozen=True)
class Rule:
    id: str
    why: str
    source: str
    kind: str = "plan"  # plan | troubleshoot
    when: str = "true"  # rule-engine expression over the request context
    priority: int = 50  # higher wins when two rules set the same field
    then: Effects = field(default_factory=Effects)
    match: tuple[str, ...] = ()  # troubleshoot: regexes over the server log (any matches)
    symptom: Optional[str] = None  # troubleshoot: a named symptom (from verification) instead of a log line
    remedies: tuple[Remedy, ...] = ()
    examples: dict = field(default_factory=dict)  # {fires: [[overrides]], silent: [[overrides]]} or log lines
    decides: tuple[str, ...] = ()  # plan fields a rule without effects explains (it shows in their decisions)
    origin: str = ""  # the file it came from
    fatal: bool = False  # troubleshoot: the engine does not recover from this line (launch stops waiting at once)


_ID = re.compile(r"^[a-z0-9]+(\.[a-z0-9][a-z0-9-]*)+$")
_KEYS = {"id", "why", "source", "kind", "when", "priority", "then", "match", "symptom", "remedies", "examples",
         "decides", "fatal"}


def parse(raw: Any, origin: str) -> Rule:
    """One rule from its YAML mapping, or InputError naming the rule and what is wrong."""
    if not isinstance(raw, dict):
        raise InputError(f"{origin}: a rule must be a mapping with id, when, then, why, source; got {raw!r}. "
                         "Fix: see conf/rules/README in the docs (docs/rules.md).")
    rid = str(raw.get("id", "?"))
    problems = []
    if not _ID.match(rid):
        problems.append(f"id {rid!r} must look like 'group.name-with-dashes'")
    unknown = set(raw) - _KEYS
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    for key in ("why", "source"):
        if not str(raw.get(key, "")).strip():
            problems.append(f"'{key}' is required and must not be empty")
    kind = raw.get("kind", "plan")
    if kind not in ("plan", "troubleshoot"):
        problems.append(f"kind {kind!r} must be plan or troubleshoot")
    then = raw.get("then") or {}
    effects = Effects()
    if not isinstance(then, dict):
        problems.append("'then' must be a mapping of effects")
    else:
        bad = set(then) - {"allow", "exclude", "prefer", "set", "warn"}
        if bad:
            problems.append(f"unknown effects {sorted(bad)} (allowed: allow, exclude, prefer, set, warn)")
        for effect in ("allow", "exclude", "prefer"):
            for f, values in (then.get(effect) or {}).items():
                if f not in CHOICE_FIELDS:
                    problems.append(f"then.{effect}.{f}: not a choice field (one of {', '.join(CHOICE_FIELDS)})")
                elif not isinstance(values, list):
                    problems.append(f"then.{effect}.{f} must be a list")
        for f in (then.get("set") or {}):
            if f not in SET_FIELDS:
                problems.append(f"then.set.{f}: not a field rules may set (one of {', '.join(SET_FIELDS)})")
        if (then.get("set") or {}).get("parallelism", "narrow") not in PARALLELISM:
            problems.append(f"then.set.parallelism must be one of {PARALLELISM}")
        effects = Effects(allow=dict(then.get("allow") or {}), exclude=dict(then.get("exclude") or {}),
                          prefer=dict(then.get("prefer") or {}), set=dict(then.get("set") or {}),
                          warn=then.get("warn"))
    patterns = tuple(raw.get("match") or ())
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            problems.append(f"match pattern {p!r} is not a valid regular expression ({exc})")
    if kind == "troubleshoot" and not patterns and not raw.get("symptom"):
        problems.append("a troubleshoot rule needs 'match' (log regexes) or 'symptom'")
    remedies = _remedies(raw.get("remedies") or (), problems)
    if problems:
        raise InputError(f"rule {rid} ({origin}): " + "; ".join(problems) + ". Fix: correct the rule file.")
    return Rule(id=rid, why=" ".join(str(raw["why"]).split()), source=str(raw["source"]), kind=kind,
                when=str(raw.get("when", "true")), priority=int(raw.get("priority", 50)), then=effects,
                match=patterns, symptom=raw.get("symptom"), remedies=tuple(remedies),
                examples=dict(raw.get("examples") or {}), decides=tuple(raw.get("decides") or ()), origin=origin,
                fatal=bool(raw.get("fatal", False)))


def _remedies(raw: Any, problems: list[str]) -> list[Remedy]:
    """A troubleshooting rule's remedies; what is wrong with them is appended to `problems`."""
    remedies = []
    for r in raw:
        if not isinstance(r, dict) or "says" not in r:
            problems.append("each remedy needs 'says' (and optional 'overrides': [key=value, ...])")
            continue
        relaunch, problem = _relaunch(r.get("relaunch"))
        if problem:
            problems.append(problem)
        remedies.append(Remedy(overrides=tuple(r.get("overrides") or ()), says=str(r["says"]), relaunch=relaunch))
    return remedies


def _relaunch(raw: Any) -> tuple[Optional[Relaunch], str]:
    """A remedy's `relaunch:` block, its expressions checked by rule-engine's parser (a typo fails when rules load)."""
    if raw is None:
        return None, ""
    import rule_engine

    if not isinstance(raw, dict) or not isinstance(raw.get("pins"), dict) or not raw["pins"]:
        return None, "relaunch needs 'pins': {plan field: expression} (and optional 'when')"
    try:
        for text in [str(raw.get("when", "true"))] + [str(e) for e in raw["pins"].values()]:
            rule_engine.Rule(text)
    except rule_engine.errors.EngineError as exc:
        return None, f"relaunch expression {text!r} does not parse ({exc.message})"
    return Relaunch(pins={str(k): str(v) for k, v in raw["pins"].items()}, when=str(raw.get("when", "true"))), ""

"""Load, check and apply the rules: which fire for a request, and the constraints they put on the search.

Conditions are evaluated by the `rule-engine` library (PyPI): a small, safe, typed expression language with
`and`/`or`/`not`, comparisons, `in` over lists, arithmetic and attribute access on mappings (`gpu.memory_gib`),
compiled once when the rules load and never passed to `eval`. It was chosen over simpleeval (no compile-time
symbol checking, attribute access on live Python objects) and cel-python (heavier, and its protobuf-style types
buy nothing here); each namespace is a typed OBJECT whose attributes are the spec dataclasses' fields, so a rule that reads a field
that does not exist fails when it loads (in CI), not in a user's plan.

Application is deterministic: rules run in priority order (higher first, then file order). `allow`/`exclude`
narrow a field's choices (all rules apply); for `prefer` and `set` the highest-priority rule wins and the others are
recorded as overridden; a user's pin beats every rule.
"""

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from planner.fastyaml import FAST_LOADER

from planner.errors import InputError, did_you_mean
from planner.rules import context
from planner.rules.parser_tables import import_rule_engine
from planner.rules.model import CHOICE_FIELDS, Rule, parse
from planner.specs import Quantization, Request

rule_engine = import_rule_engine()

# Every value a choice field can take, in the default order of preference.
DOMAINS = {
    "backend": ("vllm", "sglang", "trtllm", "tgi", "triton-vllm", "triton-trtllm", "mii"),
    "dtype": ("bf16", "fp16", "float32"),
    "quantization": tuple(q.value for q in Quantization),
    "kv_cache_dtype": ("auto", "fp8"),  # auto: the compute dtype
}
# rule fields → plan fields they decide (for the pin check and decisions)
_PIN_OF = {"max_num_seqs": "max_num_seqs", "max_num_batched_tokens": "max_num_batched_tokens",
           "gpu_memory_utilization": "gpu_memory_utilization", "enable_prefix_caching": "enable_prefix_caching",
           "enable_chunked_prefill": "enable_chunked_prefill", "stream_interval": "stream_interval",
           "backend": "backend", "dtype": "dtype",
           "quantization": "quantization", "kv_cache_dtype": "kv_cache_dtype"}


@dataclass(frozen=True)
class Compiled:
    rule: Rule
    condition: rule_engine.Rule
    expressions: dict  # set-field → compiled rule_engine.Rule for "=expr" values


@dataclass(frozen=True)
class Fired:
    """A value a rule decided, with the rule."""

    value: Any
    rule: Rule


@dataclass(frozen=True)
class TraceEntry:
    rule: Rule
    fired: bool
    detail: str  # what it did, or why not


@dataclass(frozen=True)
class Constraints:
    """What the rules allow and prefer; the search reads this and nothing else from the rules."""

    choices: dict  # choice field → tuple of allowed values, most preferred first
    choice_rules: dict  # choice field → tuple of rules that shaped it (allow/exclude/prefer), in order
    settings: dict  # set-field → Fired
    notes: tuple  # (rule, text) warnings
    trace: tuple  # TraceEntry for every plan rule, fired or not

    def setting(self, name: str, default: Any = None) -> Any:
        fired = self.settings.get(name)
        return default if fired is None else fired.value

    def fired_ids(self) -> list[str]:
        return [t.rule.id for t in self.trace if t.fired]


@functools.lru_cache(maxsize=1)
def _context() -> rule_engine.Context:
    """A typed rule-engine context: each namespace is an OBJECT whose attributes are the spec's fields, so an
    unknown field fails when the rule compiles (with rule-engine's own suggestion)."""
    from rule_engine import DataType

    def get(value: dict, name: str) -> Any:
        return value[name]

    types = {ns: DataType.OBJECT(ns, attributes={f: DataType.UNDEFINED for f in sorted(names)}, accessor=get)
             for ns, names in context.fields().items()}
    return rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(types))


def _compile_expr(text: str, rid: str, where: str) -> rule_engine.Rule:
    names = context.fields()
    try:
        return rule_engine.Rule(text, context=_context())
    except rule_engine.errors.SymbolResolutionError as exc:
        raise InputError(f"rule {rid}: {where} names '{exc.symbol_name}', which is not a namespace "
                         f"({', '.join(sorted(names))}).{did_you_mean(exc.symbol_name, names)} Fix: correct the "
                         "rule.") from None
    except rule_engine.errors.ObjectAttributeError as exc:
        ns = exc.object.name
        raise InputError(f"rule {rid}: {where} reads {ns}.{exc.attribute_name}, which is not a field of {ns}."
                         f"{did_you_mean(exc.attribute_name, names[ns])} Fix: use one of "
                         f"{', '.join(sorted(names[ns]))}.") from None
    except rule_engine.errors.EngineError as exc:
        raise InputError(f"rule {rid}: {where} {text!r} does not parse ({exc}). Fix: write it in rule-engine "
                         "syntax, e.g. `gpu.compute_capability >= 8.9 and precision.weights == 'auto'`.") from None


def compile_rule(rule: Rule) -> Compiled:
    condition = _compile_expr(rule.when, rule.id, "when")
    exprs = {k: _compile_expr(v[1:], rule.id, f"then.set.{k}")
             for k, v in rule.then.set.items() if isinstance(v, str) and v.startswith("=")}
    for k, v in rule.then.set.items():  # "=expr" inside a mapping value (e.g. the speculative config)
        if isinstance(v, dict):
            exprs.update({f"{k}.{sub}": _compile_expr(x[1:], rule.id, f"then.set.{k}.{sub}")
                          for sub, x in v.items() if isinstance(x, str) and x.startswith("=")})
    for f, values in {**rule.then.allow, **rule.then.exclude, **rule.then.prefer}.items():
        for v in values:
            if isinstance(v, str) and v.startswith("="):
                exprs[f"{f}:{v}"] = _compile_expr(v[1:], rule.id, f"then.*.{f}")
        bad = [v for v in values if v not in DOMAINS[f] and not str(v).startswith("=")]
        if bad:
            raise InputError(f"rule {rule.id}: {f} values {bad} are not among {', '.join(DOMAINS[f])}. "
                             "Fix: correct the rule.")
    return Compiled(rule, condition, exprs)


def _load_file(text: str, origin: str) -> list[Rule]:
    try:
        raw = yaml.load(text, Loader=FAST_LOADER) or []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(f"{origin}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc}). Fix: correct the "
                         "file (quote values that contain ': ').") from None
    if not isinstance(raw, list):
        raise InputError(f"{origin}: a rule file is a YAML list of rules. Fix: start each rule with '- id: ...'.")
    return [parse(r, origin) for r in raw]


@functools.lru_cache(maxsize=8)
def load(extra: tuple[str, ...] = (), disable: tuple[str, ...] = ()) -> tuple[Compiled, ...]:
    """Every rule: conf/rules/*.yaml, then the user's files (`rules.extra`); minus `rules.disable`."""
    rules: list[Rule] = []
    folder = resources.files("conf").joinpath("rules")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            rules += _load_file(entry.read_text(), f"conf/rules/{entry.name}")
    for path in extra:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"rules.extra={path}: no such file. Fix: give the path of a YAML rule file.")
        rules += _load_file(p.read_text(), str(p))
    seen: dict[str, Rule] = {}
    for r in rules:
        if r.id in seen and r.origin == seen[r.id].origin:
            raise InputError(f"rule {r.id} is defined twice in {r.origin}. Fix: ids are unique; rename one.")
        seen[r.id] = r  # a user's file may redefine a built-in rule: the later definition wins
    unknown = [d for d in disable if d not in seen]
    if unknown:
        raise InputError(f"rules.disable={list(disable)}: no rule {', '.join(unknown)}.{did_you_mean(unknown[0], seen)} "
                         "Fix: `python -m planner action=rules` lists every rule id.")
    return tuple(compile_rule(r) for r in seen.values() if r.id not in disable)


def _value(c: Compiled, key: str, raw: Any, ctx: dict) -> Any:
    if isinstance(raw, dict):
        return {sub: _value(c, f"{key}.{sub}", x, ctx) for sub, x in raw.items()}
    return c.expressions[key].evaluate(ctx) if key in c.expressions else raw


def _values(c: Compiled, f: str, values: list, ctx: dict) -> list:
    """A choice list with its "=expression" items evaluated."""
    return [c.expressions[f"{f}:{v}"].evaluate(ctx) if f"{f}:{v}" in c.expressions else v for v in values]


def _fires(c: Compiled, ctx: dict) -> bool:
    try:
        return bool(c.condition.matches(ctx))
    except rule_engine.errors.EngineError as exc:
        raise InputError(f"rule {c.rule.id}: its condition failed on this request ({exc}). Fix: guard nullable "
                         "fields (`pins.x != null and pins.x > 1`) or correct the rule.") from None


def evaluate(req: Request, rules: Iterable[Compiled]) -> Constraints:
    """Apply the plan rules to `req`."""
    ctx = context.build(req)
    pins = req.pins.given()
    ordered = sorted((c for c in rules if c.rule.kind == "plan"), key=lambda c: -c.rule.priority)
    choices = {f: list(DOMAINS[f]) for f in CHOICE_FIELDS}
    preferred: dict[str, Fired] = {}
    shaped: dict[str, list] = {f: [] for f in CHOICE_FIELDS}
    settings: dict[str, Fired] = {}
    notes, trace = [], []
    for c in ordered:
        r = c.rule
        if not _fires(c, ctx):
            trace.append(TraceEntry(r, False, f"condition false: {r.when}"))
            continue
        did = []
        for f, values in r.then.allow.items():
            values = _values(c, f, values, ctx)
            choices[f] = [v for v in choices[f] if v in values]
            shaped[f].append(r)
            did.append(f"{f} only {values}")
        for f, values in r.then.exclude.items():
            values = _values(c, f, values, ctx)
            choices[f] = [v for v in choices[f] if v not in values]
            shaped[f].append(r)
            did.append(f"{f} not {values}")
        for f, values in r.then.prefer.items():
            values = _values(c, f, values, ctx)
            if f in preferred:
                did.append(f"prefer {f} {values}: overridden by {preferred[f].rule.id}")
            else:
                preferred[f] = Fired(tuple(values), r)
                shaped[f].append(r)
                did.append(f"prefer {f} {values}")
        for key, raw in r.then.set.items():
            value = _value(c, key, raw, ctx)
            if key in pins or _PIN_OF.get(key) in pins:
                did.append(f"{key}={value}: pinned by the user")
            elif key in settings:
                did.append(f"{key}={value}: overridden by {settings[key].rule.id}")
            else:
                settings[key] = Fired(value, r)
                did.append(f"{key}={value}")
        if r.then.warn:
            notes.append((r, r.then.warn))
            did.append("warns")
        trace.append(TraceEntry(r, True, "; ".join(did) or "fired"))
    for f, fired in preferred.items():
        first = [v for v in fired.value if v in choices[f]]
        choices[f] = first + [v for v in choices[f] if v not in first]
    return Constraints(choices={f: tuple(v) for f, v in choices.items()},
                       choice_rules={f: tuple(v) for f, v in shaped.items()}, settings=settings,
                       notes=tuple(notes), trace=tuple(trace))


def all_rules(extra: tuple[str, ...] = (), disable: tuple[str, ...] = ()) -> list[Rule]:
    return [c.rule for c in load(extra, disable)]


def constraints_for(req: Request, extra: tuple[str, ...] = (), disable: tuple[str, ...] = ()) -> Constraints:
    return evaluate(req, load(extra, disable))

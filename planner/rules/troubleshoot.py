"""Match a server log (or a verification symptom) against the troubleshooting rules and name the remedies."""

import re
from dataclasses import dataclass
from typing import Iterable, Optional

from planner.rules.engine import Compiled
from planner.rules.model import Remedy, Rule


@dataclass(frozen=True)
class Diagnosis:
    rule: Rule
    line_no: int  # 1-based line of the first match (0 for a named symptom)
    line: str  # that line, trimmed


def _patterns(rule: Rule) -> list:
    return [re.compile(p, re.IGNORECASE) for p in rule.match]


def diagnose(text: str, rules: Iterable[Compiled]) -> list[Diagnosis]:
    """Every troubleshooting rule whose pattern matches a line of `text`, most specific (highest priority)
    first, then by the line where it first matched."""
    found = []
    lines = text.splitlines()
    for c in rules:
        r = c.rule
        if r.kind != "troubleshoot" or not r.match:
            continue
        pats = _patterns(r)
        for i, line in enumerate(lines, start=1):
            if any(p.search(line) for p in pats):
                found.append(Diagnosis(r, i, line.strip()[:300]))
                break
    return sorted(found, key=lambda d: (-d.rule.priority, d.line_no))


def for_symptom(symptom: str, rules: Iterable[Compiled]) -> list[Rule]:
    """The troubleshooting rules for a named symptom from verification (e.g. slow-ttft)."""
    return [c.rule for c in rules if c.rule.kind == "troubleshoot" and c.rule.symptom == symptom]


def relaunch_pins(found: Iterable[Diagnosis], plan_fields: dict) -> Optional[tuple[Diagnosis, Remedy, dict]]:
    """The first remedy of the most specific diagnosis that launch can apply to this plan, with the pins it gives
    (`plan.<field>` evaluated over the failed plan's fields; floats to 2 places, nulls dropped), or None."""
    from types import SimpleNamespace

    import rule_engine

    thing = SimpleNamespace(plan=SimpleNamespace(**plan_fields))
    context = rule_engine.Context(resolver=rule_engine.resolve_attribute)
    for d in found:
        for remedy in d.rule.remedies:
            r = remedy.relaunch
            if r is None or not rule_engine.Rule(r.when, context=context).matches(thing):
                continue
            pins = {}
            for name, expr in r.pins.items():
                value = rule_engine.Rule(expr, context=context).evaluate(thing)
                if value is not None:  # rule-engine computes in Decimal
                    number = float(value)
                    pins[name] = int(number) if number.is_integer() else round(number, 2)
            if pins:
                return d, remedy, pins
    return None

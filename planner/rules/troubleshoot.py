"""Match a server log (or a verification symptom) against the troubleshooting rules and name the remedies."""

import re
from dataclasses import dataclass
from typing import Iterable

from planner.rules.engine import Compiled
from planner.rules.model import Rule


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

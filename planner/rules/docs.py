"""Generate docs/rules.md from the rule files, so the documented rules never drift from the data.

Run: python -m planner.rules.docs > docs/rules.md (tests/test_rules_docs.py checks the committed file).
"""

import sys

from planner.rules import engine
from planner.rules.context import DERIVED, fields


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _effects(rule) -> str:
    t = rule.then
    parts = [f"{k} only {v}" for k, v in t.allow.items()] + [f"{k} not {v}" for k, v in t.exclude.items()]
    parts += [f"prefer {k} {v}" for k, v in t.prefer.items()] + [f"{k} = {v}" for k, v in t.set.items()]
    parts += [f"warns: {t.warn}"] if t.warn else []
    parts += [f"explains {', '.join(rule.decides)}"] if rule.decides else []
    return "; ".join(parts)


def render() -> str:
    rules = engine.all_rules()
    plan = sorted((r for r in rules if r.kind == "plan"), key=lambda r: r.id)
    trouble = sorted((r for r in rules if r.kind == "troubleshoot"), key=lambda r: r.id)
    out = [
        "# Rules",
        "",
        "Generated from `conf/rules/*.yaml` by `python -m planner.rules.docs`; do not edit by hand.",
        "",
        "A plan rule fires when its `when` (a [rule-engine](https://pypi.org/project/rule-engine/) expression over",
        "the request) is true. `allow`/`exclude` narrow a choice (backend, dtype, quantization, KV dtype); `prefer`",
        "orders it; `set` gives a limit a value. Higher priority wins; a user's `plan.<field>=` pin beats every",
        "rule. Add your own with `rules.extra=[my_rules.yaml]`, switch one off with `rules.disable=[id]`;",
        "`python -m planner action=explain ...` shows every rule, fired or not, for one request.",
        "",
        f"## Plan rules ({len(plan)})",
        "",
        "| id | priority | when | then | why | source |",
        "|---|---|---|---|---|---|",
    ]
    out += [f"| `{r.id}` | {r.priority} | `{_cell(r.when)}` | {_cell(_effects(r))} | {_cell(r.why)} | "
            f"{_cell(r.source)} |" for r in plan]
    out += ["", f"## Troubleshooting rules ({len(trouble)})", "",
            "Matched against a server log by `action=diagnose log=FILE` (and by launch, to re-plan).", "",
            "| id | matches | remedies | why | source |", "|---|---|---|---|---|"]
    out += [f"| `{r.id}` | {_cell(' / '.join(f'`{m}`' for m in r.match) or f'symptom `{r.symptom}`')} | "
            f"{_cell('; '.join(x.says for x in r.remedies))} | {_cell(r.why)} | {_cell(r.source)} |" for r in trouble]
    out += ["", "## What a condition can read", ""]
    for ns, names in sorted(fields().items()):
        out.append(f"- `{ns}`: {', '.join(sorted(names))}")
    out += ["", "Derived values:", ""] + [f"- `derived.{k}`: {v}" for k, v in DERIVED.items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

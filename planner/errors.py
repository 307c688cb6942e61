"""The planner's errors, each carrying its exit code (DESIGN.md) and the data of its one-paragraph message.

    PlannerError (70: internal)
    ├── InputError (2): bad input (unknown config name, wrong type, invalid value); several at once
    ├── NoFeasiblePlan (3): nothing fits or meets the target; carries the closest plan
    ├── LaunchFailed (4): the server did not come up (log tail, diagnosis)
    └── TargetMissed (5): verification ran and the target was missed

Code below the app layer raises these; only planner.app prints them and exits.
"""

import difflib
from typing import Any, Iterable, Optional


class PlannerError(Exception):
    exit_code = 70


class InputError(PlannerError):
    """One or more problems with what the user gave; each problem is one paragraph."""

    exit_code = 2

    def __init__(self, *paragraphs: str):
        self.paragraphs = list(paragraphs)
        super().__init__("\n\n".join(paragraphs))


class NoFeasiblePlan(PlannerError):
    """No candidate fits (or meets the target). `closest` is the best plan document found, if any."""

    exit_code = 3

    def __init__(self, message: str, closest: Optional[Any] = None, fixes: tuple = (), request: Optional[Any] = None):
        self.closest = closest
        self.request = request  # the Request the closest plan was planned for (a sweep shows the two)
        self.fixes = fixes  # explain.Fix candidates the app checks by re-planning before it names them
        super().__init__(message)


class LaunchFailed(PlannerError):
    exit_code = 4


class TargetMissed(PlannerError):
    exit_code = 5


def did_you_mean(value: str, valid: Iterable[str]) -> str:
    """' Did you mean x?' for the closest valid names, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), sorted(valid), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(close) + "?"

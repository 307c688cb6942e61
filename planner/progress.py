"""Progress on stderr for a person (rich): a spinner while a server starts, a bar while a load test runs. Nothing is
drawn when stderr is not a terminal or a test runs us, so logs and pipes stay clean."""

import os
import sys
from typing import Optional


def wanted() -> bool:
    """Draw progress only for a person: stderr is a terminal and no test runs us."""
    return sys.stderr.isatty() and "PYTEST_CURRENT_TEST" not in os.environ


class Bar:
    """One rich Progress with one task on stderr (transient), or nothing when disabled."""

    def __init__(self, label: str, total: Optional[int], enabled: bool) -> None:
        self._bar = self._task = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)

            columns = ((SpinnerColumn(), TextColumn(label), TimeElapsedColumn(),
                        TextColumn("{task.description}", markup=False)) if total is None else
                       (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()))
            self._bar = Progress(*columns, console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task("", total=total)

    def __enter__(self) -> "Bar":
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar:
            self._bar.stop()

    def advance(self, *_args) -> None:
        """One more done (usable as an asyncio task's done callback)."""
        if self._bar:
            self._bar.advance(self._task)

    def describe(self, text: str) -> None:
        """Show `text` beside the spinner (e.g. the server's last log line)."""
        if self._bar:
            self._bar.update(self._task, description=text.strip()[:100])

    @property
    def shown(self) -> bool:
        return self._bar is not None

"""The jobs' progress bar (rich): problems done, rate, elapsed time and ETA; off with --no-progress."""

from __future__ import annotations

import os

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def progress_bar(enabled: bool) -> Progress:
    """A bar for a job's problems; disabled when ``enabled`` is False or ``TRACEMILL_NO_PROGRESS`` is set."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    disable=not enabled or bool(os.environ.get("TRACEMILL_NO_PROGRESS")))


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slower than one a second)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("-- it/s")
        return Text(f"{speed:.2f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it")

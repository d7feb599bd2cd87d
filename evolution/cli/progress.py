"""Progress bars for the CLI's long commands: on a terminal, one rich bar per stage on stderr; piped, nothing.

A command opens :func:`progress_meter` around its work and hands the meter to the services
(:mod:`evolution.progress`). It is ``None`` (no bars, and the services skip counting) when stderr is not a terminal
(piped, redirected, a dumb terminal) or the command prints ``--json``: what a script reads stays free of escape
codes. rich is imported only here, and only when bars are shown: importing the CLI stays light.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from evolution.progress import Advance, ProgressMeter, Unit

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, Task
    from rich.text import Text


def bars_wanted(as_json: bool = False) -> bool:
    """Bars go to stderr: only when it is a terminal a person watches, and never with ``--json``."""
    if as_json:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


@contextmanager
def progress_meter(as_json: bool = False, console: Console | None = None) -> Iterator[ProgressMeter | None]:
    """A meter drawing bars while the block runs (``console``: where to, default stderr), or ``None``."""
    if console is None and not bars_wanted(as_json):
        yield None
        return
    from rich.console import Console

    console = console or Console(stderr=True)
    if not console.is_terminal or console.is_dumb_terminal:
        yield None
        return
    bars = _progress(console)
    with bars:
        yield RichMeter(bars)


class RichMeter:
    """Each task a bar of its own; a finished task's bar stays, filled, as a record of what was done."""

    def __init__(self, bars: Progress) -> None:
        self._bars = bars

    def task(self, description: str, total: int, unit: Unit = "items") -> AbstractContextManager[Advance]:
        return self._task(description, total, unit)

    @contextmanager
    def _task(self, description: str, total: int, unit: Unit) -> Iterator[Advance]:
        # A task with nothing to do (gc with nothing to collect) is not drawn: an empty bar would only be noise.
        task_id = self._bars.add_task(description, total=max(total, 0), unit=unit, visible=total > 0)

        def advance(done: int) -> None:
            self._bars.advance(task_id, done)

        try:
            yield advance
        finally:
            self._bars.stop_task(task_id)


def _progress(console: Console) -> Progress:
    from rich.filesize import decimal
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Amount(ProgressColumn):
        """Done of total: bytes in kB/MB/GB, anything else as a count."""

        def render(self, task: Task) -> Text:
            total, done = int(task.total or 0), int(task.completed)
            if task.fields.get("unit") == "bytes":
                return Text(f"{decimal(done)} / {decimal(total)}", style="progress.download")
            return Text(f"{done:,} / {total:,}", style="progress.download")

    # Lines a command prints while bars are drawn go above them when both reach the terminal; printed into a
    # pipe while the bars are on a terminal, they are left alone.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        Amount(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    )

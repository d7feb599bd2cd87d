"""How long work reports how far it has got, without knowing who shows it.

Work that can take long on a large input (ingesting a file, sealing a window, backing up, restoring, verifying a
store, collecting garbage, comparing drift on big files) takes an optional :class:`ProgressMeter`. It opens one task
per stage with the stage's total and advances it as the work is done, so that the advances of a finished task add
up to its total. The CLI passes a progress bar on a terminal (evolution/cli/progress.py); every other caller passes
nothing, and then the work does nothing extra (not even the count a total would need).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Literal, Protocol

Advance = Callable[[int], None]
"""Adds this many units of the task's total as done."""
Unit = Literal["bytes", "items"]


class ProgressMeter(Protocol):
    def task(self, description: str, total: int, unit: Unit = "items") -> AbstractContextManager[Advance]:
        """One stage of the work, ``total`` units long; the context's value advances it."""
        ...


def _ignore(_done: int) -> None:
    pass


@contextmanager
def metered(
    meter: ProgressMeter | None, description: str, total: int, unit: Unit = "items"
) -> Iterator[Advance]:
    """``meter``'s task, or (no meter) an advance that does nothing."""
    if meter is None:
        yield _ignore
        return
    with meter.task(description, total, unit) as advance:
        yield advance


class MeteredFile(io.FileIO):
    """A file read from disk that advances a task by the bytes it reads (wrap it in a buffered reader)."""

    def __init__(self, path: Path, advance: Advance) -> None:
        super().__init__(path, "r")
        self._advance = advance

    def readinto(self, buffer: memoryview | bytearray) -> int | None:  # type: ignore[override]
        count = super().readinto(buffer)
        if count:
            self._advance(count)
        return count

    def readall(self) -> bytes:
        data = super().readall()
        if data:
            self._advance(len(data))
        return data

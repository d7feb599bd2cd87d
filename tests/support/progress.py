"""A progress meter that records what long work reports: each task's description, total and the sum of its advances."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from evolution.progress import Advance, Unit


@dataclass
class RecordedTask:
    description: str
    total: int
    unit: Unit
    done: int = 0
    finished: bool = False


@dataclass
class RecordingMeter:
    tasks: list[RecordedTask] = field(default_factory=list)

    @contextmanager
    def task(self, description: str, total: int, unit: Unit = "items") -> Iterator[Advance]:
        recorded = RecordedTask(description, total, unit)
        self.tasks.append(recorded)

        def advance(done: int) -> None:
            assert not recorded.finished, f"{description}: advanced after it finished"
            assert done >= 0, f"{description}: advanced by {done}"
            recorded.done += done

        yield advance
        recorded.finished = True

    def named(self, prefix: str) -> list[RecordedTask]:
        return [t for t in self.tasks if t.description.startswith(prefix)]

    def unbalanced(self) -> list[RecordedTask]:
        """Tasks whose advances do not add up to their total, or that were never finished."""
        return [t for t in self.tasks if t.done != t.total or not t.finished]

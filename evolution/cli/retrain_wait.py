"""`evolution retrain` waiting for its run: one line per change of phase, and the exit code of how the run ended.

The run is read as `evolution status` reads it (the orchestrator's ``retraining_status``), polled; a change is a new
line, printed as it happens. On a terminal a spinner shows the current phase (rich, which typer
already brings); piped, only the plain lines are written. Ctrl-C stops the waiting, never the run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from evolution.cli.exit_codes import EXIT_FAILURE, EXIT_OK
from evolution.contracts import RetrainingStatus

# Phases in which a run is over: its own end, or an end from outside (the orchestrator names those by the
# workflow execution's status: terminated, canceled, timed_out, failed).
FINISHED = "finished"
ENDED_FROM_OUTSIDE = frozenset({"terminated", "canceled", "cancelled", "timed_out", "failed", "closed"})
SUCCESS = "promoted"
POLL_S = 1.0


class StatusSource(Protocol):
    async def retraining_status(self, tenant_id: str) -> RetrainingStatus | None: ...


def is_over(status: RetrainingStatus) -> bool:
    return status.phase == FINISHED or status.phase in ENDED_FROM_OUTSIDE


def phase_line(status: RetrainingStatus, tenant: str) -> str:
    """What one look at the run says; the same look twice gives the same line (so only changes are printed)."""
    version = f" v{status.version_number}" if status.version_number is not None else ""
    state = f" ({status.state})" if status.state else ""
    line = f"{status.phase}{version}{state}"
    if status.phase == "shadow" and status.shadow_pairs_needed:
        # Without live traffic it waits here: say what for, so a quiet tenant does not look stuck.
        line += (
            f": {status.shadow_pairs} of {status.shadow_pairs_needed} labelled shadow pairs "
            "(live predictions whose outcomes have arrived)"
        )
    elif status.phase == "shadow" and status.shadow_pairs:
        line += f": {status.shadow_pairs} labelled shadow pairs"
    if status.phase == "canary" and status.guard is not None:
        g = status.guard
        line += f": n={g.n}  p(promote)={g.p_promote:.3g}  q(rollback)={g.q_rollback:.3g}"
    if status.awaiting_approval:
        model = status.model_name or "<model>"
        line += (
            f": waiting for approval: evolution approve --tenant {tenant} --model {model} "
            "(or reject, or on the dashboard)"
        )
    elif status.message and (status.phase == "awaiting_snapshot_acceptance" or is_over(status)):
        # Why it waits for an admin, or how it ended.
        line += f": {status.message}"
    return line


def outcome(status: RetrainingStatus) -> str:
    """The outcome word of a finished run (``promoted``, ``failed``, ``blocked`` …), or the phase it was ended in."""
    if status.phase == FINISHED:
        return status.message.partition(": ")[0] or "unknown"
    return status.phase


def exit_code(status: RetrainingStatus) -> int:
    """0 when the run ended with a new champion; 1 for every other end (failed, blocked, rejected, rolled back,
    no significant difference, approval timed out, ended from outside)."""
    return EXIT_OK if outcome(status) == SUCCESS else EXIT_FAILURE


async def wait_until_over(
    source: StatusSource,
    tenant: str,
    on_change: Callable[[str], None],
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    timeout_s: float | None = None,
) -> RetrainingStatus | None:
    """Poll the tenant's run until it is over; ``on_change`` gets each new line. None when ``timeout_s`` ran out."""
    started = clock()
    last = ""
    while True:
        status = await source.retraining_status(tenant)
        if status is not None:
            line = phase_line(status, tenant)
            if line != last:
                on_change(line)
                last = line
            if is_over(status):
                return status
        if timeout_s is not None and clock() - started >= timeout_s:
            return None
        await asyncio.sleep(poll_s)


class Display(Protocol):
    def line(self, text: str) -> None: ...


class PlainDisplay:
    """Piped output: one line per change, flushed at once (a log follower sees it as it happens)."""

    def line(self, text: str) -> None:
        print(text, flush=True)


class SpinnerDisplay:
    """A terminal: each change printed above a spinner that names the current phase."""

    def __init__(self) -> None:
        from rich.console import Console

        self._console = Console(highlight=False)
        self._status = self._console.status("waiting for the retraining …")

    def line(self, text: str) -> None:
        self._console.print(text, markup=False)
        self._status.update(f"{text.split(':', 1)[0]} … (Ctrl-C stops waiting; the run goes on)")

    @contextmanager
    def shown(self) -> Iterator[SpinnerDisplay]:
        with self._status:
            yield self


@contextmanager
def display(tty: bool | None = None) -> Iterator[Display]:
    """A spinner on a terminal, plain lines otherwise."""
    if tty is None:
        tty = sys.stdout.isatty()
    if not tty:
        yield PlainDisplay()
        return
    with SpinnerDisplay().shown() as spinner:
        yield spinner

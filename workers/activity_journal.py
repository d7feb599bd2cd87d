"""An optional journal of activity executions: one fsync'd JSON line when an activity body starts and ends.

Crash tests need to know which activities *really* ran more than once (the retried attempt of an activity whose
worker was killed, or whose completion never reached the server). Temporal's history only shows the attempt that
completed, so the worker writes its own journal, synchronously and durably, before the body runs and after it
returns: a SIGKILL can land anywhere and the line of every body that had started is still there.

Enabled only when ``EVOLUTION_ACTIVITY_JOURNAL`` names a file (see :func:`journal_interceptors`); several worker
processes (a killed one and its restart) append to the same file, each line written with one ``write`` on an
``O_APPEND`` descriptor.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

JOURNAL_ENV = "EVOLUTION_ACTIVITY_JOURNAL"


class ActivityJournal(Interceptor):
    """Worker interceptor: ``Worker(..., interceptors=[ActivityJournal(path)])``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _JournalInbound(next, self)

    def record(self, event: str, **fields: Any) -> None:
        info = activity.info()
        line = {
            "event": event,
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "activity_id": info.activity_id,
            "activity_type": info.activity_type,
            "attempt": info.attempt,
            "pid": os.getpid(),
            "at": time.time(),
            **fields,
        }
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        with self._lock:
            os.write(self._fd, data)
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class _JournalInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, journal: ActivityJournal) -> None:
        super().__init__(next)
        self._journal = journal

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        self._journal.record("start")
        try:
            result = await self.next.execute_activity(input)
        except BaseException as error:
            self._journal.record("error", error=type(error).__name__)
            raise
        self._journal.record("end")
        return result


def journal_interceptors(environ: Mapping[str, str]) -> list[Interceptor]:
    """``[ActivityJournal]`` when ``EVOLUTION_ACTIVITY_JOURNAL`` is set, else nothing (the default)."""
    path = environ.get(JOURNAL_ENV)
    return [ActivityJournal(Path(path))] if path else []

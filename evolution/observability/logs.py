"""JSON-lines logging, configured by entry points only (never at import time)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from evolution.observability.tracing import current_trace_id


class LogsHome(Protocol):
    """What logging reads of the settings (``Settings`` satisfies it)."""

    @property
    def logs_dir(self) -> Path: ...


CONTEXT_FIELDS = ("tenantId", "traceId", "modelHash", "workflowId", "activityId", "kind")


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": self._process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "traceId", None) is None:
            trace_id = current_trace_id()
            if trace_id:
                entry["traceId"] = trace_id
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    settings: LogsHome, process: str, level: int = logging.INFO, context: logging.Filter | None = None
) -> None:
    """JSON lines to stderr and to ``<home>/logs/<process>.log``; ``context`` adds fields such as workflow ids."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    formatter = JsonFormatter(process)
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.FileHandler(settings.logs_dir / f"{process}.log", encoding="utf-8"),
    ]
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        if context is not None:
            handler.addFilter(context)
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "uvicorn.access", "temporalio.activity", "temporalio.workflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Delivery of the OpenLineage events waiting in the outbox, through the OpenLineage client's own transports.

Events are recorded in the outbox by the registry and snapshot services in the transaction of their fact
(:mod:`evolution.registry.lineage_outbox`); this module only delivers them, oldest first, and marks each row's
``delivered_at`` once the transport accepted it. A pass runs right after an event is recorded
(:meth:`LineageDelivery.nudge`) and on the installation's ``notify-escalations`` schedule (every few minutes), so an
event that met an endpoint down is delivered by a later pass, and none is lost.

Once each: a row is claimed ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) while it is sent and marked in the same
transaction, so two workers' passes never send the same row; SQLite has one writer at a time anyway. A pass stops
for a tenant at its first failure, keeping that tenant's events in order. What is "once" is our side: a crash
between the endpoint's answer and the commit sends that event again, as any outbox does, with the same run id and
event time, which is how OpenLineage consumers recognise a repeated event.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.notifications.base import redact_url
from evolution.notifications.lineage_config import LineageConfig
from evolution.observability.checks import CheckResult
from evolution.registry.db import reading, transaction
from evolution.registry.lineage_outbox import LINEAGE_KIND_PREFIX
from evolution.registry.schema import Notification
from evolution.registry.tenancy import tenant_ids_visible
from evolution.timeutil import utcnow

log = logging.getLogger(__name__)

BATCH = 200  # rows per tenant per pass; the next pass takes the rest
NUDGE_PAUSE_S = (
    60.0  # after a failed pass, recording does not try again for this long (the schedule still does)
)


class LineagePass(BaseModel):
    """What one delivery pass did."""

    delivered: int = 0
    pending: int = 0
    failed_tenants: list[str] = []
    error: str | None = None


def _lineage_rows() -> Any:
    return Notification.kind.startswith(LINEAGE_KIND_PREFIX, autoescape=True)


class LineageDelivery:
    """Sends the outbox's undelivered lineage events through the configured OpenLineage transport."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        config: LineageConfig,
        default_file: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._config = config
        self._file = config.file or default_file
        self._clock = clock
        self._transport: Any = None
        self._lock = threading.Lock()
        self._paused_until = 0.0

    @property
    def config(self) -> LineageConfig:
        return self._config

    def where(self) -> str:
        """The destination, safe to print (an http URL shows its scheme, host and port only)."""
        if self._config.transport == "http":
            return f"http {redact_url(self._config.url or '')}"
        return f"file {self._file}"

    def _open_transport(self) -> Any:
        if self._transport is not None:
            return self._transport
        if self._config.transport == "file":
            from openlineage.client.transport.file import FileConfig, FileTransport

            self._file.parent.mkdir(parents=True, exist_ok=True)
            self._transport = FileTransport(FileConfig(log_file_path=str(self._file), append=True))
        else:
            from openlineage.client.transport.http import (
                ApiKeyTokenProvider,
                HttpConfig,
                HttpTransport,
                TokenProvider,
            )

            key = self._config.api_key
            auth = ApiKeyTokenProvider({"api_key": key.get_secret_value()}) if key else TokenProvider({})
            retry = {
                "total": self._config.retries,
                "read": self._config.retries,
                "connect": self._config.retries,
                "backoff_factor": 0.3,
                "status_forcelist": [500, 502, 503, 504],
                "allowed_methods": ["POST"],
            }
            self._transport = HttpTransport(
                HttpConfig(
                    url=self._config.url or "",
                    endpoint=self._config.endpoint,
                    timeout=self._config.timeout_s,
                    auth=auth,
                    retry=retry,
                )
            )
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def deliver_pending(self, tenant_ids: Iterable[str] | None = None) -> LineagePass:
        """One pass over ``tenant_ids`` (default: every tenant): deliver what waits, oldest first."""
        with self._lock:  # one pass at a time in this process
            return self._pass(tenant_ids)

    def nudge(self, tenant_id: str) -> None:
        """Right after an event was recorded: deliver the tenant's events, unless a recent pass failed or a pass
        is running now (the scheduled pass delivers what either leaves)."""
        if self._clock() < self._paused_until or not self._lock.acquire(blocking=False):
            return
        try:
            self._pass([tenant_id])
        finally:
            self._lock.release()

    def _pass(self, tenant_ids: Iterable[str] | None) -> LineagePass:
        outcome = LineagePass()
        tenants = list(tenant_ids) if tenant_ids is not None else tenant_ids_visible(self._factory)
        for tenant_id in tenants:
            error = self._deliver_tenant(tenant_id, outcome)
            if error is not None:
                outcome.failed_tenants.append(tenant_id)
                outcome.error = error
        outcome.pending = self.pending(tenants)
        if outcome.error is not None:
            self._paused_until = self._clock() + NUDGE_PAUSE_S
            log.warning(
                "lineage: %d event(s) wait in the outbox, %s did not take them: %s",
                outcome.pending,
                self.where(),
                outcome.error,
            )
        return outcome

    def _deliver_tenant(self, tenant_id: str, outcome: LineagePass) -> str | None:
        query = (
            select(Notification)
            .where(Notification.tenant_id == tenant_id, _lineage_rows(), Notification.delivered_at.is_(None))
            .order_by(Notification.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        with transaction(self._factory, tenant_id) as session:
            for row in list(session.scalars(query)):  # read before writing on the same connection
                try:
                    self._open_transport().emit(row.body)
                # The transports raise many kinds of errors; any of them leaves the row for a later pass.
                except Exception as error:
                    return f"{type(error).__name__}: {self._scrub(str(error))}"[:500]
                row.delivered_at = utcnow()
                session.flush()
                outcome.delivered += 1
        return None

    def pending(self, tenant_ids: Iterable[str] | None = None) -> int:
        """How many lineage events wait in the outbox."""
        total = 0
        for tenant_id in tenant_ids if tenant_ids is not None else tenant_ids_visible(self._factory):
            with reading(self._factory, tenant_id) as session:
                total += (
                    session.scalar(
                        select(func.count())
                        .select_from(Notification)
                        .where(
                            Notification.tenant_id == tenant_id,
                            _lineage_rows(),
                            Notification.delivered_at.is_(None),
                        )
                    )
                    or 0
                )
        return total

    def check(self) -> list[CheckResult]:
        """For ``evolution doctor``: the destination can take events (nothing is sent)."""
        if self._config.transport == "file":
            directory = self._file.parent
            existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
            ok = existing is not None and os.access(existing, os.W_OK)
            return [CheckResult("lineage.file", ok, f"{self._file} ({'writable' if ok else 'not writable'})")]
        parts = urlsplit(self._config.url or "")
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=self._config.timeout_s):
                pass
        except OSError as error:
            return [CheckResult("lineage.http", False, f"{self.where()}: {error}")]
        return [CheckResult("lineage.http", True, f"{self.where()} accepts connections")]

    def _scrub(self, text: str) -> str:
        url = self._config.url
        return text.replace(url, redact_url(url)) if url else text

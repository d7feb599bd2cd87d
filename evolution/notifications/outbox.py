"""The notifier port and its embedded adapter (an outbox table plus the log)."""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.registry.db import reading, transaction
from evolution.registry.schema import Notification
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow

Severity = Literal["info", "warning", "alert", "critical"]
log = logging.getLogger(__name__)


class NotificationIn(BaseModel):
    tenant_id: str
    severity: Severity
    kind: str
    subject: str
    body: dict[str, Any] = {}


class Notifier(Protocol):
    def notify(self, message: NotificationIn) -> None: ...


class OutboxNotifier:
    """Writes each notification to the ``notifications`` table (for delivery and the dashboard) and to the log."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def notify(self, message: NotificationIn) -> None:
        with transaction(self._factory, message.tenant_id) as session:
            session.add(
                Notification(
                    tenant_id=message.tenant_id,
                    severity=message.severity,
                    kind=message.kind,
                    subject=message.subject[:300],
                    body=message.body,
                    created_at=utcnow(),
                )
            )
        level = logging.WARNING if message.severity in ("warning", "alert", "critical") else logging.INFO
        log.log(level, message.subject, extra={"tenantId": message.tenant_id, "kind": message.kind})

    def recent(self, tenant_id: str, limit: int = 50) -> list[dict[str, Any]]:
        with reading(self._factory, tenant_id) as session:
            rows = session.scalars(
                select(Notification)
                .where(Notification.tenant_id == tenant_id)
                .order_by(Notification.id.desc())
                .limit(limit)
            )
            return [
                {
                    "severity": r.severity,
                    "kind": r.kind,
                    "subject": r.subject,
                    "at": as_utc(r.created_at).isoformat(),
                }
                for r in rows
            ]


def notify_as(principal: Principal | None, notifier: Notifier, message: NotificationIn) -> None:
    """Send a notification on a principal's behalf (the orchestrator's activities act as the system)."""
    authorize(principal, Action.NOTIFY, message.tenant_id)
    notifier.notify(message)

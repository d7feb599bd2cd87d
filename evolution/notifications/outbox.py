"""The embedded notifier: an outbox table (for delivery and the dashboard) plus the log."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.notifications.port import NotificationIn
from evolution.registry.db import reading, transaction
from evolution.registry.lineage_outbox import LINEAGE_KIND_PREFIX
from evolution.registry.schema import Notification
from evolution.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)


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
                .where(
                    Notification.tenant_id == tenant_id,
                    # Lineage events share the outbox for their delivery; they are not messages for people.
                    ~Notification.kind.startswith(LINEAGE_KIND_PREFIX, autoescape=True),
                )
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

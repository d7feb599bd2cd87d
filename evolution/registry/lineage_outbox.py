"""Lineage events into the outbox, in the transaction that records the fact they describe.

The outbox is the ``notifications`` table, the same one the notifier writes: a lineage event is a row of kind
``lineage.<what>`` whose body is the OpenLineage event, and whose ``delivered_at`` is set once the configured
transport accepted it (:mod:`evolution.notifications.lineage`). Written in the same transaction as the snapshot or
the transition, an event exists exactly when its fact does: a rolled-back seal leaves none, an idempotent replay of
a request (which does not run its work again) adds none, and an endpoint that is down loses none.

``on_recorded`` is told the tenant after the recording transaction committed, so delivery can be tried at once; it
must not raise, and whatever it leaves undelivered the scheduled pass delivers later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from evolution.registry.lineage_events import DEFAULT_NAMESPACE
from evolution.registry.schema import DatasetSnapshot, ModelVersion, Notification
from evolution.timeutil import utcnow

log = logging.getLogger(__name__)

LINEAGE_KIND_PREFIX = "lineage."
SNAPSHOT_SEALED = "lineage.snapshot.sealed"
MODEL_TRAINED = "lineage.model.trained"
MODEL_PROMOTED = "lineage.model.promoted"


def is_lineage_kind(kind: str) -> bool:
    return kind.startswith(LINEAGE_KIND_PREFIX)


class LineageOutbox:
    """Records the OpenLineage event of each sealed snapshot, trained version and promotion in the caller's session."""

    def __init__(
        self, namespace: str = DEFAULT_NAMESPACE, on_recorded: Callable[[str], None] | None = None
    ) -> None:
        self._namespace = namespace
        self._on_recorded = on_recorded

    @property
    def namespace(self) -> str:
        return self._namespace

    def snapshot_sealed(self, session: Session, snapshot: DatasetSnapshot) -> None:
        from evolution.registry.lineage_events import snapshot_sealed_event

        event = snapshot_sealed_event(self._namespace, snapshot)
        self._record(session, snapshot.tenant_id, SNAPSHOT_SEALED, f"snapshot {snapshot.id} sealed", event)

    def model_trained(self, session: Session, version: ModelVersion, at: datetime) -> None:
        from evolution.registry.lineage_events import model_trained_event

        snapshot = (
            session.get(DatasetSnapshot, version.dataset_snapshot_id) if version.dataset_snapshot_id else None
        )
        event = model_trained_event(self._namespace, version, snapshot, at)
        subject = f"{version.model_name} v{version.number} trained"
        self._record(session, version.tenant_id, MODEL_TRAINED, subject, event)

    def model_promoted(
        self,
        session: Session,
        version: ModelVersion,
        from_state: str,
        request_id: str,
        reason: str,
        at: datetime,
    ) -> None:
        from evolution.registry.lineage_events import model_promoted_event

        event = model_promoted_event(self._namespace, version, from_state, request_id, reason, at)
        subject = f"{version.model_name} v{version.number} champion (request {request_id})"
        self._record(session, version.tenant_id, MODEL_PROMOTED, subject, event)

    def committed(self, tenant_id: str) -> None:
        """After the recording transaction committed: try delivery now (never raises into the caller)."""
        if self._on_recorded is None:
            return
        try:
            self._on_recorded(tenant_id)
        except Exception:  # delivery is retried by the scheduled pass; the fact is recorded already
            log.exception("lineage delivery after commit failed for tenant %s", tenant_id)

    @staticmethod
    def _record(session: Session, tenant_id: str, kind: str, subject: str, event: dict[str, Any]) -> None:
        session.add(
            Notification(
                tenant_id=tenant_id,
                severity="info",
                kind=kind,
                subject=subject[:300],
                body=event,
                created_at=utcnow(),
            )
        )

"""Windows held for data quality: a sealed window whose data-quality checks fired is not trained on unaccepted.

A data-quality alert never starts a retraining itself (training on broken data teaches the model the breakage). When
one fires, the drift scan marks its window *held*; a retraining that drift on the same window started then waits until
an admin accepts the window (``evolution snapshot accept TENANT SNAPSHOT_ID --reason …``), audited. Marks are rows
that are never changed: a window is held while it has a 'held' row and no 'accepted' one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import InvalidInput, NotFound
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import DatasetSnapshot, SnapshotQualityMark
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow


class HeldWindow(BaseModel):
    """A window held for data quality, and why (the firing checks, in words)."""

    snapshot_id: str
    report_id: str | None
    held_at: datetime
    checks: list[str] = Field(default_factory=list, description="'feature: what fired', in plain words")
    accepted_by: str | None = None
    accepted_at: datetime | None = None
    accept_reason: str | None = None

    @property
    def held(self) -> bool:
        return self.accepted_at is None


class SnapshotHolds:
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def hold(
        self, principal: Principal, tenant_id: str, snapshot_id: str, report_id: str, checks: list[str]
    ) -> bool:
        """Mark the window held (the scan does, when its data-quality checks fire). False if it already was."""
        authorize(principal, Action.WRITE_DRIFT_REPORT, tenant_id)
        now = utcnow()
        try:
            with transaction(self._factory, tenant_id) as session:
                if self._mark(session, tenant_id, snapshot_id, "held") is not None:
                    return False
                session.add(
                    SnapshotQualityMark(
                        id=f"sq-{uuid.uuid4().hex[:20]}",
                        tenant_id=tenant_id,
                        snapshot_id=snapshot_id,
                        kind="held",
                        report_id=report_id,
                        details={"checks": checks},
                        actor=principal.user,
                        reason="data-quality checks fired",
                        at=now,
                    )
                )
                append_audit(
                    session,
                    tenant_id=tenant_id,
                    principal=principal,
                    action="snapshot.held",
                    subject_type="snapshot",
                    subject_id=snapshot_id,
                    at=now,
                    details={"report_id": report_id, "checks": checks},
                )
        except IntegrityError:  # marked at the same moment by a retried step: one mark stands
            return False
        return True

    def accept(self, principal: Principal, tenant_id: str, snapshot_id: str, reason: str) -> HeldWindow:
        """Admin: accept a held window for training, with a reason (audited). Accepting it again changes nothing."""
        authorize(principal, Action.ACCEPT_SNAPSHOT, tenant_id)
        if not reason.strip():
            raise InvalidInput(
                "reason: accepting a window with data-quality alerts needs a reason for the audit log"
            )
        now = utcnow()
        with transaction(self._factory, tenant_id) as session:
            snapshot = session.get(DatasetSnapshot, snapshot_id)
            if snapshot is None or snapshot.tenant_id != tenant_id:
                raise NotFound(f"tenant {tenant_id!r} has no snapshot {snapshot_id!r}")
            held = self._mark(session, tenant_id, snapshot_id, "held")
            if held is None:
                raise InvalidInput(
                    f"snapshot {snapshot_id} is not held: no data-quality check fired on it, nothing to accept"
                )
            if self._mark(session, tenant_id, snapshot_id, "accepted") is None:
                session.add(
                    SnapshotQualityMark(
                        id=f"sq-{uuid.uuid4().hex[:20]}",
                        tenant_id=tenant_id,
                        snapshot_id=snapshot_id,
                        kind="accepted",
                        report_id=held.report_id,
                        details={"checks": held.details.get("checks", [])},
                        actor=principal.user,
                        reason=reason,
                        at=now,
                    )
                )
                append_audit(
                    session,
                    tenant_id=tenant_id,
                    principal=principal,
                    action="snapshot.accepted",
                    subject_type="snapshot",
                    subject_id=snapshot_id,
                    at=now,
                    details={
                        "report_id": held.report_id,
                        "reason": reason,
                        "checks": held.details.get("checks", []),
                    },
                )
        window = self.window(principal, tenant_id, snapshot_id)
        assert window is not None
        return window

    def window(self, principal: Principal, tenant_id: str, snapshot_id: str) -> HeldWindow | None:
        """The window's data-quality mark (held or accepted), or None if its checks never fired."""
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            held = self._mark(session, tenant_id, snapshot_id, "held")
            if held is None:
                return None
            accepted = self._mark(session, tenant_id, snapshot_id, "accepted")
            return _view(held, accepted)

    def waiting_on(
        self, principal: Principal, tenant_id: str, snapshot_ids: list[str | None]
    ) -> list[HeldWindow]:
        """Of these windows (None: the latest sealed one, which training would read), those still held."""
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            ids: list[str] = []
            for snapshot_id in snapshot_ids:
                if snapshot_id is None:
                    snapshot_id = session.scalar(
                        select(DatasetSnapshot.id)
                        .where(DatasetSnapshot.tenant_id == tenant_id)
                        .order_by(DatasetSnapshot.window_end.desc())
                        .limit(1)
                    )
                if snapshot_id is not None and snapshot_id not in ids:
                    ids.append(snapshot_id)
            out = []
            for snapshot_id in ids:
                held = self._mark(session, tenant_id, snapshot_id, "held")
                if held is not None and self._mark(session, tenant_id, snapshot_id, "accepted") is None:
                    out.append(_view(held, None))
            return out

    @staticmethod
    def _mark(session: Session, tenant_id: str, snapshot_id: str, kind: str) -> SnapshotQualityMark | None:
        return session.scalar(
            select(SnapshotQualityMark).where(
                SnapshotQualityMark.tenant_id == tenant_id,
                SnapshotQualityMark.snapshot_id == snapshot_id,
                SnapshotQualityMark.kind == kind,
            )
        )


def _view(held: SnapshotQualityMark, accepted: SnapshotQualityMark | None) -> HeldWindow:
    checks: Any = held.details.get("checks", [])
    return HeldWindow(
        snapshot_id=held.snapshot_id,
        report_id=held.report_id,
        held_at=as_utc(held.at),
        checks=[str(c) for c in checks],
        accepted_by=accepted.actor if accepted else None,
        accepted_at=as_utc(accepted.at) if accepted else None,
        accept_reason=accepted.reason if accepted else None,
    )

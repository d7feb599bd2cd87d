"""Stranded watches: a post-promotion watch whose workflow ended from outside (terminated, reset away, timed out)
while its row still says "watching".

Nothing would look at such a watch again: the previous champion would shadow-score for ever and harm would never be
acted on, so terminating the workflow through the raw Temporal client or the Web UI would switch the automatic
rollback off. :meth:`StrandedWatches.find` names each one (audited and notified once per resumption) so the drift
scan can start its workflow again; the harm test's state and cursor live in the row, so the watch resumes exactly
where it stopped.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.canary.watch_models import WatchInput
from evolution.contracts import WatchPolicy
from evolution.notifications.port import NotificationIn, Notifier
from evolution.registry.audit import append_audit
from evolution.registry.db import transaction
from evolution.registry.schema import AuditEntry, PostPromotionWatch
from evolution.registry.stranded import RunLiveness
from evolution.security import Principal
from evolution.timeutil import utcnow

log = logging.getLogger(__name__)

RESUMED_REASON = "its workflow ended from outside without a verdict"


class StrandedWatches:
    def __init__(self, factory: sessionmaker[Session], notifier: Notifier) -> None:
        self._factory = factory
        self._notifier = notifier

    async def find(self, tenant_id: str, liveness: RunLiveness) -> list[WatchInput]:
        """The tenant's watches to start again: still watching, their workflow (any run of its id) not running."""
        with transaction(self._factory, tenant_id) as session:
            rows = session.scalars(
                select(PostPromotionWatch).where(
                    PostPromotionWatch.tenant_id == tenant_id, PostPromotionWatch.status == "watching"
                )
            ).all()
            watching = [(row, _policy(session, row)) for row in rows]
        stranded = []
        for row, policy in watching:  # one per model at most
            if await liveness.run_is_open(row.workflow_id, None):
                continue
            self._record(tenant_id, row)
            stranded.append(
                WatchInput(
                    tenant_id=tenant_id,
                    model_name=row.model_name,
                    champion_version_id=row.champion_version_id,
                    previous_version_id=row.previous_version_id,
                    policy=policy,
                    watch_id=row.id,
                )
            )
        return stranded

    def _record(self, tenant_id: str, row: PostPromotionWatch) -> None:
        principal = Principal.system(tenant_id, "reconciler")
        with transaction(self._factory, tenant_id) as session:
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="watch.resumed",
                subject_type="watch",
                subject_id=row.id,
                at=utcnow(),
                details={
                    "model_name": row.model_name,
                    "workflow_id": row.workflow_id,
                    "reason": RESUMED_REASON,
                },
            )
        log.warning(
            "the post-promotion watch %s of %s: %s; resuming it",
            row.id,
            row.model_name,
            RESUMED_REASON,
            extra={"tenantId": tenant_id},
        )
        self._notifier.notify(
            NotificationIn(
                tenant_id=tenant_id,
                severity="warning",
                kind="watch.resumed",
                subject=f"{row.model_name}: the post-promotion watch was resumed: {RESUMED_REASON}",
                body={"watch_id": row.id, "workflow_id": row.workflow_id},
            )
        )


def _policy(session: Session, row: PostPromotionWatch) -> WatchPolicy:
    """The policy the watch started with (its look interval; the period itself is fixed in the row)."""
    details = session.scalars(
        select(AuditEntry.details).where(
            AuditEntry.tenant_id == row.tenant_id,
            AuditEntry.subject_id == row.id,
            AuditEntry.action == "watch.started",
        )
    ).first()
    policy = (details or {}).get("policy")
    return WatchPolicy.model_validate(policy) if policy else WatchPolicy()

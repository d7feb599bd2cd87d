"""The post-promotion watch's steps: start it, look (pairs in, harm test, period), end it, and show its progress.

After a promotion that had a canary, the champion it replaced keeps shadow-scoring every request (serving asks
:meth:`PostPromotionWatches.watched_predecessor`) and the harm test of :mod:`evolution.stats.watch` runs on the paired
errors. Harm restores the previous champion through the registry (audited, notified, the reason names the watch).
The period (default 14 days and 5,000 labels, whichever comes later) passing without harm ends the watch 'kept'.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from evolution.canary.service import WATCH_ROLE
from evolution.canary.watch_models import (
    Verdict,
    WatchEndIn,
    WatchEndOut,
    WatchLookOut,
    WatchProgress,
    WatchStartIn,
    WatchStartOut,
    WatchStatus,
    WatchStepIn,
)
from evolution.data.outcomes import OutcomeJoiner
from evolution.errors import Conflict, InvalidInput, NotFound
from evolution.lifecycle import ModelState, VersionView
from evolution.notifications.port import NotificationIn, Notifier
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import AuditEntry, ModelVersion, PostPromotionWatch
from evolution.registry.versions import ModelRegistryService
from evolution.security import Action, Principal, authorize
from evolution.stats.canary_models import GuardConfig, GuardState
from evolution.stats.watch import harm_look, observe_watch
from evolution.timeutil import as_utc, utcnow

ENDINGS: dict[Verdict, WatchStatus] = {
    "harm": "rolled_back",
    "kept": "kept",
    "superseded": "superseded",
    "expired": "expired",
}


class PostPromotionWatches:
    def __init__(
        self,
        factory: sessionmaker[Session],
        registry: ModelRegistryService,
        outcomes: OutcomeJoiner,
        notifier: Notifier,
    ) -> None:
        self._factory = factory
        self._registry = registry
        self._outcomes = outcomes
        self._notifier = notifier

    # ------------------------------------------------------------------ the workflow's steps
    def start(self, inp: WatchStartIn) -> WatchStartOut:
        """Record the watch of a real promotion (a retried step finds the one it made); an older watch of the model
        ends superseded. The champion must be the model's current one and the previous version the champion it
        replaced; the harm test takes the canary's configuration from the audit log, never from the caller."""
        principal = Principal.system(inp.tenant_id, "watch")
        authorize(principal, Action.TRANSITION, inp.tenant_id)
        now = utcnow()
        with transaction(self._factory, inp.tenant_id) as session:
            existing = session.scalars(
                select(PostPromotionWatch).where(
                    PostPromotionWatch.tenant_id == inp.tenant_id,
                    PostPromotionWatch.champion_version_id == inp.champion_version_id,
                    PostPromotionWatch.previous_version_id == inp.previous_version_id,
                )
            ).first()
            if existing is not None:
                return WatchStartOut(watch_id=existing.id)
            config = self._promotion_guard(session, inp)
            for older in self._watching(session, inp.tenant_id, inp.model_name):
                self._end_row(session, principal, older, "superseded", "a newer champion was promoted", now)
            row = PostPromotionWatch(
                id=f"w-{uuid.uuid4().hex[:20]}",
                tenant_id=inp.tenant_id,
                model_name=inp.model_name,
                champion_version_id=inp.champion_version_id,
                previous_version_id=inp.previous_version_id,
                workflow_id=inp.workflow_id,
                status="watching",
                started_at=now,
                min_until=now + timedelta(seconds=inp.policy.min_s),
                max_until=now + timedelta(seconds=max(inp.policy.max_s, inp.policy.min_s)),
                min_labels=inp.policy.min_labels,
                labels=0,
                q_harm=1.0,
                theta_hat=0.0,
                guard_config=config.model_dump(mode="json"),
                guard_state=GuardState().model_dump(mode="json"),
                cursor=0,
                last_look_at=None,
                ended_at=None,
                reason="watching",
            )
            session.add(row)
            append_audit(
                session,
                tenant_id=inp.tenant_id,
                principal=principal,
                action="watch.started",
                subject_type="watch",
                subject_id=row.id,
                at=now,
                details={
                    "model_name": inp.model_name,
                    "champion_version_id": inp.champion_version_id,
                    "previous_version_id": inp.previous_version_id,
                    "policy": inp.policy.model_dump(),
                },
            )
        return WatchStartOut(watch_id=row.id)

    def look(self, inp: WatchStepIn) -> WatchLookOut:
        """Join the outcomes that arrived since the last look, run the harm test, and say whether the watch goes on."""
        principal = Principal.system(inp.tenant_id, "watch")
        with reading(self._factory, inp.tenant_id) as session:
            row = self._row(session, inp.tenant_id, inp.watch_id)
            if row.status != "watching":
                return WatchLookOut(
                    verdict=ENDED_AS[row.status], reason=row.reason, labels=row.labels, q_harm=row.q_harm
                )
            model_name, champion_id, previous_id = (
                row.model_name,
                row.champion_version_id,
                row.previous_version_id,
            )
            config = GuardConfig.model_validate(row.guard_config)
            state = GuardState.model_validate(row.guard_state)
            cursor = row.cursor
        champion = self._registry.current(principal, inp.tenant_id, model_name, ModelState.CHAMPION)
        pairs = self._outcomes.paired_errors(principal, inp.tenant_id, previous_id, cursor, [WATCH_ROLE])
        if pairs.pairs:
            # The served champion is the "candidate" of the mirror test: harm means its MAE is the higher one.
            state = observe_watch(
                state,
                config,
                np.asarray(pairs.candidate_abs_errors, dtype=float),
                np.asarray(pairs.champion_abs_errors, dtype=float),
            )
        decision = harm_look(state, config)
        state = decision.state or state
        now = utcnow()
        with transaction(self._factory, inp.tenant_id) as session:
            row = self._row(session, inp.tenant_id, inp.watch_id)
            if row.status == "watching" and row.cursor == cursor:  # else a retried look already counted these
                row.guard_state = state.model_dump(mode="json")
                row.cursor = pairs.cursor
                row.labels = decision.n
                row.q_harm = decision.q_rollback
                row.theta_hat = decision.theta_hat
                row.last_look_at = now
            verdict, reason = verdict_of(row, champion, champion_id, now)
            if verdict == "continue":
                row.reason = reason
            return WatchLookOut(verdict=verdict, reason=reason, labels=row.labels, q_harm=row.q_harm)

    def end(self, inp: WatchEndIn) -> WatchEndOut:
        """End the watch as its row says (harm only if its own test decided so): on harm, restore the previous
        champion first. Audited and notified; a watch that should go on, or already ended, is left as it is."""
        principal = Principal.system(inp.tenant_id, "watch")
        with reading(self._factory, inp.tenant_id) as session:
            row = self._row(session, inp.tenant_id, inp.watch_id)
            model_name, champion_id, previous_id = (
                row.model_name,
                row.champion_version_id,
                row.previous_version_id,
            )
            labels, q_harm = row.labels, row.q_harm
        champion = self._registry.current(principal, inp.tenant_id, model_name, ModelState.CHAMPION)
        verdict, reason = verdict_of(row, champion, champion_id, utcnow())
        harmed = GuardState.model_validate(row.guard_state)
        if row.status == "watching" and harmed.decided == "rollback":
            # Harm decided: the registry's own checks (and its request id, on a retry after the rollback but before
            # the row was ended) settle whether the champion is still this watch's to roll back.
            verdict, reason = "harm", harmed.decided_reason or reason
        if row.status != "watching" or verdict == "continue":
            status: WatchStatus = row.status  # type: ignore[assignment]
            return WatchEndOut(status=status, message=row.reason, labels=labels, q_harm=q_harm)
        status = ENDINGS[verdict]
        message = f"{model_name}: post-promotion watch ended {status.replace('_', ' ')}: {reason}"
        severity = "warning" if status == "expired" else "info"
        if status == "rolled_back":
            try:
                result = self._registry.watch_rollback(
                    principal, inp.tenant_id, model_name, (champion_id, previous_id), inp.request_id, reason
                )
            except (Conflict, NotFound) as error:  # the champion changed meanwhile: not this watch's to undo
                status, reason = "superseded", f"harm found, but {error}"
                message = f"{model_name}: post-promotion watch ended superseded: {reason}"
            else:
                restored, demoted = result.version, result.demoted
                severity = "critical"
                message = (
                    f"{model_name} rolled back by the post-promotion watch: v{restored.number} is CHAMPION again, "
                    f"v{demoted.number if demoted else '?'} deprecated ({reason})"
                )
        with transaction(self._factory, inp.tenant_id) as session:
            row = self._row(session, inp.tenant_id, inp.watch_id)
            if row.status != "watching":  # ended by a retried step already
                return WatchEndOut(status=row.status, message=row.reason, labels=labels, q_harm=q_harm)  # type: ignore[arg-type]
            self._end_row(session, principal, row, status, reason, utcnow())
        self._notifier.notify(
            NotificationIn(
                tenant_id=inp.tenant_id,
                severity=severity,  # type: ignore[arg-type]
                kind=f"watch.{status}",
                subject=message[:300],
                body={"watch_id": inp.watch_id, "reason": reason},
            )
        )
        return WatchEndOut(status=status, message=message, labels=labels, q_harm=q_harm)

    def _promotion_guard(self, session: Session, inp: WatchStartIn) -> GuardConfig:
        """The canary's guard configuration of a real promotion of ``champion`` over ``previous``; else InvalidInput."""
        champion = session.get(ModelVersion, inp.champion_version_id)
        previous = session.get(ModelVersion, inp.previous_version_id)
        named = f"{inp.tenant_id}/{inp.model_name}"
        if (
            champion is None
            or champion.tenant_id != inp.tenant_id
            or champion.model_name != inp.model_name
            or champion.state != ModelState.CHAMPION.value
        ):
            raise InvalidInput(f"{inp.champion_version_id} is not the champion of {named}: nothing to watch")
        if (
            previous is None
            or previous.tenant_id != inp.tenant_id
            or previous.model_name != inp.model_name
            or previous.state != ModelState.DEPRECATED.value
            or not previous.was_champion
            or previous.number >= champion.number
        ):
            raise InvalidInput(
                f"{inp.previous_version_id} is not a former champion of {named} before the current one"
            )
        promoted = session.scalars(
            select(AuditEntry.details)
            .where(
                AuditEntry.tenant_id == inp.tenant_id,
                AuditEntry.subject_id == champion.id,
                AuditEntry.to_state == ModelState.CANARY.value,
            )
            .order_by(AuditEntry.seq.desc())
        ).first()
        guard = (promoted or {}).get("guard_config")
        if guard is None:
            raise InvalidInput(f"v{champion.number} of {named} had no canary: nothing to compare it with")
        return GuardConfig.model_validate(guard)

    # ------------------------------------------------------------------ what serving and people read
    def watched_predecessor(self, tenant_id: str, model_name: str) -> VersionView | None:
        """The previous champion serving must shadow-score beside the champion, while a watch runs."""
        principal = Principal.system(tenant_id, "serving")
        with reading(self._factory, tenant_id) as session:
            row = next(iter(self._watching(session, tenant_id, model_name)), None)
        if row is None:
            return None
        previous = self._registry.get_version(principal, row.previous_version_id)
        return previous if previous.state == ModelState.DEPRECATED else None

    def progress(
        self, principal: Principal, tenant_id: str, model_name: str | None = None, limit: int = 20
    ) -> list[WatchProgress]:
        """The model's (or the tenant's) watches, the newest first."""
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            query = select(PostPromotionWatch).where(PostPromotionWatch.tenant_id == tenant_id)
            if model_name is not None:
                query = query.where(PostPromotionWatch.model_name == model_name)
            rows = session.scalars(query.order_by(PostPromotionWatch.started_at.desc()).limit(limit)).all()
            numbers = dict(
                session.execute(
                    select(ModelVersion.id, ModelVersion.number).where(
                        ModelVersion.id.in_(
                            {r.champion_version_id for r in rows} | {r.previous_version_id for r in rows}
                        )
                    )
                ).all()
            )
            return [
                WatchProgress(
                    watch_id=r.id,
                    model_name=r.model_name,
                    status=r.status,  # type: ignore[arg-type]
                    champion_version_id=r.champion_version_id,
                    champion_number=numbers.get(r.champion_version_id, 0),
                    previous_version_id=r.previous_version_id,
                    previous_number=numbers.get(r.previous_version_id, 0),
                    started_at=as_utc(r.started_at),
                    min_until=as_utc(r.min_until),
                    max_until=as_utc(r.max_until),
                    labels=r.labels,
                    min_labels=r.min_labels,
                    q_harm=r.q_harm,
                    theta_hat=r.theta_hat,
                    last_look_at=as_utc(r.last_look_at) if r.last_look_at else None,
                    ended_at=as_utc(r.ended_at) if r.ended_at else None,
                    reason=r.reason,
                )
                for r in rows
            ]

    # ------------------------------------------------------------------ rows
    @staticmethod
    def _watching(session: Session, tenant_id: str, model_name: str) -> list[PostPromotionWatch]:
        return list(
            session.scalars(
                select(PostPromotionWatch)
                .where(
                    PostPromotionWatch.tenant_id == tenant_id,
                    PostPromotionWatch.model_name == model_name,
                    PostPromotionWatch.status == "watching",
                )
                .order_by(PostPromotionWatch.started_at.desc())
            ).all()
        )

    @staticmethod
    def _row(session: Session, tenant_id: str, watch_id: str) -> PostPromotionWatch:
        row = session.get(PostPromotionWatch, watch_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"tenant {tenant_id!r} has no post-promotion watch {watch_id!r}")
        return row

    @staticmethod
    def _end_row(
        session: Session,
        principal: Principal,
        row: PostPromotionWatch,
        status: str,
        reason: str,
        now: datetime,
    ) -> None:
        session.execute(
            update(PostPromotionWatch)
            .where(PostPromotionWatch.id == row.id)
            .values(status=status, reason=reason, ended_at=now)
        )
        append_audit(
            session,
            tenant_id=row.tenant_id,
            principal=principal,
            action=f"watch.{status}",
            subject_type="watch",
            subject_id=row.id,
            at=now,
            details={
                "model_name": row.model_name,
                "champion_version_id": row.champion_version_id,
                "previous_version_id": row.previous_version_id,
                "labels": row.labels,
                "q_harm": row.q_harm,
                "reason": reason,
            },
        )


def verdict_of(
    row: PostPromotionWatch, champion: VersionView | None, watched_id: str, now: datetime
) -> tuple[Verdict, str]:
    """Harm (the row's own test decided it) first; then a champion that changed; then the period: kept once both
    its bounds passed, expired at its longest."""
    if row.status != "watching":
        return ENDED_AS[row.status], row.reason
    state = GuardState.model_validate(row.guard_state)
    if champion is None or champion.id != watched_id:
        now_serving = f"v{champion.number}" if champion else "no version"
        return "superseded", f"{now_serving} is the champion now"
    if state.decided == "rollback":
        return "harm", state.decided_reason or "harm test fired"
    labels_due = row.labels < row.min_labels
    if now >= as_utc(row.max_until):
        if labels_due:
            return "expired", (
                f"the longest watch passed with {row.labels:,} of {row.min_labels:,} labels; no harm found"
            )
        return "kept", f"no harm found in {row.labels:,} labels (q = {row.q_harm:.3g})"
    if now >= as_utc(row.min_until) and not labels_due:
        return "kept", f"no harm found in {row.labels:,} labels over the watch period (q = {row.q_harm:.3g})"
    return "continue", f"{row.labels:,} labels: q = {row.q_harm:.3g}; no harm found"


# How an ended watch's status reads as a verdict (a look at a watch already ended says how it ended).
ENDED_AS: dict[str, Verdict] = {status: verdict for verdict, status in ENDINGS.items()}

"""EconomicsService: the Executive page's figures for one model line, read with a handful of aggregated,
index-backed queries (no per-prediction rows come back to Python) and derived by :func:`economics.summarize`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.governance.economics import (
    DEFAULT_MODEL_NAME,
    DEFAULT_SERIES_POINTS,
    DEFAULT_SLO_PERIOD,
    GUARD_DECIDED_KIND,
    ExecutiveSummary,
    LineFacts,
    LineTransition,
    Observation,
    PairedErrors,
    checkpoints_at,
    promotions_of,
    summarize,
)
from evolution.lifecycle import ModelState
from evolution.registry.db import reading
from evolution.registry.quota import QuotaManager
from evolution.registry.schema import (
    AuditEntry,
    DriftReport,
    LearningEvent,
    Notification,
    Prediction,
    TrainingRun,
)
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow


class EconomicsService:
    def __init__(
        self,
        factory: sessionmaker[Session],
        registry: ModelRegistryService,
        tenants: TenantService,
        quota: QuotaManager,
    ) -> None:
        self._factory = factory
        self._registry = registry
        self._tenants = tenants
        self._quota = quota

    def executive_summary(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        model_name: str = DEFAULT_MODEL_NAME,
        now: datetime | None = None,
        availability: float | None = None,
        series_points: int = DEFAULT_SERIES_POINTS,
        slo_period: timedelta = DEFAULT_SLO_PERIOD,
    ) -> ExecutiveSummary:
        """ROI per promotion, the capitalization index with its time series, quota use and SLA-breach risk.

        ``availability`` is the serving process's measured share of requests answered (0..1), or None when
        unknown. Any role that may view the tenant may call it.
        """
        authorize(principal, Action.VIEW, tenant_id)
        now = as_utc(now) if now else utcnow()
        since = now - slo_period
        economics = self._tenants.tenant_settings(principal, tenant_id).economics
        versions = {v.id: v for v in self._registry.list_versions(principal, tenant_id, model_name)}
        quota_now = self._quota.status(principal, tenant_id, now)

        with reading(self._factory, tenant_id) as session:
            ids = list(versions)
            # Facts recorded after ``now`` (a summary as of an earlier moment) are not part of the picture.
            transitions = [t for t in _transitions(session, tenant_id, ids) if t.at <= now] if ids else []
            promotions = promotions_of(transitions)
            promoted_ids = [p.version_id for p in promotions]
            checkpoints = (
                checkpoints_at(promotions[0].at, now, [p.at for p in promotions], series_points)
                if promotions
                else []
            )
            canary_starts = [t.at for t in transitions if t.to_state == ModelState.CANARY.value]
            facts = LineFacts(
                versions=versions,
                transitions=transitions,
                runs=_training_runs(session, tenant_id, ids, now) if ids else [],
                checkpoints=checkpoints,
                volumes=_champion_volumes(session, tenant_id, model_name, promoted_ids, checkpoints)
                if promotions
                else {},
                paired=_paired_errors(session, tenant_id, model_name, promoted_ids) if promotions else {},
                drift=_drift_latencies(session, tenant_id, model_name, since, now),
                decisions=_guard_decisions(session, tenant_id, min(canary_starts), now)
                if canary_starts
                else [],
            )
        return summarize(
            facts,
            tenant_id=tenant_id,
            model_name=model_name,
            now=now,
            economics=economics,
            quota_now=quota_now,
            availability=availability,
            slo_period=slo_period,
        )


def _transitions(session: Session, tenant_id: str, version_ids: Sequence[str]) -> list[LineTransition]:
    """Transitions into or out of CANARY and CHAMPION: the promotions and the canary windows."""
    watched = [ModelState.CANARY.value, ModelState.CHAMPION.value]
    rows = session.execute(
        select(
            AuditEntry.seq,
            AuditEntry.at,
            AuditEntry.actor,
            AuditEntry.subject_id,
            AuditEntry.from_state,
            AuditEntry.to_state,
        )
        .where(
            AuditEntry.tenant_id == tenant_id,
            AuditEntry.action == "version.transition",
            AuditEntry.subject_id.in_(list(version_ids)),
            or_(AuditEntry.to_state.in_(watched), AuditEntry.from_state.in_(watched)),
        )
        .order_by(AuditEntry.seq)
    ).all()
    return [
        LineTransition(seq=seq, at=as_utc(at), actor=actor, version_id=subject, from_state=src, to_state=dst)
        for seq, at, actor, subject, src, dst in rows
    ]


def _training_runs(
    session: Session, tenant_id: str, version_ids: Sequence[str], now: datetime
) -> list[tuple[str, datetime, float, float]]:
    """(version id, started at, duration s, cost USD) of every run of the model line up to ``now``."""
    rows = session.execute(
        select(
            TrainingRun.model_version_id, TrainingRun.started_at, TrainingRun.duration_s, TrainingRun.cost_usd
        )
        .where(
            TrainingRun.tenant_id == tenant_id,
            TrainingRun.model_version_id.in_(list(version_ids)),
            TrainingRun.started_at <= now,
        )
        .order_by(TrainingRun.started_at)
    ).all()
    return [
        (version, as_utc(started), float(duration), float(cost)) for version, started, duration, cost in rows
    ]


def _champion_volumes(
    session: Session,
    tenant_id: str,
    model_name: str,
    champion_ids: Sequence[str],
    checkpoints: list[datetime],
) -> dict[str, list[int]]:
    """Per champion, the forecasts it had served by each checkpoint: one scan, one conditional sum a checkpoint."""
    sums = [func.coalesce(func.sum(case((Prediction.created_at <= at, 1), else_=0)), 0) for at in checkpoints]
    rows = session.execute(
        select(Prediction.champion_version_id, *sums)
        .where(
            Prediction.tenant_id == tenant_id,
            Prediction.model_name == model_name,
            Prediction.champion_version_id.in_(list(champion_ids)),
            Prediction.served_role != "canary",
            Prediction.created_at <= checkpoints[-1],
        )
        .group_by(Prediction.champion_version_id)
    ).all()
    return {row[0]: [int(count) for count in row[1:]] for row in rows}


def _paired_errors(
    session: Session, tenant_id: str, model_name: str, candidate_ids: Sequence[str]
) -> dict[tuple[str, str], PairedErrors]:
    """MAE of champion and candidate on the requests both scored and whose outcome arrived, per (cand, champ)."""
    rows = session.execute(
        select(
            Prediction.candidate_version_id,
            Prediction.champion_version_id,
            func.count(),
            func.avg(func.abs(LearningEvent.actual - Prediction.champion_prediction)),
            func.avg(func.abs(LearningEvent.actual - Prediction.candidate_prediction)),
        )
        .join(Prediction, Prediction.id == LearningEvent.prediction_id)
        .where(
            LearningEvent.tenant_id == tenant_id,
            LearningEvent.actual.is_not(None),
            Prediction.tenant_id == tenant_id,
            Prediction.model_name == model_name,
            Prediction.candidate_version_id.in_(list(candidate_ids)),
            Prediction.champion_prediction.is_not(None),
            Prediction.candidate_prediction.is_not(None),
        )
        .group_by(Prediction.candidate_version_id, Prediction.champion_version_id)
    ).all()
    return {
        (candidate, champion): PairedErrors(
            n=int(n), champion_mae=float(champ_mae), candidate_mae=float(cand_mae)
        )
        for candidate, champion, n, champ_mae, cand_mae in rows
        if candidate is not None and champion is not None
    }


def _drift_latencies(
    session: Session, tenant_id: str, model_name: str, since: datetime, now: datetime
) -> list[Observation]:
    """Per alerting report: created - window start (the drifted data may have arrived as early as that)."""
    rows = session.execute(
        select(DriftReport.created_at, DriftReport.window_start).where(
            DriftReport.tenant_id == tenant_id,
            DriftReport.model_name == model_name,
            DriftReport.level == "alert",
            DriftReport.created_at >= since,
            DriftReport.created_at <= now,
        )
    ).all()
    return [
        Observation(at=as_utc(created), value=(as_utc(created) - as_utc(start)).total_seconds())
        for created, start in rows
    ]


def _guard_decisions(session: Session, tenant_id: str, since: datetime, now: datetime) -> list[datetime]:
    rows = session.scalars(
        select(Notification.created_at)
        .where(
            Notification.tenant_id == tenant_id,
            Notification.kind == GUARD_DECIDED_KIND,
            Notification.created_at >= since,
            Notification.created_at <= now,
        )
        .order_by(Notification.created_at)
    ).all()
    return [as_utc(at) for at in rows]

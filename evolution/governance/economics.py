"""What a tenant's model line earns and costs, and how close it runs to its service objectives.

The dashboard's Executive page calls :func:`executive_summary`. Everything here is read-only and answered by a
handful of aggregated, index-backed queries (no per-prediction rows come back to Python), so the page stays fast
when the predictions table is large.

Terms, once:

- A *promotion* is the first time a version became CHAMPION. Its *predecessor* is the version that was champion
  just before (absent for the line's first champion). A forced rollback reinstates an earlier champion; it is not
  a promotion, but the forecasts that version serves again still count towards its volume.
- *Error reduction* per forecast is the predecessor's MAE minus the new version's MAE on the same labelled
  requests: preferably the shadow/canary requests both versions scored, joined to the outcomes that arrived later;
  otherwise the offline validation's holdout MAEs (both versions scored the same held-out rows). Which one was used
  is reported as ``error_source``.
- *Volume* is the forecasts a version answered while champion (the predictions table). During a canary the
  candidate answers a small share; those forecasts are neither credited nor charged to anyone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.contracts import RolloutTiming
from evolution.drift.scanner import DRIFT_DETECTION_SLO_S
from evolution.lifecycle import ModelState, VersionView
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
from evolution.registry.service import ModelRegistryService
from evolution.registry.tenant_settings import Economics
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow

DEFAULT_MODEL_NAME = "yield"

CAPITALIZATION_INDEX_DEFINITION = """\
**Capitalization index** = 100 × cumulative value delivered ÷ cumulative cost of the model line, since its \
first champion.

- *Value delivered*: for every promotion, the forecast error it removed per forecast (the replaced version's \
mean absolute error minus the new version's, measured on the same labelled requests) × the tenant's value of one \
unit of error × the forecasts the new version served while champion. An improvement that could not be measured \
(the first champion has nothing to compare with) is credited zero.
- *Cost*: every training run of the model line, promoted or not, plus the serving cost of the forecasts the \
champions served.
- **100 = break-even**: the line has returned exactly what it cost. 250 means $2.50 back for every dollar spent; \
below 100 it has not yet paid for itself. *Capitalization* (USD) is value minus cost: the net value accumulated.

Conservative by construction: each version is credited only with its own improvement over the version it \
replaced, never with improvements it inherited, and unmeasured improvements count as zero."""

SLO_STATUS_RULE = (
    "ok: within the objective and below 75 % of it; at risk: at or above 75 % of the objective (for availability: "
    "75 % of the error budget of 0.1 % spent); breached: beyond the objective, by the same strict comparison "
    "the system enforces. The worst observation of the period decides."
)

AT_RISK_SHARE = 0.75
# Fewer labelled pairs than this make a noisy estimate; the holdout comparison is preferred then, when it exists.
MIN_PAIRED_OUTCOMES = 30
DEFAULT_SERIES_POINTS = 30
DEFAULT_SLO_PERIOD = timedelta(days=30)

# The objectives of the implementation plan, §6, taken from where the system enforces them.
DRIFT_LATENCY_OBJECTIVE_S = DRIFT_DETECTION_SLO_S
RETRAINING_DURATION_OBJECTIVE_S = float(RolloutTiming.model_fields["training_timeout_s"].default)
ROLLOUT_WINDOW_OBJECTIVE_S = float(RolloutTiming.model_fields["rollout_window_s"].default)
AVAILABILITY_OBJECTIVE = 0.999

# The workflow announces the guard's "promote" decision with this notification; what follows is a human's wait
# for approval, which is not part of the rollout window.
GUARD_DECIDED_KIND = "approval.requested"

SloStatus = Literal["ok", "at_risk", "breached", "unknown"]
ErrorSource = Literal["paired_outcomes", "validation_holdout", "none"]


# ------------------------------------------------------------------------------------------------------ models
class PromotionEconomics(BaseModel):
    version_id: str
    version: int
    promoted_at: datetime
    promoted_by: str
    predecessor_id: str | None
    predecessor: int | None
    currently_champion: bool
    holdout_mae: float | None = Field(description="The version's own holdout MAE at training time.")
    error_source: ErrorSource
    predecessor_mae: float | None
    new_mae: float | None
    labelled_requests: int = Field(description="How many labelled requests (or held-out rows) measured it.")
    error_reduction: float | None = Field(
        description="Predecessor MAE − new MAE, per forecast (target unit)."
    )
    volume: int = Field(description="Forecasts the version served while champion.")
    value_usd: float
    training_cost_usd: float
    serving_cost_usd: float
    cost_usd: float
    net_value_usd: float
    roi: float | None = Field(description="(value − cost) / cost; None when nothing was spent.")


class CapitalizationPoint(BaseModel):
    at: datetime
    value_usd: float
    cost_usd: float
    net_value_usd: float
    index: float | None


class Capitalization(BaseModel):
    definition: str = CAPITALIZATION_INDEX_DEFINITION
    value_usd: float
    training_cost_usd: float
    unpromoted_training_cost_usd: float = Field(description="Training runs of versions never promoted.")
    serving_cost_usd: float
    cost_usd: float
    net_value_usd: float = Field(description="The capitalization in USD: value delivered − cost.")
    index: float | None = Field(description="100 × value ÷ cost; None while nothing was spent.")
    series: list[CapitalizationPoint]


class QuotaUsage(BaseModel):
    month: str
    gpu_hours_used: float
    gpu_hours_quota: float
    gpu_hours_share: float | None
    budget_used_usd: float
    budget_cap_usd: float
    budget_share: float | None
    blocked_reason: str | None
    status: SloStatus


class SloRisk(BaseModel):
    name: str
    title: str
    objective: str
    objective_value: float
    unit: Literal["seconds", "ratio"]
    consequence: str
    observations: int
    breaches: int
    worst: float | None
    latest: float | None
    latest_at: datetime | None
    latest_in_progress: bool = Field(description="The latest observation is still running (an open canary).")
    status: SloStatus
    detail: str


class ExecutiveSummary(BaseModel):
    tenant_id: str
    model_name: str
    generated_at: datetime
    economics: Economics
    promotions: list[PromotionEconomics]
    capitalization: Capitalization
    quota: QuotaUsage
    slo_period_days: float
    slo_status_rule: str = SLO_STATUS_RULE
    slos: list[SloRisk]


# --------------------------------------------------------------------------------------------- pure helpers
def slo_status(value: float | None, objective: float) -> SloStatus:
    """For a "less than ``objective``" SLO: breached beyond it, at risk from 75 % of it, else ok."""
    if value is None:
        return "unknown"
    if value > objective:
        return "breached"
    if value >= AT_RISK_SHARE * objective:
        return "at_risk"
    return "ok"


def availability_status(availability: float | None, objective: float = AVAILABILITY_OBJECTIVE) -> SloStatus:
    """Judged on the error budget: unavailability against the 1 - objective the SLO allows."""
    if availability is None:
        return "unknown"
    return slo_status(1.0 - availability, 1.0 - objective)


def quota_status(share: float) -> SloStatus:
    """A quota is exhausted (retraining blocked) once fully used, at risk from 75 %."""
    if share >= 1.0:
        return "breached"
    return "at_risk" if share >= AT_RISK_SHARE else "ok"


def roi(value_usd: float, cost_usd: float) -> float | None:
    return (value_usd - cost_usd) / cost_usd if cost_usd > 0 else None


def capitalization_index(value_usd: float, cost_usd: float) -> float | None:
    return 100.0 * value_usd / cost_usd if cost_usd > 0 else None


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------------------- internal records
class _Transition(BaseModel):
    seq: int
    at: datetime
    actor: str
    version_id: str
    from_state: str | None
    to_state: str | None


class _Promotion(BaseModel):
    version_id: str
    predecessor_id: str | None
    at: datetime
    actor: str


class _Observation(BaseModel):
    at: datetime
    value: float
    in_progress: bool = False


class _Paired(BaseModel):
    n: int
    champion_mae: float
    candidate_mae: float


# ------------------------------------------------------------------------------------------------- queries
def _transitions(session: Session, tenant_id: str, version_ids: Sequence[str]) -> list[_Transition]:
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
        _Transition(seq=seq, at=as_utc(at), actor=actor, version_id=subject, from_state=src, to_state=dst)
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
) -> dict[tuple[str, str], _Paired]:
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
        (candidate, champion): _Paired(n=int(n), champion_mae=float(champ_mae), candidate_mae=float(cand_mae))
        for candidate, champion, n, champ_mae, cand_mae in rows
        if candidate is not None and champion is not None
    }


def _drift_latencies(
    session: Session, tenant_id: str, model_name: str, since: datetime, now: datetime
) -> list[_Observation]:
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
        _Observation(at=as_utc(created), value=(as_utc(created) - as_utc(start)).total_seconds())
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


# ------------------------------------------------------------------------------------------- derivations
def _promotions(transitions: list[_Transition]) -> list[_Promotion]:
    """The first arrival of each version at CHAMPION, with the champion it replaced (rollbacks included)."""
    promotions: list[_Promotion] = []
    seen: set[str] = set()
    last_champion: str | None = None
    for t in transitions:
        if t.to_state != ModelState.CHAMPION.value:
            continue
        if t.version_id not in seen:
            promotions.append(
                _Promotion(version_id=t.version_id, predecessor_id=last_champion, at=t.at, actor=t.actor)
            )
            seen.add(t.version_id)
        last_champion = t.version_id
    return promotions


def _canary_windows(
    transitions: list[_Transition], guard_decisions: list[datetime], since: datetime, now: datetime
) -> list[_Observation]:
    """Per candidate: from entering CANARY to the guard's decision (or to leaving CANARY); open ones run to now."""
    entered: dict[str, datetime] = {}
    spans: list[tuple[datetime, datetime | None]] = []
    for t in transitions:
        if t.to_state == ModelState.CANARY.value:
            entered[t.version_id] = t.at
        elif t.from_state == ModelState.CANARY.value and t.version_id in entered:
            spans.append((entered.pop(t.version_id), t.at))
    spans.extend((start, None) for start in entered.values())
    observations: list[_Observation] = []
    for start, left in spans:
        limit = left or now
        decided = next((at for at in guard_decisions if start <= at <= limit), None)
        end = decided or left
        if (end or now) < since:
            continue
        observations.append(
            _Observation(at=end or now, value=((end or now) - start).total_seconds(), in_progress=end is None)
        )
    return observations


def _checkpoints(start: datetime, now: datetime, marks: list[datetime], points: int) -> list[datetime]:
    """Evenly spaced instants from ``start`` to ``now`` (both included), plus ``marks`` (the promotions)."""
    if start >= now:
        return [now]
    step = (now - start) / max(points - 1, 1)
    instants = {start + step * k for k in range(max(points - 1, 1))} | {now} | set(marks)
    return sorted(at for at in instants if start <= at <= now)


def _error_reduction(
    version: VersionView, predecessor_id: str | None, paired: dict[tuple[str, str], _Paired]
) -> tuple[ErrorSource, float | None, float | None, int]:
    """(source, predecessor MAE, new MAE, labelled requests): live pairs first, then the validation holdout."""
    if predecessor_id is None:
        return "none", None, None, 0
    pairs = paired.get((version.id, predecessor_id))
    if pairs is not None and pairs.n >= MIN_PAIRED_OUTCOMES:
        return "paired_outcomes", pairs.champion_mae, pairs.candidate_mae, pairs.n
    validation = version.metrics.get("validation") or {}
    champion_mae, candidate_mae = validation.get("champion_mae"), validation.get("candidate_mae")
    if isinstance(champion_mae, int | float) and isinstance(candidate_mae, int | float):
        return "validation_holdout", float(champion_mae), float(candidate_mae), int(validation.get("n") or 0)
    if pairs is not None and pairs.n > 0:  # a small sample beats none; labelled_requests says how small
        return "paired_outcomes", pairs.champion_mae, pairs.candidate_mae, pairs.n
    return "none", None, None, 0


def _risk(
    name: str,
    title: str,
    objective: float,
    consequence: str,
    observations: list[_Observation],
    what: str,
    period_days: float,
) -> SloRisk:
    worst = max((o.value for o in observations), default=None)
    latest = max(observations, key=lambda o: o.at, default=None)
    breaches = sum(1 for o in observations if o.value > objective)
    status: SloStatus = slo_status(worst, objective) if observations else "ok"
    if observations:
        assert worst is not None and latest is not None
        detail = (
            f"worst {_hours(worst)}, latest {_hours(latest.value)}"
            f"{' (still running)' if latest.in_progress else ''} over {len(observations)} {what} in the last "
            f"{period_days:g} days; {breaches} beyond the objective"
        )
    else:
        detail = f"no {what} in the last {period_days:g} days"
    return SloRisk(
        name=name,
        title=title,
        objective=f"< {_hours(objective)}",
        objective_value=objective,
        unit="seconds",
        consequence=consequence,
        observations=len(observations),
        breaches=breaches,
        worst=worst,
        latest=latest.value if latest else None,
        latest_at=latest.at if latest else None,
        latest_in_progress=bool(latest and latest.in_progress),
        status=status,
        detail=detail,
    )


def _availability_risk(availability: float | None) -> SloRisk:
    status = availability_status(availability)
    if availability is None:
        detail = "unknown: the serving process's availability was not available"
    else:
        budget = 1.0 - AVAILABILITY_OBJECTIVE
        spent = (1.0 - availability) / budget
        detail = f"{availability * 100:.3f} % answered; {spent * 100:.0f} % of the 0.1 % error budget spent"
    return SloRisk(
        name="inference_availability",
        title="Inference availability",
        objective=f"≥ {AVAILABILITY_OBJECTIVE * 100:g} %",
        objective_value=AVAILABILITY_OBJECTIVE,
        unit="ratio",
        consequence="P1 incident",
        observations=0 if availability is None else 1,
        breaches=1 if status == "breached" else 0,
        worst=availability,
        latest=availability,
        latest_at=None,
        latest_in_progress=False,
        status=status,
        detail=detail,
    )


# ---------------------------------------------------------------------------------------------- the summary
def executive_summary(
    factory: sessionmaker[Session],
    registry: ModelRegistryService,
    quota: QuotaManager,
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

    ``availability`` is the serving process's measured share of requests answered (0..1), or None when unknown.
    Any role that may view the tenant may call it.
    """
    authorize(principal, Action.VIEW, tenant_id)
    now = as_utc(now) if now else utcnow()
    since = now - slo_period
    economics = registry.tenant_settings(principal, tenant_id).economics
    versions = {v.id: v for v in registry.list_versions(principal, tenant_id, model_name)}
    quota_now = quota.status(principal, tenant_id, now)

    with reading(factory, tenant_id) as session:
        ids = list(versions)
        # Facts recorded after ``now`` (a summary as of an earlier moment) are not part of the picture.
        transitions = [t for t in _transitions(session, tenant_id, ids) if t.at <= now] if ids else []
        runs = _training_runs(session, tenant_id, ids, now) if ids else []
        promotions = _promotions(transitions)
        promoted_ids = [p.version_id for p in promotions]
        checkpoints = (
            _checkpoints(promotions[0].at, now, [p.at for p in promotions], series_points)
            if promotions
            else []
        )
        volumes = (
            _champion_volumes(session, tenant_id, model_name, promoted_ids, checkpoints) if promotions else {}
        )
        paired = _paired_errors(session, tenant_id, model_name, promoted_ids) if promotions else {}
        drift = _drift_latencies(session, tenant_id, model_name, since, now)
        canary_starts = [t.at for t in transitions if t.to_state == ModelState.CANARY.value]
        decisions = _guard_decisions(session, tenant_id, min(canary_starts), now) if canary_starts else []

    training_cost: dict[str, float] = defaultdict(float)
    for version_id, _, _, cost in runs:
        training_cost[version_id] += cost
    per_unit, per_1k = economics.value_per_unit_error_usd, economics.serving_cost_per_1k_usd

    rows: list[PromotionEconomics] = []
    reduction_of: dict[str, float] = {}
    for promotion in promotions:
        version = versions[promotion.version_id]
        source, old_mae, new_mae, n = _error_reduction(version, promotion.predecessor_id, paired)
        reduction = old_mae - new_mae if old_mae is not None and new_mae is not None else None
        reduction_of[version.id] = reduction or 0.0
        volume = volumes.get(version.id, [0])[-1]
        value = (reduction or 0.0) * per_unit * volume
        train, serve = training_cost[version.id], volume / 1000.0 * per_1k
        predecessor = versions.get(promotion.predecessor_id) if promotion.predecessor_id else None
        rows.append(
            PromotionEconomics(
                version_id=version.id,
                version=version.number,
                promoted_at=promotion.at,
                promoted_by=promotion.actor,
                predecessor_id=promotion.predecessor_id,
                predecessor=predecessor.number if predecessor else None,
                currently_champion=version.state == ModelState.CHAMPION,
                holdout_mae=version.metrics.get("holdout_mae"),
                error_source=source,
                predecessor_mae=old_mae,
                new_mae=new_mae,
                labelled_requests=n,
                error_reduction=reduction,
                volume=volume,
                value_usd=value,
                training_cost_usd=train,
                serving_cost_usd=serve,
                cost_usd=train + serve,
                net_value_usd=value - train - serve,
                roi=roi(value, train + serve),
            )
        )

    series: list[CapitalizationPoint] = []
    for i, at in enumerate(checkpoints):
        served = {vid: counts[i] for vid, counts in volumes.items()}
        value = sum(reduction_of.get(vid, 0.0) * per_unit * count for vid, count in served.items())
        cost = sum(c for _, started, _, c in runs if started <= at) + sum(served.values()) / 1000.0 * per_1k
        series.append(
            CapitalizationPoint(
                at=at,
                value_usd=value,
                cost_usd=cost,
                net_value_usd=value - cost,
                index=capitalization_index(value, cost),
            )
        )
    promoted = set(promoted_ids)
    total_value = sum(r.value_usd for r in rows)
    total_training = sum(cost for _, _, _, cost in runs)
    total_serving = sum(r.serving_cost_usd for r in rows)
    total_cost = total_training + total_serving
    capitalization = Capitalization(
        value_usd=total_value,
        training_cost_usd=total_training,
        unpromoted_training_cost_usd=sum(c for vid, c in training_cost.items() if vid not in promoted),
        serving_cost_usd=total_serving,
        cost_usd=total_cost,
        net_value_usd=total_value - total_cost,
        index=capitalization_index(total_value, total_cost),
        series=series,
    )

    gpu_share = (
        quota_now.gpu_hours_used / quota_now.gpu_hours_quota if quota_now.gpu_hours_quota > 0 else None
    )
    budget_share = quota_now.cost_usd / quota_now.budget_cap_usd if quota_now.budget_cap_usd > 0 else None
    usage = QuotaUsage(
        month=quota_now.month,
        gpu_hours_used=quota_now.gpu_hours_used,
        gpu_hours_quota=quota_now.gpu_hours_quota,
        gpu_hours_share=gpu_share,
        budget_used_usd=quota_now.cost_usd,
        budget_cap_usd=quota_now.budget_cap_usd,
        budget_share=budget_share,
        blocked_reason=quota_now.blocked_reason,
        status=quota_status(max(s if s is not None else 1.0 for s in (gpu_share, budget_share))),
    )

    days = slo_period.total_seconds() / 86400
    recent_runs = [
        _Observation(at=started, value=duration) for _, started, duration, _ in runs if started >= since
    ]
    slos = [
        _risk(
            "drift_detection_latency",
            "Drift detection latency",
            DRIFT_LATENCY_OBJECTIVE_S,
            "warning alert",
            drift,
            "drift alerts",
            days,
        ),
        _risk(
            "retraining_duration",
            "Retraining duration",
            RETRAINING_DURATION_OBJECTIVE_S,
            "job cancelled + alert",
            recent_runs,
            "training runs",
            days,
        ),
        _risk(
            "rollout_window",
            "Rollout window",
            ROLLOUT_WINDOW_OBJECTIVE_S,
            "automatic rollback",
            _canary_windows(transitions, decisions, since, now),
            "canaries",
            days,
        ),
        _availability_risk(availability),
    ]
    return ExecutiveSummary(
        tenant_id=tenant_id,
        model_name=model_name,
        generated_at=now,
        economics=economics,
        promotions=rows,
        capitalization=capitalization,
        quota=usage,
        slo_period_days=days,
        slos=slos,
    )


__all__ = [
    "AT_RISK_SHARE",
    "AVAILABILITY_OBJECTIVE",
    "CAPITALIZATION_INDEX_DEFINITION",
    "DRIFT_LATENCY_OBJECTIVE_S",
    "MIN_PAIRED_OUTCOMES",
    "RETRAINING_DURATION_OBJECTIVE_S",
    "ROLLOUT_WINDOW_OBJECTIVE_S",
    "SLO_STATUS_RULE",
    "Capitalization",
    "CapitalizationPoint",
    "ExecutiveSummary",
    "PromotionEconomics",
    "QuotaUsage",
    "SloRisk",
    "availability_status",
    "capitalization_index",
    "executive_summary",
    "quota_status",
    "roi",
    "slo_status",
]

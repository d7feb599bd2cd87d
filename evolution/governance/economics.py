"""What a tenant's model line earns and costs, and how close it runs to its service objectives.

The terms, the figures and the pure math: :func:`summarize` derives the Executive page's figures from the facts
:class:`~evolution.governance.economics_queries.EconomicsService` reads (a handful of aggregated, index-backed
queries, so the page stays fast when the predictions table is large). Nothing here does I/O. It runs past 450 lines
because the definitions shown on the page, the models and the derivations of one summary read best side by side.

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
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from evolution.contracts import RolloutTiming
from evolution.drift.scanner import DRIFT_DETECTION_SLO_S
from evolution.lifecycle import ModelState, VersionView
from evolution.registry.quota import QuotaStatus
from evolution.registry.tenant_settings import Economics

DEFAULT_MODEL_NAME = "yield"

CAPITALIZATION_INDEX_DEFINITION = """\
**Capitalization index** = 100 × value delivered ÷ cost of the model line, over the period from its first \
champion to now (both dates are stated beside the figure).

- *Value delivered*: for every promotion, the forecast error it removed per forecast (the replaced version's \
mean absolute error minus the new version's, measured on the same labelled requests) × the tenant's value of one \
unit of error × the forecasts the new version served while champion. An improvement that could not be measured \
(the first champion has nothing to compare with) is credited zero.
- *Cost*: every training run of the model line, promoted or not (what the monthly budget is charged), plus the \
serving cost of the forecasts the champions served (the tenant's price per 1,000; not charged to the budget).
- **100 = break-even**: the line has returned exactly what it cost. 250 means $2.50 back for every dollar spent; \
below 100 it has not yet paid for itself. *Capitalization* (USD) is value minus cost: the net value accumulated.

Conservative by construction: each version is credited only with its own improvement over the version it \
replaced, never with improvements it inherited, and unmeasured improvements count as zero. A worked example: \
docs/economics.md."""

ROI_DEFINITION = (
    "ROI of a promotion = (its value − its cost) ÷ its cost, as a percentage, over the time it has been champion: "
    "its value as above; its cost = its own training runs + the serving cost of the forecasts it served. "
    "0 % = break-even; 100 % = it returned twice what it cost."
)

BUDGET_DEFINITION = (
    "The monthly budget is charged for training only: each run's GPU-hours (a CPU-only run: a quarter of its "
    "wall hours, by default) × the price per GPU-hour, for runs started this calendar month (UTC). Serving costs "
    "are counted in the capitalization, not against the budget."
)

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

    @property
    def roi_percent(self) -> float | None:
        return None if self.roi is None else 100.0 * self.roi


class CapitalizationPoint(BaseModel):
    at: datetime
    value_usd: float
    cost_usd: float
    net_value_usd: float
    index: float | None


class Capitalization(BaseModel):
    definition: str = CAPITALIZATION_INDEX_DEFINITION
    period_start: datetime | None = Field(
        default=None, description="The line's first promotion: where value and cost start to count."
    )
    period_end: datetime | None = Field(default=None, description="The moment of the summary.")
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
    definition: str = BUDGET_DEFINITION


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


# ------------------------------------------------------------------------------ records the queries fill
class LineTransition(BaseModel):
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


class Observation(BaseModel):
    at: datetime
    value: float
    in_progress: bool = False


class PairedErrors(BaseModel):
    n: int
    champion_mae: float
    candidate_mae: float


# ------------------------------------------------------------------------------------------- derivations
def promotions_of(transitions: list[LineTransition]) -> list[_Promotion]:
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
    transitions: list[LineTransition], guard_decisions: list[datetime], since: datetime, now: datetime
) -> list[Observation]:
    """Per candidate: from entering CANARY to the guard's decision (or to leaving CANARY); open ones run to now."""
    entered: dict[str, datetime] = {}
    spans: list[tuple[datetime, datetime | None]] = []
    for t in transitions:
        if t.to_state == ModelState.CANARY.value:
            entered[t.version_id] = t.at
        elif t.from_state == ModelState.CANARY.value and t.version_id in entered:
            spans.append((entered.pop(t.version_id), t.at))
    spans.extend((start, None) for start in entered.values())
    observations: list[Observation] = []
    for start, left in spans:
        limit = left or now
        decided = next((at for at in guard_decisions if start <= at <= limit), None)
        end = decided or left
        if (end or now) < since:
            continue
        observations.append(
            Observation(at=end or now, value=((end or now) - start).total_seconds(), in_progress=end is None)
        )
    return observations


def checkpoints_at(start: datetime, now: datetime, marks: list[datetime], points: int) -> list[datetime]:
    """Evenly spaced instants from ``start`` to ``now`` (both included), plus ``marks`` (the promotions)."""
    if start >= now:
        return [now]
    step = (now - start) / max(points - 1, 1)
    instants = {start + step * k for k in range(max(points - 1, 1))} | {now} | set(marks)
    return sorted(at for at in instants if start <= at <= now)


def _error_reduction(
    version: VersionView, predecessor_id: str | None, paired: dict[tuple[str, str], PairedErrors]
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
    observations: list[Observation],
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
class LineFacts(BaseModel):
    """What the queries read about one model line: everything :func:`summarize` derives the figures from."""

    versions: dict[str, VersionView]
    transitions: list[LineTransition]
    runs: list[tuple[str, datetime, float, float]]
    checkpoints: list[datetime]
    volumes: dict[str, list[int]]
    paired: dict[tuple[str, str], PairedErrors]
    drift: list[Observation]
    decisions: list[datetime]


def summarize(
    facts: LineFacts,
    *,
    tenant_id: str,
    model_name: str,
    now: datetime,
    economics: Economics,
    quota_now: QuotaStatus,
    availability: float | None,
    slo_period: timedelta,
) -> ExecutiveSummary:
    """ROI per promotion, the capitalization index with its time series, quota use and SLA-breach risk (pure)."""
    since = now - slo_period
    versions, transitions, runs, volumes = facts.versions, facts.transitions, facts.runs, facts.volumes
    promotions = promotions_of(transitions)
    promoted_ids = [p.version_id for p in promotions]
    training_cost: dict[str, float] = defaultdict(float)
    for version_id, _, _, cost in runs:
        training_cost[version_id] += cost
    per_unit, per_1k = economics.value_per_unit_error_usd, economics.serving_cost_per_1k_usd

    rows: list[PromotionEconomics] = []
    reduction_of: dict[str, float] = {}
    for promotion in promotions:
        version = versions[promotion.version_id]
        source, old_mae, new_mae, n = _error_reduction(version, promotion.predecessor_id, facts.paired)
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
    for i, at in enumerate(facts.checkpoints):
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
        period_start=promotions[0].at if promotions else None,
        period_end=now,
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
        Observation(at=started, value=duration) for _, started, duration, _ in runs if started >= since
    ]
    slos = [
        _risk(
            "drift_detection_latency",
            "Drift detection latency",
            DRIFT_LATENCY_OBJECTIVE_S,
            "warning alert",
            facts.drift,
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
            _canary_windows(transitions, facts.decisions, since, now),
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
    "BUDGET_DEFINITION",
    "CAPITALIZATION_INDEX_DEFINITION",
    "DRIFT_LATENCY_OBJECTIVE_S",
    "MIN_PAIRED_OUTCOMES",
    "RETRAINING_DURATION_OBJECTIVE_S",
    "ROI_DEFINITION",
    "ROLLOUT_WINDOW_OBJECTIVE_S",
    "SLO_STATUS_RULE",
    "Capitalization",
    "CapitalizationPoint",
    "ExecutiveSummary",
    "LineFacts",
    "PromotionEconomics",
    "QuotaUsage",
    "SloRisk",
    "availability_status",
    "capitalization_index",
    "quota_status",
    "roi",
    "slo_status",
    "summarize",
]

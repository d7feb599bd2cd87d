"""The Executive figures on a constructed tenant, on SQLite and on a real PostgreSQL.

The tenant's history is built through the real services with a controlled clock (so that audit times are known):
three champions in a row — the first with nothing to compare with, the second measured on paired canary
predictions joined to signed outcomes, the third on its validation holdout — plus a failed training, served
predictions, drift reports and guard notifications. Every figure is then checked against arithmetic done by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from evolution.data.outcomes import PredictionRecord
from evolution.data.sources import create_source_key, records_to_events
from evolution.errors import PermissionDenied
from evolution.governance.economics import (
    CAPITALIZATION_INDEX_DEFINITION,
    DRIFT_LATENCY_OBJECTIVE_S,
    RETRAINING_DURATION_OBJECTIVE_S,
    ROLLOUT_WINDOW_OBJECTIVE_S,
    ExecutiveSummary,
    SloRisk,
    availability_status,
    quota_status,
)
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import transaction
from evolution.registry.schema import DriftReport, Notification
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal, Role
from tests.support.models import install_model
from tests.support.postgres import create_database

S = ModelState
TENANT = "acme"
ADMIN = Principal.for_tenant("root", Role.ADMIN, "*")
MANAGER = Principal.for_tenant("maria", Role.MANAGER, "*")
VIEWER = Principal.for_tenant("ana", Role.VIEWER, TENANT)
BASE = datetime(2026, 3, 2, tzinfo=UTC)  # the first champion is promoted at BASE
NOW = datetime(2026, 3, 20, tzinfo=UTC)
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
VALUE_PER_UNIT, SERVING_PER_1K = 20.0, 0.5


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def rid() -> str:
    return uuid.uuid4().hex


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def open_services(request: pytest.FixtureRequest, home: Path) -> Services:
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'registry.db'}"
    else:
        url = create_database(request.getfixturevalue("pg_server"))
    return build_services(Settings(home=home, database_url=url))


@pytest.fixture(params=BACKENDS)
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    svc = open_services(request, tmp_path / "home")
    yield svc
    svc.close()


def with_clock(services: Services, at: datetime) -> Clock:
    """The registry (also the one install_model uses) stamps audit rows with the returned clock."""
    tick = Clock(at)
    services.__dict__["registry"] = ModelRegistryService(services.factory, clock=tick)
    return tick


@pytest.fixture
def clock(services: Services) -> Clock:
    return with_clock(services, BASE)


def walk(
    services: Services, tenant: str, *states: ModelState, metrics: dict[str, Any] | None = None
) -> VersionView:
    system = Principal.system(tenant)
    version = services.registry.register_version(system, tenant, "yield", rid())
    for state in states:
        changes = VersionChanges(metrics=metrics) if state == S.VALIDATED and metrics else None
        version = services.registry.transition(
            system,
            TransitionRequest(
                version_id=version.id,
                to_state=state,
                expected_version=version.lock_version,
                request_id=rid(),
                changes=changes,
            ),
        ).version
    return version


def promote(services: Services, version: VersionView) -> VersionView:
    return services.registry.promote(MANAGER, version.id, version.lock_version, rid()).version


def charge(
    services: Services, tenant: str, version: VersionView, started: datetime, seconds: float, gpus: int
) -> None:
    services.quota.charge(
        Principal.system(tenant), tenant, f"run-{rid()}", version.id, started, seconds, "succeeded", gpus
    )


def serve(
    services: Services,
    version: VersionView,
    count: int,
    start: datetime,
    every: timedelta,
    *,
    candidate: VersionView | None = None,
    role: str = "champion",
    champion_prediction: float = 10.0,
    candidate_prediction: float | None = None,
) -> list[str]:
    records = [
        PredictionRecord(
            id=f"p-{rid()}",
            tenant_id=version.tenant_id,
            model_name="yield",
            request_id=f"q-{rid()}",
            served_role=role,
            champion_version_id=version.id,
            champion_prediction=champion_prediction,
            candidate_version_id=candidate.id if candidate else None,
            candidate_prediction=candidate_prediction,
            served_prediction=candidate_prediction
            if role == "canary" and candidate_prediction is not None
            else champion_prediction,
            latency_ms=3.0,
            created_at=start + every * i,
        )
        for i in range(count)
    ]
    services.outcomes.record_predictions(records)
    return [r.id for r in records]


def record_outcomes(
    services: Services, tenant: str, prediction_ids: list[str], actual: float | None, prefix: str
) -> None:
    """The outcomes arrive as learning events signed by a registered field source."""
    key_id, public_pem, path = create_source_key(services.settings.keys_dir, tenant, f"sensors-{prefix}")
    services.events.register_source_key(ADMIN, tenant, key_id, public_pem)
    records = [
        {"event_time": BASE + 3 * DAY, "ndvi": 0.61, "prediction_id": pid, "actual": actual}
        for pid in prediction_ids
    ]
    events = records_to_events(
        records, tenant, key_id, path.read_bytes(), target="actual", request_prefix=prefix
    )
    # The scenario is fixed in early 2026 and replayed whenever the test runs: no expiry for its events.
    summary = services.events.ingest_objects(
        ADMIN, tenant, list(events), "test", max_age=timedelta(days=36500)
    )
    assert summary.accepted == len(prediction_ids), summary


def drift_report(
    factory: sessionmaker[Session], tenant: str, created: datetime, latency: timedelta, level: str = "alert"
) -> None:
    with transaction(factory) as session:
        session.add(
            DriftReport(
                id=f"dr-{rid()[:20]}",
                tenant_id=tenant,
                model_name="yield",
                baseline_version_id="v-baseline",
                window_start=created - latency,
                window_end=created - latency + HOUR,
                level=level,
                report="{}",
                report_digest="0" * 64,
                signature={},
                created_at=created,
            )
        )


def guard_decided(factory: sessionmaker[Session], tenant: str, at: datetime) -> None:
    """What the workflow's notify activity writes when the guard says "promote" and approval is awaited."""
    with transaction(factory) as session:
        session.add(
            Notification(
                tenant_id=tenant,
                severity="info",
                kind="approval.requested",
                subject="Candidate passed the canary; approval needed",
                body={},
                created_at=at,
            )
        )


def slo(summary: ExecutiveSummary, name: str) -> SloRisk:
    return next(s for s in summary.slos if s.name == name)


# ------------------------------------------------------------------------------------------ the tenant
@dataclass
class Line:
    services: Services
    versions: dict[str, VersionView]


@pytest.fixture(scope="module", params=BACKENDS)
def acme(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """Built once per backend (the tests only read it)."""
    work = tmp_path_factory.mktemp("acme")
    services = open_services(request, work / "home")
    yield Line(services, build_line(services, with_clock(services, BASE), work))
    services.close()


def build_line(services: Services, clock: Clock, tmp_path: Path) -> dict[str, VersionView]:
    """Three promotions, one failed training, served predictions, outcomes, drift reports and notifications."""
    services.tenants.ensure_tenant(ADMIN, TENANT, gpu_hours_quota=7.0, budget_cap_usd=50.0)
    services.tenants.configure_tenant(
        ADMIN,
        TENANT,
        {
            "economics": {
                "value_per_unit_error_usd": VALUE_PER_UNIT,
                "serving_cost_per_1k_usd": SERVING_PER_1K,
            }
        },
    )
    # February: a bootstrap training that failed (1 GPU-hour, $2.50): a cost of the line, not of this month.
    clock.at = datetime(2026, 2, 20, tzinfo=UTC)
    failed = walk(services, TENANT, S.TRAINING, S.FAILED)
    charge(services, TENANT, failed, clock.at, 3600.0, gpus=1)

    # v1: the first champion at BASE ($2.50 of training), with nothing to compare against.
    clock.at = BASE
    v1 = install_model(services, TENANT, tmp_path, S.CHAMPION, seed=1)
    charge(services, TENANT, v1, BASE - HOUR, 3600.0, gpus=1)
    serve(services, v1, 3000, BASE + DAY, 20 * timedelta(seconds=1))

    # v2: canary from BASE+2d; paired requests |12 - 10| = 2.0 for v1 and |12 - 10.5| = 1.5 for v2.
    clock.at = BASE + 2 * DAY
    v2 = install_model(services, TENANT, tmp_path, S.CANARY, seed=2)
    charge(services, TENANT, v2, BASE + 2 * DAY - 3 * HOUR, 7200.0, gpus=2)  # 4 GPU-hours, $10
    paired_start = BASE + 2 * DAY + 5 * MINUTE
    shadow = serve(
        services, v1, 20, paired_start, MINUTE, candidate=v2, role="shadow", candidate_prediction=10.5
    )
    canary = serve(
        services, v1, 20, paired_start, MINUTE, candidate=v2, role="canary", candidate_prediction=10.5
    )
    record_outcomes(services, TENANT, shadow + canary, 12.0, "outcome")
    record_outcomes(services, TENANT, shadow[:5], None, "unlabelled")  # no actual: not a pair
    guard_decided(services.factory, TENANT, BASE + 2 * DAY + 20 * MINUTE)
    clock.at = BASE + 2 * DAY + 3 * HOUR  # the manager approves three hours after the guard's decision
    v2 = promote(services, v2)
    serve(services, v2, 5000, BASE + 3 * DAY, MINUTE)

    # v3: no live pairs; its validation compared it with v2 on 200 held-out rows (1.5 vs 1.25).
    clock.at = BASE + 9 * DAY
    validation = {"candidate_mae": 1.25, "champion_mae": 1.5, "n": 200, "passed": True}
    v3 = walk(
        services,
        TENANT,
        S.TRAINING,
        S.VALIDATED,
        S.SHADOW,
        S.CANARY,
        metrics={"holdout_mae": 1.3, "validation": validation},
    )
    charge(services, TENANT, v3, BASE + 9 * DAY - HOUR, 1800.0, gpus=1)  # 0.5 GPU-hours, $1.25
    clock.at = BASE + 9 * DAY + 20 * MINUTE
    v3 = promote(services, v3)
    serve(services, v3, 2000, BASE + 10 * DAY, MINUTE)
    serve(services, v3, 7, NOW + DAY, MINUTE)  # after "now": not counted

    # v4: a canary still open 50 minutes before now.
    clock.at = NOW - 50 * MINUTE
    v4 = walk(services, TENANT, S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)

    # Drift alerts: 5 h late at BASE+1d, 1 h late at BASE+8d; a warning and an old alert do not count.
    drift_report(services.factory, TENANT, BASE + DAY, 5 * HOUR)
    drift_report(services.factory, TENANT, BASE + 8 * DAY, HOUR)
    drift_report(services.factory, TENANT, BASE + 4 * DAY, 10 * HOUR, level="warn")
    drift_report(services.factory, TENANT, datetime(2026, 1, 5, tzinfo=UTC), 10 * HOUR)
    return {"failed": failed, "v1": v1, "v2": v2, "v3": v3, "v4": v4}


def summarize(services: Services, principal: Principal = VIEWER, **kwargs: Any) -> ExecutiveSummary:
    return services.economics.executive_summary(principal, TENANT, now=NOW, **kwargs)


# ------------------------------------------------------------------------------------------------ tests
def test_each_promotion_is_valued_on_its_own_error_reduction_volume_and_costs(acme: Line) -> None:
    summary = summarize(acme.services, availability=0.9995)
    first, second, third = summary.promotions
    assert [p.version_id for p in summary.promotions] == [
        acme.versions["v1"].id,
        acme.versions["v2"].id,
        acme.versions["v3"].id,
    ]
    assert (first.predecessor_id, second.predecessor_id, third.predecessor_id) == (
        None,
        acme.versions["v1"].id,
        acme.versions["v2"].id,
    )
    assert (second.promoted_at, second.promoted_by) == (BASE + 2 * DAY + 3 * HOUR, "maria")
    assert [p.currently_champion for p in summary.promotions] == [False, False, True]

    # The first champion: nothing measured, so no value; 3000 served + 20 shadow requests it answered.
    assert (first.error_source, first.error_reduction, first.value_usd) == ("none", None, 0.0)
    assert first.volume == 3020
    assert first.training_cost_usd == pytest.approx(2.5)
    assert first.serving_cost_usd == pytest.approx(3020 / 1000 * SERVING_PER_1K)
    assert first.roi == pytest.approx(-1.0)

    # v2 on 40 labelled pairs (the 20 canary-served requests count as pairs, not as anyone's volume).
    assert (second.error_source, second.labelled_requests) == ("paired_outcomes", 40)
    assert (second.predecessor_mae, second.new_mae, second.error_reduction) == pytest.approx((2.0, 1.5, 0.5))
    assert second.volume == 5000
    assert second.value_usd == pytest.approx(0.5 * VALUE_PER_UNIT * 5000)  # 50,000
    assert second.cost_usd == pytest.approx(10.0 + 5000 / 1000 * SERVING_PER_1K)  # 12.50
    assert second.net_value_usd == pytest.approx(50_000 - 12.5)
    assert second.roi == pytest.approx((50_000 - 12.5) / 12.5)

    # v3 falls back to its validation holdout; the 7 forecasts after "now" are not counted.
    assert (third.error_source, third.labelled_requests, third.holdout_mae) == (
        "validation_holdout",
        200,
        1.3,
    )
    assert third.error_reduction == pytest.approx(0.25)
    assert third.volume == 2000
    assert third.value_usd == pytest.approx(0.25 * VALUE_PER_UNIT * 2000)  # 10,000
    assert third.cost_usd == pytest.approx(1.25 + 1.0)
    assert third.roi == pytest.approx((10_000 - 2.25) / 2.25)


def test_capitalization_counts_every_training_dollar_and_its_series_ends_at_the_totals(acme: Line) -> None:
    cap = summarize(acme.services).capitalization
    training = 2.5 + 2.5 + 10.0 + 1.25  # the failed February run included
    serving = (3020 + 5000 + 2000) / 1000 * SERVING_PER_1K
    assert cap.definition == CAPITALIZATION_INDEX_DEFINITION and "100 = break-even" in cap.definition
    assert cap.value_usd == pytest.approx(60_000.0)
    assert cap.training_cost_usd == pytest.approx(training)
    assert cap.unpromoted_training_cost_usd == pytest.approx(2.5)
    assert cap.serving_cost_usd == pytest.approx(serving)
    assert cap.net_value_usd == pytest.approx(60_000.0 - training - serving)
    assert cap.index == pytest.approx(100 * 60_000.0 / (training + serving))

    points = {p.at: p for p in cap.series}
    assert cap.series[0].at == BASE and cap.series[-1].at == NOW
    assert [p.at for p in cap.series] == sorted(points)
    # At the first promotion: two runs paid for, nothing earned yet.
    assert (cap.series[0].value_usd, cap.series[0].cost_usd, cap.series[0].index) == pytest.approx((0, 5, 0))
    # When v3 is promoted: v2 has served all 5000 forecasts; v3's run (an hour earlier) is paid for.
    at_v3 = points[BASE + 9 * DAY + 20 * MINUTE]
    assert at_v3.value_usd == pytest.approx(50_000.0)
    assert at_v3.cost_usd == pytest.approx(training + (3020 + 5000) / 1000 * SERVING_PER_1K)
    assert at_v3.index == pytest.approx(100 * at_v3.value_usd / at_v3.cost_usd)
    last = cap.series[-1]
    assert (last.value_usd, last.cost_usd, last.net_value_usd) == pytest.approx(
        (cap.value_usd, cap.cost_usd, cap.net_value_usd)
    )
    values = [p.value_usd for p in cap.series]
    costs = [p.cost_usd for p in cap.series]
    assert values == sorted(values) and costs == sorted(costs)


def test_quota_figures_are_this_months_runs_against_the_tenants_limits(acme: Line) -> None:
    quota = summarize(acme.services).quota
    assert quota.month == "2026-03"
    assert quota.gpu_hours_used == pytest.approx(1.0 + 4.0 + 0.5)  # February's run is not this month's
    assert quota.budget_used_usd == pytest.approx(2.5 + 10.0 + 1.25)
    assert (quota.gpu_hours_quota, quota.budget_cap_usd) == (7.0, 50.0)
    assert quota.gpu_hours_share == pytest.approx(5.5 / 7.0)
    assert quota.budget_share == pytest.approx(13.75 / 50.0)
    assert (quota.status, quota.blocked_reason) == ("at_risk", None)  # 79 % of the GPU-hours


def test_slo_panel_judges_the_worst_of_the_period_and_excludes_the_wait_for_approval(acme: Line) -> None:
    summary = summarize(acme.services, availability=0.9995)
    drift = slo(summary, "drift_detection_latency")
    assert (drift.observations, drift.breaches, drift.status) == (2, 1, "breached")
    assert (drift.worst, drift.latest) == (5 * 3600.0, 3600.0)

    training = slo(summary, "retraining_duration")
    assert (training.observations, training.worst, training.latest, training.status) == (
        4,
        7200.0,
        1800.0,
        "ok",
    )

    # v1 0 s, v2 20 min (its guard decided then; the 3 h until approval are not rollout), v3 20 min, v4 open.
    rollout = slo(summary, "rollout_window")
    assert rollout.observations == 4
    assert (rollout.latest, rollout.latest_in_progress, rollout.latest_at) == (3000.0, True, NOW)
    assert (rollout.worst, rollout.status) == (3000.0, "at_risk")

    availability = slo(summary, "inference_availability")
    assert (availability.worst, availability.status) == (0.9995, "ok")
    assert slo(summarize(acme.services), "inference_availability").status == "unknown"


def test_each_slo_status_flips_exactly_at_75_percent_and_beyond_the_objective(
    services: Services, clock: Clock
) -> None:
    second = timedelta(seconds=1)
    cases = {  # fraction of the objective -> expected status
        "ok": (0.75, -second, "ok"),
        "at-risk": (0.75, timedelta(0), "at_risk"),
        "at-objective": (1.0, timedelta(0), "at_risk"),
        "breached": (1.0, second, "breached"),
    }
    objectives = {
        "drift_detection_latency": DRIFT_LATENCY_OBJECTIVE_S,
        "retraining_duration": RETRAINING_DURATION_OBJECTIVE_S,
        "rollout_window": ROLLOUT_WINDOW_OBJECTIVE_S,
    }
    for tenant, (share, offset, expected) in cases.items():
        services.tenants.ensure_tenant(ADMIN, tenant)
        durations = {name: timedelta(seconds=limit * share) + offset for name, limit in objectives.items()}
        drift_report(services.factory, tenant, NOW - DAY, durations["drift_detection_latency"])
        clock.at = NOW - 3 * DAY
        version = walk(services, tenant, S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
        charge(
            services, tenant, version, NOW - 5 * DAY, durations["retraining_duration"].total_seconds(), gpus=0
        )
        clock.at = NOW - 3 * DAY + durations["rollout_window"]
        walk_to_failed = TransitionRequest(
            version_id=version.id,
            to_state=S.FAILED,
            expected_version=version.lock_version,
            request_id=rid(),
            reason="canary: rolled back",
        )
        services.registry.transition(Principal.system(tenant), walk_to_failed)
        summary = services.economics.executive_summary(ADMIN, tenant, now=NOW)
        for name, duration in durations.items():
            risk = slo(summary, name)
            assert (risk.worst, risk.status) == (duration.total_seconds(), expected), (tenant, name)


def test_availability_and_quota_are_judged_on_their_budgets() -> None:
    assert availability_status(0.99926) == "ok"  # 74 % of the 0.1 % error budget spent
    assert availability_status(0.99925) == "at_risk"  # 75 %
    assert availability_status(0.999) == "at_risk"  # the objective itself is met
    assert availability_status(0.9989) == "breached"
    assert availability_status(None) == "unknown"
    assert [quota_status(s) for s in (0.74, 0.75, 0.99, 1.0)] == ["ok", "at_risk", "at_risk", "breached"]


def test_a_principal_of_another_tenant_sees_nothing(acme: Line) -> None:
    outsider = Principal.for_tenant("eve", Role.ADMIN, "other-farm")
    with pytest.raises(PermissionDenied):
        summarize(acme.services, principal=outsider)


def test_a_tenant_without_any_champion_has_an_empty_line_and_no_index(services: Services) -> None:
    services.tenants.ensure_tenant(ADMIN, TENANT)
    summary = summarize(services)
    assert summary.promotions == [] and summary.capitalization.series == []
    assert (summary.capitalization.index, summary.capitalization.net_value_usd) == (None, 0.0)
    assert {s.status for s in summary.slos} == {"ok", "unknown"}

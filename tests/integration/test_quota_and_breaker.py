"""Quotas, budget and the circuit breaker on SQLite and a real PostgreSQL (the application's RLS-bound role).

Charges come from measured durations at the configured price; either limit blocks with BLOCK_RETRAINING; an admin's
raise is audited with the old and new values; three failed retrainings open the breaker, which stays open across a
restart (a new engine and new services) until an admin resets it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import InvalidInput, NotFound, PermissionDenied, QuotaExceeded
from evolution.registry.circuit_breaker import CIRCUIT_OPEN, CircuitBreaker
from evolution.registry.db import make_engine, make_session_factory, reading, upgrade_to_head
from evolution.registry.quota import BLOCK_RETRAINING, QuotaManager
from evolution.registry.schema import Base, CircuitBreakerState, Tenant
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal, Role
from tests.support.postgres import app_role_url

ADMIN = Principal.for_tenant("root", Role.ADMIN, "acme")
OTHER_ADMIN = Principal.for_tenant("eve", Role.ADMIN, "globex")
MANAGER = Principal.for_tenant("maria", Role.MANAGER, "acme")
VIEWER = Principal.for_tenant("vic", Role.VIEWER, "acme")
SYSTEM = Principal.system("acme")
NOW = datetime.now(UTC)


@dataclass
class Database:
    """One migrated database; ``open()`` is a process start: a new engine and session factory on it."""

    url: str
    dialect: str
    engines: list[Engine] = field(default_factory=list)

    def open(self) -> sessionmaker[Session]:
        engine = make_engine(self.url)
        self.engines.append(engine)
        return make_session_factory(engine)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    if request.param == "sqlite":
        owner_url = app_url = request.getfixturevalue("sqlite_url")
    else:
        owner_url = request.getfixturevalue("pg_url")
    upgrade_to_head(owner_url)
    if request.param == "postgresql":
        app_url = app_role_url(owner_url)
    db = Database(app_url, request.param)
    yield db
    for engine in db.engines:
        engine.dispose()


@pytest.fixture
def factory(database: Database) -> sessionmaker[Session]:
    factory = database.open()
    tenants = TenantService(factory)
    tenants.ensure_tenant(ADMIN, "acme", gpu_hours_quota=10.0, budget_cap_usd=40.0)
    tenants.ensure_tenant(OTHER_ADMIN, "globex")
    return factory


def actions(factory: sessionmaker[Session], action: str) -> list[dict[str, object]]:
    trail = ModelRegistryService(factory).audit_trail(ADMIN, "acme")
    return [e.details for e in trail if e.action == action]


# ---------------------------------------------------------------------------------------------- quota and budget
def test_runs_are_charged_from_measured_duration_gpus_and_the_configured_price(
    factory: sessionmaker[Session],
) -> None:
    quota = QuotaManager(factory, price_per_gpu_hour_usd=3.0, cpu_gpu_hour_factor=0.25)
    quota.charge(SYSTEM, "acme", "run-gpu", "mv-1", NOW, duration_s=5400.0, outcome="succeeded", gpus=2)
    quota.charge(SYSTEM, "acme", "run-cpu", "mv-2", NOW, duration_s=3600.0, outcome="failed", gpus=0)
    # The same run reported twice (an activity retry) is charged once.
    quota.charge(SYSTEM, "acme", "run-gpu", "mv-1", NOW, duration_s=5400.0, outcome="succeeded", gpus=2)
    status = quota.status(VIEWER, "acme")
    assert status.gpu_hours_used == pytest.approx(1.5 * 2 + 1.0 * 0.25)
    assert status.cost_usd == pytest.approx(3.25 * 3.0)
    charged = actions(factory, "quota.charged")
    assert len(charged) == 2
    assert charged[0] == {
        "duration_s": 5400.0,
        "gpus": 2,
        "gpu_hours": 3.0,
        "cost_usd": 9.0,
        "price_per_gpu_hour_usd": 3.0,
        "outcome": "succeeded",
    }
    print(
        f"\n[figure] charges: 1.5 h x 2 GPUs = {charged[0]['gpu_hours']} GPU-h -> ${charged[0]['cost_usd']}; "
        f"1 h CPU = {charged[1]['gpu_hours']} GPU-h -> ${charged[1]['cost_usd']} (at $3.00/GPU-h)"
    )


def test_charges_refuse_impossible_measurements(factory: sessionmaker[Session]) -> None:
    quota = QuotaManager(factory)
    for duration, gpus in ((-1.0, 0), (math.nan, 0), (math.inf, 1), (10.0, -1)):
        with pytest.raises(InvalidInput):
            quota.charge(
                SYSTEM, "acme", "bad", "mv", NOW, duration_s=duration, outcome="succeeded", gpus=gpus
            )
    with pytest.raises(PermissionDenied):
        quota.charge(VIEWER, "acme", "r", "mv", NOW, duration_s=1.0, outcome="succeeded")
    assert quota.status(VIEWER, "acme").gpu_hours_used == 0.0
    with pytest.raises(InvalidInput, match="price per GPU-hour"):
        QuotaManager(factory, price_per_gpu_hour_usd=-2.0)


def test_either_limit_blocks_retraining_with_block_retraining(factory: sessionmaker[Session]) -> None:
    quota = QuotaManager(factory, price_per_gpu_hour_usd=10.0)  # 4 GPU-hours exhaust the $40 budget
    quota.charge(SYSTEM, "acme", "r1", "mv", NOW, duration_s=3 * 3600.0, outcome="succeeded", gpus=1)
    assert quota.check(SYSTEM, "acme").blocked_reason is None
    quota.charge(SYSTEM, "acme", "r2", "mv", NOW, duration_s=3600.0, outcome="succeeded", gpus=1)
    status = quota.status(SYSTEM, "acme")
    assert status.gpu_hours_used == pytest.approx(4.0) and status.gpu_hours_used < status.gpu_hours_quota
    assert status.blocked_reason is not None
    assert status.blocked_reason.startswith(f"{BLOCK_RETRAINING}: $40.00 of the $40.00 budget")
    with pytest.raises(QuotaExceeded, match=BLOCK_RETRAINING):
        quota.check(SYSTEM, "acme")

    cheap = QuotaManager(factory, price_per_gpu_hour_usd=0.0)
    cheap.charge(SYSTEM, "acme", "r3", "mv", NOW, duration_s=6 * 3600.0, outcome="succeeded", gpus=1)
    TenantService(factory).set_quota(ADMIN, "acme", budget_cap_usd=1000.0)
    with pytest.raises(QuotaExceeded, match=r"BLOCK_RETRAINING: 10.00 of 10.00 GPU-hours"):
        cheap.check(SYSTEM, "acme")


def test_last_months_runs_do_not_count_against_this_month(factory: sessionmaker[Session]) -> None:
    quota = QuotaManager(factory)
    last_month = NOW.replace(day=1) - timedelta(days=3)
    quota.charge(
        SYSTEM, "acme", "old", "mv", last_month, duration_s=100 * 3600.0, outcome="succeeded", gpus=1
    )
    assert quota.status(SYSTEM, "acme").gpu_hours_used == 0.0
    assert quota.status(SYSTEM, "acme", now=last_month).blocked_reason is not None


def test_an_admin_raises_the_quota_audited_with_old_and_new_values(factory: sessionmaker[Session]) -> None:
    tenants = TenantService(factory)
    quota = QuotaManager(factory)
    quota.charge(SYSTEM, "acme", "big", "mv", NOW, duration_s=10 * 3600.0, outcome="succeeded", gpus=1)
    with pytest.raises(QuotaExceeded):
        quota.check(SYSTEM, "acme")
    after = tenants.set_quota(ADMIN, "acme", gpu_hours_quota=25.0, reason="harvest season")
    assert after == {"gpu_hours_quota": 25.0, "budget_cap_usd": 40.0}
    assert quota.check(SYSTEM, "acme").gpu_hours_quota == 25.0
    tenants.set_quota(ADMIN, "acme", gpu_hours_quota=30.0, budget_cap_usd=80.0)
    audited = actions(factory, "tenant.quota_set")
    assert audited[0] == {
        "before": {"gpu_hours_quota": 10.0, "budget_cap_usd": 40.0},
        "after": {"gpu_hours_quota": 25.0, "budget_cap_usd": 40.0},
        "reason": "harvest season",
    }
    assert audited[1]["after"] == {"gpu_hours_quota": 30.0, "budget_cap_usd": 80.0}
    assert ModelRegistryService(factory).verify_audit(ADMIN, "acme").ok


@pytest.mark.parametrize("who", [MANAGER, VIEWER, SYSTEM, OTHER_ADMIN])
def test_only_the_tenants_admin_may_change_its_quota(factory: sessionmaker[Session], who: Principal) -> None:
    with pytest.raises(PermissionDenied):
        TenantService(factory).set_quota(who, "acme", gpu_hours_quota=1000.0)
    assert QuotaManager(factory).status(ADMIN, "acme").gpu_hours_quota == 10.0


def test_bad_quota_values_are_refused_and_nothing_changes(factory: sessionmaker[Session]) -> None:
    tenants = TenantService(factory)
    for kwargs in (
        {"gpu_hours_quota": -1.0},
        {"budget_cap_usd": math.nan},
        {"gpu_hours_quota": 50.0, "budget_cap_usd": math.inf},
        {},
    ):
        with pytest.raises(InvalidInput, match=r"finite, non-negative|nothing to change"):
            tenants.set_quota(ADMIN, "acme", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        tenants.set_quota(Principal.for_tenant("root", Role.ADMIN, "nope"), "nope", gpu_hours_quota=1.0)
    status = QuotaManager(factory).status(ADMIN, "acme")
    assert (status.gpu_hours_quota, status.budget_cap_usd) == (10.0, 40.0)
    assert actions(factory, "tenant.quota_set") == []


# ---------------------------------------------------------------------------------------------- circuit breaker
def test_three_failures_open_the_breaker_which_survives_a_restart_until_an_admin_resets_it(
    database: Database, factory: sessionmaker[Session]
) -> None:
    breaker = CircuitBreaker(factory)
    assert breaker.status(VIEWER, "acme").state == "closed"
    first = breaker.record(SYSTEM, "acme", "run-1", "failed", "training job failed: exit 1")
    assert (first.effect, first.status.consecutive_failures, first.opened_now) == ("failure", 1, False)
    breaker.record(SYSTEM, "acme", "run-1", "failed", "retried report")  # the same run: counted once
    breaker.record(SYSTEM, "acme", "run-2", "failed", "training job timed_out: timed out after 60 s")
    third = breaker.record(SYSTEM, "acme", "run-3", "quarantined", "signature does not verify")
    assert third.opened_now and third.status.state == "open" and third.status.consecutive_failures == 3
    assert breaker.record(SYSTEM, "acme", "run-3", "quarantined").opened_now  # retry: same answer

    restarted = CircuitBreaker(database.open())  # a new process: new engine, new service
    status = restarted.check(SYSTEM, "acme")
    assert status.state == "open" and status.blocked_reason is not None
    assert status.blocked_reason.startswith(f"{CIRCUIT_OPEN}: retraining disabled since")
    assert "signature does not verify" in status.blocked_reason
    # While open, outcomes change nothing; only a reset closes it.
    assert restarted.record(SYSTEM, "acme", "run-4", "promoted").status.state == "open"

    for who in (MANAGER, VIEWER, SYSTEM, OTHER_ADMIN):
        with pytest.raises(PermissionDenied):
            restarted.reset(who, "acme", "let it run")
    with pytest.raises(InvalidInput, match="reason"):
        restarted.reset(ADMIN, "acme", "   ")
    assert restarted.status(ADMIN, "acme").state == "open"

    after = restarted.reset(ADMIN, "acme", "fixed the feature pipeline")
    assert after.state == "closed" and after.consecutive_failures == 0
    assert CircuitBreaker(database.open()).check(SYSTEM, "acme").blocked_reason is None
    opened = actions(factory, "breaker.opened")
    reset = actions(factory, "breaker.reset")
    assert len(opened) == 1 and opened[0]["consecutive_failures"] == 3 and opened[0]["threshold"] == 3
    assert reset == [
        {
            "reason": "fixed the feature pipeline",
            "before": {
                "state": "open",
                "consecutive_failures": 3,
                "opened_at": reset[0]["before"]["opened_at"],  # type: ignore[index]
                "last_failure_reason": "signature does not verify",
            },
            "after": {"state": "closed", "consecutive_failures": 0},
        }
    ]
    assert ModelRegistryService(factory).verify_audit(ADMIN, "acme").ok


def test_business_outcomes_reset_the_streak_and_blocks_do_not_count(factory: sessionmaker[Session]) -> None:
    breaker = CircuitBreaker(factory)
    breaker.record(SYSTEM, "acme", "r1", "failed")
    breaker.record(SYSTEM, "acme", "r2", "failed")
    breaker.record(SYSTEM, "acme", "r3", "blocked")
    assert breaker.status(SYSTEM, "acme").consecutive_failures == 2
    assert breaker.record(SYSTEM, "acme", "r4", "rolled_back").status.consecutive_failures == 0
    breaker.record(SYSTEM, "acme", "r5", "failed")
    breaker.record(SYSTEM, "acme", "r6", "failed")
    assert breaker.status(SYSTEM, "acme").state == "closed"
    assert actions(factory, "breaker.opened") == []


def test_the_tenants_threshold_setting_applies(factory: sessionmaker[Session]) -> None:
    TenantService(factory).configure_tenant(ADMIN, "acme", {"circuit_breaker_threshold": 1})
    recorded = CircuitBreaker(factory).record(SYSTEM, "acme", "r1", "failed", "boom")
    assert recorded.opened_now and recorded.status.threshold == 1


def test_blocked_starts_are_audited_once_per_request(factory: sessionmaker[Session]) -> None:
    breaker = CircuitBreaker(factory)
    assert breaker.record_blocked(
        SYSTEM, "acme", "yield", BLOCK_RETRAINING, "BLOCK_RETRAINING: budget", "run-9"
    )
    assert not breaker.record_blocked(SYSTEM, "acme", "yield", BLOCK_RETRAINING, "again", "run-9")
    assert breaker.record_blocked(SYSTEM, "acme", "yield", CIRCUIT_OPEN, "CIRCUIT_OPEN: 3 failures", "run-10")
    blocked = actions(factory, "retraining.blocked")
    assert [b["code"] for b in blocked] == [BLOCK_RETRAINING, CIRCUIT_OPEN]
    with pytest.raises(PermissionDenied):
        breaker.record_blocked(VIEWER, "acme", "yield", CIRCUIT_OPEN, "x", "run-11")


def test_breaker_rows_are_fenced_per_tenant(database: Database, factory: sessionmaker[Session]) -> None:
    CircuitBreaker(factory).record(SYSTEM, "acme", "r1", "failed")
    assert CircuitBreaker(factory).status(OTHER_ADMIN, "globex").consecutive_failures == 0
    with pytest.raises(PermissionDenied):
        CircuitBreaker(factory).status(OTHER_ADMIN, "acme")
    if database.dialect == "postgresql":  # row-level security: another tenant's session sees no row at all
        with reading(factory, "globex") as session:
            assert session.scalars(select(CircuitBreakerState)).all() == []
            assert session.get(Tenant, "acme") is None
        with reading(factory, "acme") as session:
            assert [r.tenant_id for r in session.scalars(select(CircuitBreakerState))] == ["acme"]


def test_the_reliability_migration_matches_the_model(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        diffs = compare_metadata(MigrationContext.configure(session.connection()), Base.metadata)
    assert [d for d in diffs if "circuit_breakers" in repr(d)] == []

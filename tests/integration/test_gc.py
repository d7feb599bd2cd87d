"""Garbage collection of model artifacts on a real registry (SQLite and PostgreSQL) and a real artifact store.

The scenario (tests/support/retention_world.py): ten versions of one model with FAILED candidates of several ages,
a DEPRECATED and a FAILED former champion, the CHAMPION and a CANARY; one candidate shares its weights with the
champion, another shares files with a sealed snapshot and a signed drift report. The retention service plans and
collects; the store's own listing says what was really deleted.

Each backend's database is created and migrated once per module (as ``registry_factory`` does: SQLite, and a real
PostgreSQL used through the application's role under row-level security); every test gets a tenant of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evolution.errors import PermissionDenied
from evolution.governance.retention import SIGNED_MANIFEST
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.verification import verify_tenant
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import upgrade_to_head
from evolution.registry.versions import ModelRegistryService
from evolution.security import Role
from evolution.timeutil import utcnow
from tests.support.postgres import app_role_url, create_database
from tests.support.progress import RecordingMeter
from tests.support.retention_world import (
    COLLECTED,
    DELETED,
    MODEL,
    PLAN,
    Clock,
    World,
    build_world,
    expected_deletions,
)

S = ModelState


@dataclass
class Backend:
    services: Services
    registry: ModelRegistryService
    clock: Clock


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    home = tmp_path_factory.mktemp(f"gc-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'registry.db'}"
        upgrade_to_head(url)
    else:
        owner_url = create_database(request.getfixturevalue("pg_server"))
        upgrade_to_head(owner_url)
        url = app_role_url(owner_url)
    services = build_services(Settings(home=home, database_url=url), migrate=False)
    clock = Clock()
    registry = ModelRegistryService(services.factory, clock=clock)
    services.__dict__["registry"] = registry  # verification reads through it too
    try:
        yield Backend(services, registry, clock)
    finally:
        services.close()


@pytest.fixture
def world(backend: Backend, tmp_path: Path) -> World:
    return build_world(backend.services, backend.registry, backend.clock, tmp_path)


def test_the_dry_run_lists_exactly_what_the_real_run_deletes_with_progress_and_a_second_run_deletes_nothing(
    world: World,
) -> None:
    meter = RecordingMeter()
    before = world.digests()
    dry = world.gc().run(world.person(Role.ADMIN), world.tenant, MODEL, dry_run=True)
    assert world.digests() == before and world.gc_rows() == [], "a dry run changes nothing"
    listed = {e.digest for e in dry.plan.entries}

    real = world.gc().run(world.system, world.tenant, MODEL, meter=meter)
    deleted = before - world.digests()
    # Its progress: one task over the plan's artifacts, advanced to the end.
    assert [(t.description, t.total, t.done) for t in meter.tasks] == [
        (f"gc {world.tenant}", DELETED, DELETED)
    ]
    assert deleted == listed == expected_deletions(world)
    assert len(deleted) == DELETED
    assert sorted(c.number for c in real.collected) == list(COLLECTED)
    assert {d for c in real.collected for d in c.digests} == deleted
    assert real.bytes_deleted == dry.plan.totals.bytes_deleted > 0
    assert real.left_alone == [] and real.errors == []

    rows = world.gc_rows()  # one audit row per collected version, naming its digests and bytes
    assert [(r.subject_id, r.actor) for r in rows] == [(world.versions[n].id, "system:gc") for n in COLLECTED]
    for row, collected in zip(rows, real.collected, strict=True):
        assert row.details["digests"] == collected.digests and row.details["bytes"] == collected.bytes
        assert row.details["state"] == "FAILED" and row.details["number"] == collected.number
    chain = world.registry.verify_audit(world.system, world.tenant)
    assert chain.ok, chain.problems

    after = world.digests()
    second = world.gc().run(world.system, world.tenant)
    assert second.plan.entries == [] and second.collected == [] and second.artifacts_deleted == 0
    assert world.digests() == after and len(world.gc_rows()) == len(rows)
    skipped = {v.number for v in second.plan.versions if v.decision == "skip"}
    assert skipped == set(COLLECTED)


def test_live_versions_champions_shared_digests_snapshots_and_drift_reports_survive(world: World) -> None:
    plan = world.gc().plan(world.person(Role.VIEWER), world.tenant)
    reasons = {v.number: v.reasons for v in plan.versions if v.decision == "keep"}
    assert reasons[2] == ["DEPRECATED (a former champion, restorable by rollback)", "was CHAMPION"]
    assert reasons[4] == ["was CHAMPION"]
    assert reasons[8][0] == "live (CHAMPION)" and reasons[9][0] == "live (CANARY)"
    assert reasons[6] == ["one of the last 5 versions"]
    weights = world.artifacts(3)["model.bin"]
    assert weights == world.artifacts(8)["model.bin"]
    spared = sorted((s.number, s.name, s.reason.split(" ds-")[0].split(" dr-")[0]) for s in plan.spared)
    assert spared == [
        (3, "model.bin", "shared with yield v8 (CHAMPION, kept)"),
        (5, "report.json", "referenced by drift report"),
        (5, "window.jsonl", "referenced by dataset snapshot"),
    ]

    world.gc().execute(world.system, plan)
    left = world.digests()
    for number in PLAN:
        if number not in COLLECTED:
            assert set(world.artifacts(number).values()) <= left, f"v{number} lost an artifact"
            world.services.loader.verify(world.version(number))  # signature and every file still verify
    assert world.store.exists(world.tenant, weights)
    for snapshot in world.services.snapshots.list_snapshots(world.system, world.tenant):
        world.services.snapshots.verify(snapshot, world.services.keyring)
    for report in world.services.drift_reports.list_reports(world.system, world.tenant, limit=100):
        world.services.drift_reports.verify(report, world.services.keyring)
    v5_left = {name for name, d in world.artifacts(5).items() if d in left}
    assert v5_left == {"window.jsonl", "report.json"}


def test_a_version_that_gains_a_reference_after_the_plan_is_left_alone(world: World) -> None:
    plan = world.gc().plan(world.system, world.tenant)
    assert 1 in {e.number for e in plan.entries}
    # Meanwhile a retraining produces byte-identical weights, and its candidate reaches SHADOW (live, kept).
    world.make(11, S.SHADOW, 0, {"model.bin": world.files[1]["model.bin"], "card.json": b"{}"})
    report = world.gc().execute(world.system, plan)
    v1_weights = world.artifacts(1)["model.bin"]
    assert world.store.exists(world.tenant, v1_weights)
    assert v1_weights not in {d for c in report.collected for d in c.digests}
    world.services.loader.verify(world.version(11))
    # The rest of v1 still goes; v6, no longer among the last five, waits for a plan that lists it.
    assert sorted(c.number for c in report.collected) == list(COLLECTED)
    assert world.store.exists(world.tenant, world.artifacts(6)["model.bin"])


def test_verify_after_collection_accepts_only_what_gc_rows_account_for(world: World) -> None:
    world.gc().run(world.system, world.tenant)
    checks = world.model_checks()
    assert len(checks) == len(PLAN) and all(ok for ok, _ in checks.values()), checks
    assert {s for s in checks if "artifacts collected" in s} == {
        f"yield v{n} (FAILED, artifacts collected)" for n in COLLECTED
    }
    report = verify_tenant(world.services, world.tenant)
    assert all(c.ok for c in report), [c for c in report if not c.ok]

    # v6 is FAILED like the collected ones, but GC kept it: someone else deletes its weights.
    world.store.delete(world.tenant, world.artifacts(6)["model.bin"])
    # v3's card was collected; its weights (shared with the champion) were not, and are still checked.
    world.store.delete(world.tenant, world.artifacts(3)["model.bin"])
    failed = {s: d for s, (ok, d) in world.model_checks().items() if not ok}
    assert set(failed) == {
        "yield v6 (FAILED)",
        "yield v3 (FAILED, artifacts collected)",
        "yield v8 (CHAMPION)",
    }
    assert "missing and no gc.collected audit row accounts for it" in failed["yield v6 (FAILED)"]
    assert "'model.bin'" in failed["yield v3 (FAILED, artifacts collected)"]
    assert SIGNED_MANIFEST not in failed["yield v3 (FAILED, artifacts collected)"]


def test_a_training_in_progress_defers_collection(world: World) -> None:
    world.clock.at = utcnow()
    training = world.registry.register_version(world.system, world.tenant, MODEL, uuid.uuid4().hex)
    world.move(training, S.TRAINING)
    report = world.gc().run(world.system, world.tenant)
    assert report.plan.deferred and "yield v11 TRAINING" in report.plan.deferred
    assert report.collected == [] and world.gc_rows() == []


def test_only_an_admin_or_the_system_collects_but_a_viewer_may_look(world: World) -> None:
    before = world.digests()
    assert (
        world.gc().run(world.person(Role.VIEWER), world.tenant, dry_run=True).plan.totals.artifacts_deleted
        == DELETED
    )
    for principal in (
        world.person(Role.VIEWER),
        world.person(Role.MANAGER),
        world.person(Role.ADMIN, "globex"),
    ):
        with pytest.raises(PermissionDenied):
            world.gc().run(principal, world.tenant)
    assert world.digests() == before
    assert world.gc().run(world.person(Role.ADMIN), world.tenant).artifacts_deleted == DELETED

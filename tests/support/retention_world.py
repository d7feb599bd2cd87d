"""A tenant whose model history exercises every retention rule (tests of evolution/governance/retention.py and its callers).

Ten versions of one model, made through the registry service with its clock set back: FAILED candidates of several
ages, a DEPRECATED former champion, a FAILED former champion (CHAMPION -> QUARANTINED -> FAILED), the CHAMPION, a
CANARY; one FAILED candidate shares its weights with the champion, another shares files with a sealed dataset
snapshot and a signed drift report. The files are small and synthetic, but really stored, hashed and signed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from evolution.demo.scenario import Scenario
from evolution.governance.garbage_collection import RetentionService
from evolution.governance.retention import GC_ACTION, version_artifacts
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.manifest import build_manifest_from_dir, sign_manifest
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.platform.verification import verify_tenant
from evolution.platform.wiring import Services
from evolution.registry.db import reading
from evolution.registry.schema import AuditEntry
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal, Role
from evolution.stats.drift_models import DriftConfig, DriftResult
from evolution.timeutil import utcnow
from tests.support.scenario import seed_tenant

S = ModelState
MODEL = "yield"

# number -> (state reached, days ago). Numbers are assigned in this order.
PLAN: dict[int, tuple[ModelState, float]] = {
    1: (S.FAILED, 30),  # collected
    2: (S.DEPRECATED, 25),  # champion once, replaced by v4: kept
    3: (S.FAILED, 20),  # collected, except the weights it shares with the champion (v8)
    4: (S.FAILED, 20),  # champion once, then quarantined and condemned: kept
    5: (S.FAILED, 15),  # collected, except files equal to a snapshot's and a drift report's bytes
    6: (S.FAILED, 10),  # kept: one of the last five (6..10)
    7: (S.FAILED, 3),  # kept: last five, and too young
    8: (S.CHAMPION, 2),
    9: (S.CANARY, 1),
    10: (S.FAILED, 1),
}
COLLECTED = (1, 3, 5)
DELETED = 8  # v1 and v5: model.bin, card.json, signed manifest; v3: card.json, signed manifest


class Clock:
    def __init__(self) -> None:
        self.at = utcnow()

    def __call__(self) -> datetime:
        return self.at


@dataclass
class World:
    services: Services
    registry: ModelRegistryService
    clock: Clock
    tenant: str
    work: Path
    versions: dict[int, VersionView] = field(default_factory=dict)
    files: dict[int, dict[str, bytes]] = field(default_factory=dict)

    # -- principals of this tenant
    @property
    def system(self) -> Principal:
        return Principal.system(self.tenant, "gc")

    def person(self, role: Role, tenant: str | None = None) -> Principal:
        return Principal.for_tenant(f"{role}-user", role, tenant or self.tenant)

    # -- reading
    @property
    def store(self) -> ArtifactStore:
        return self.services.store

    def gc(self) -> RetentionService:
        return self.services.retention

    def digests(self) -> set[str]:
        return set(self.store.list_digests(self.tenant))

    def version(self, number: int) -> VersionView:
        return self.registry.get_version(self.system, self.versions[number].id)

    def artifacts(self, number: int) -> dict[str, str]:
        """name -> digest of the version's artifacts (its files and its signed manifest)."""
        return {a.name: a.digest for a in version_artifacts(self.version(number).manifest)[0]}

    def gc_rows(self) -> list[AuditEntry]:
        with reading(self.services.factory, self.tenant) as session:
            query = select(AuditEntry).where(
                AuditEntry.tenant_id == self.tenant, AuditEntry.action == GC_ACTION
            )
            return list(session.scalars(query.order_by(AuditEntry.seq)))

    def model_checks(self) -> dict[str, tuple[bool, str]]:
        checks = verify_tenant(self.services, self.tenant)
        return {c.subject: (c.ok, c.detail) for c in checks if c.kind == "model"}

    # -- writing
    def make(self, number: int, state: ModelState, days_ago: float, files: dict[str, bytes]) -> VersionView:
        """Register, "train" (really sign and store the files), and drive the version to ``state``."""
        self.clock.at = utcnow() - timedelta(days=days_ago)
        directory = self.work / f"v{number}"
        directory.mkdir(parents=True)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        manifest = build_manifest_from_dir(
            directory,
            tenant=self.tenant,
            model_name=MODEL,
            dataset_snapshot_id="ds-test",
            dataset_merkle_root="0" * 64,
            training_config={"number": number},
            seed=number,
            trainer="test",
            store=self.store,
        )
        signed = sign_manifest(manifest, self.services.signer)
        self.store.put_bytes(self.tenant, signed.model_dump_json(by_alias=True).encode())  # as training does
        version = self.registry.register_version(self.system, self.tenant, MODEL, uuid.uuid4().hex)
        assert version.number == number
        changes = VersionChanges(
            model_hash=signed.digest, manifest=signed.model_dump(mode="json", by_alias=True)
        )
        promoted = state in (S.CHAMPION, S.DEPRECATED) or number == 4
        for step in [S.TRAINING, S.VALIDATED, S.SHADOW] + (
            [S.CANARY] if promoted or state == S.CANARY else []
        ):
            version = self.move(version, step, changes if step == S.VALIDATED else None)
        if promoted:
            manager = self.person(Role.MANAGER)
            version = self.registry.promote(
                manager, version.id, version.lock_version, uuid.uuid4().hex
            ).version
        if number == 4:  # a champion whose integrity failed, condemned on review
            version = self.registry.quarantine(
                self.system, version.id, uuid.uuid4().hex, "digest mismatch"
            ).version
            version = self.move(version, S.FAILED)
        elif state == S.FAILED:
            version = self.move(version, S.FAILED)
        self.versions[number] = version
        self.files[number] = files
        return version

    def move(
        self, version: VersionView, state: ModelState, changes: VersionChanges | None = None
    ) -> VersionView:
        request = TransitionRequest(
            version_id=version.id,
            to_state=state,
            expected_version=version.lock_version,
            request_id=uuid.uuid4().hex,
            reason="test",
            changes=changes,
        )
        return self.registry.transition(self.system, request).version


def build_world(services: Services, registry: ModelRegistryService, clock: Clock, work: Path) -> World:
    """A fresh tenant with the ten versions of :data:`PLAN`, a sealed snapshot and a signed drift report.

    ``registry`` must stamp its rows with ``clock`` (the versions are made in the past).
    """
    w = World(services, registry, clock, f"t-{uuid.uuid4().hex[:10]}", work)
    seed_tenant(services, Scenario(tenant_id=w.tenant, history_rows=60, history_days=10))
    snapshot = services.snapshots.seal(w.system, w.tenant, utcnow())
    report = services.drift_reports.write(
        w.system,
        tenant_id=w.tenant,
        model_name=MODEL,
        baseline_version_id="mv-none",
        baseline_model_hash=None,
        snapshot_id=snapshot.id,
        window_start=snapshot.window_start,
        window_end=snapshot.window_end,
        result=DriftResult(features=[], mae=None, level="ok", config=DriftConfig()),
    )
    shared_weights = b"weights shared by v3 and the champion v8 " * 40
    for number, (state, days) in PLAN.items():
        files = {
            "model.bin": f"weights of v{number} ".encode() * 50,
            "card.json": f'{{"v": {number}}}'.encode(),
        }
        if number in (3, 8):
            files["model.bin"] = shared_weights
        if number == 5:
            files["window.jsonl"] = services.store.read_bytes(w.tenant, snapshot.artifact_digest)
            files["report.json"] = services.store.read_bytes(w.tenant, report.report_digest)
        w.make(number, state, days, files)
    assert {n: w.version(n).state for n in PLAN} == {n: s for n, (s, _) in PLAN.items()}
    return w


def expected_deletions(w: World) -> set[str]:
    """The issue's rule, applied by hand: v1, v3 and v5's artifacts minus whatever something kept references."""
    kept = {d for n in PLAN if n not in COLLECTED for d in w.artifacts(n).values()}
    snapshots = {s.artifact_digest for s in w.services.snapshots.list_snapshots(w.system, w.tenant)}
    reports = {r.report_digest for r in w.services.drift_reports.list_reports(w.system, w.tenant, limit=100)}
    candidates = {d for n in COLLECTED for d in w.artifacts(n).values()}
    return candidates - kept - snapshots - reports

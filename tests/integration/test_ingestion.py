"""Learning-event ingestion on SQLite and PostgreSQL: signatures, rejects with reasons, duplicates once, immutability."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evolution.data.event_schema import sign_event
from evolution.data.events import EventIngestor
from evolution.data.snapshots import DatasetSnapshotService
from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.integrity.signing import LocalEd25519Signer, generate_source_keypair, key_id_for_public_pem
from evolution.registry.db import tenant_session
from evolution.registry.schema import DeadLetter, LearningEvent
from evolution.registry.tenants import TenantService
from evolution.security import Principal, Role
from evolution.timeutil import iso, utcnow

ADMIN = Principal.for_tenant("root", Role.ADMIN, "acme")


@pytest.fixture
def ingestor(registry_factory: sessionmaker[Session]) -> EventIngestor:
    TenantService(registry_factory).ensure_tenant(ADMIN, "acme")
    return EventIngestor(registry_factory)


@pytest.fixture
def source(ingestor: EventIngestor) -> tuple[str, bytes]:
    private_pem, public_pem = generate_source_keypair()
    key_id = key_id_for_public_pem(public_pem)
    ingestor.register_source_key(ADMIN, "acme", key_id, public_pem)
    return key_id, private_pem


def event(i: int, key: tuple[str, bytes], **overrides: object) -> dict[str, object]:
    body = {
        "tenant": "acme",
        "request_id": f"r-{i}",
        "event_time": iso(utcnow() - timedelta(hours=1) + timedelta(seconds=i)),
        "features": {"rain_mm": 10.0 + i, "crop": "maize"},
        "actual": 7.5,
        **overrides,
    }
    return sign_event(body, key[1], key[0])


def reasons(factory: sessionmaker[Session]) -> list[tuple[str | None, str]]:
    with tenant_session(factory, "acme") as session:
        return [(d.field, d.reason) for d in session.scalars(sa.select(DeadLetter).order_by(DeadLetter.id))]


def test_valid_events_are_accepted_and_duplicates_counted_once(
    ingestor: EventIngestor, source: tuple[str, bytes], registry_factory: sessionmaker[Session]
) -> None:
    events = [event(i, source) for i in range(10)]
    first = ingestor.ingest_objects(ADMIN, "acme", events + events[:3], "test")
    assert (first.accepted, first.duplicate, first.rejected) == (10, 3, 0)
    again = ingestor.ingest_objects(ADMIN, "acme", events, "test")
    assert (again.accepted, again.duplicate, again.rejected) == (0, 10, 0)
    with tenant_session(registry_factory, "acme") as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LearningEvent)) == 10


def test_each_reject_is_kept_with_a_reason_that_names_the_field(
    ingestor: EventIngestor, source: tuple[str, bytes], registry_factory: sessionmaker[Session]
) -> None:
    stranger = generate_source_keypair()
    forged = sign_event(
        {"tenant": "acme", "request_id": "f", "event_time": iso(utcnow()), "features": {}},
        stranger[0],
        source[0],
    )
    tampered = event(2, source)
    tampered["actual"] = 99.0
    reused = event(3, source)
    ingestor.ingest_objects(ADMIN, "acme", [reused], "test")
    reused_other = event(3, source, actual=1.0)
    not_finite = {**event(5, source), "actual": float("nan")}
    lines = [
        "{not json",
        '{"tenant": "acme"}',
        '{"tenant": "acme", "request_id": "x", "event_time": "2026-01-01T00:00:00", "features": {}, '
        '"source_key_id": "k", "signature": "s"}',
        '"just a string"',
        "x" * 70_000,
    ]
    summary = ingestor.ingest_lines(ADMIN, "acme", lines, "file")
    objects = ingestor.ingest_objects(
        ADMIN,
        "acme",
        [forged, tampered, reused_other, event(4, source, tenant="other"), not_finite],
        "test",
    )
    assert summary.rejected == 5 and objects.rejected == 5 and objects.accepted == 0
    fields = [f for f, _ in reasons(registry_factory)]
    assert fields[:5] == [None, "request_id", "event_time", None, None]
    assert sorted(fields[5:]) == ["actual", "request_id", "signature", "signature", "tenant"]
    texts = " | ".join(r for _, r in reasons(registry_factory))
    assert "malformed JSON" in texts and "timezone" in texts and "larger than" in texts
    assert "already accepted with other content" in texts


def test_unknown_source_key_and_future_events_are_refused(
    ingestor: EventIngestor, source: tuple[str, bytes], registry_factory: sessionmaker[Session]
) -> None:
    private_pem, public_pem = generate_source_keypair()
    unregistered = (key_id_for_public_pem(public_pem), private_pem)
    future = event(1, source, event_time=iso(utcnow() + timedelta(hours=2)))
    summary = ingestor.ingest_objects(ADMIN, "acme", [event(0, unregistered), future], "test")
    assert summary.rejected == 2
    assert [f for f, _ in reasons(registry_factory)] == ["source_key_id", "event_time"]


def test_events_of_a_sealed_window_are_refused_and_neither_events_nor_snapshots_can_change(
    ingestor: EventIngestor,
    source: tuple[str, bytes],
    registry_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    ingestor.ingest_objects(ADMIN, "acme", [event(i, source) for i in range(5)], "test")
    snapshots = DatasetSnapshotService(
        registry_factory, FilesystemArtifactStore(tmp_path / "a"), LocalEd25519Signer(tmp_path / "k")
    )
    snapshot = snapshots.seal(ADMIN, "acme", utcnow())
    late = event(100, source, event_time=iso(utcnow() - timedelta(hours=3)))
    summary = ingestor.ingest_objects(ADMIN, "acme", [late], "test")
    assert summary.rejected == 1 and "sealed" in summary.rejects[0].reason
    for statement in (
        "UPDATE dataset_snapshots SET row_count = 1",
        "DELETE FROM dataset_snapshots",
        # A sealed window's count is how a seal proves it encoded the rows it commits: events never change.
        "UPDATE learning_events SET actual = 0",
        "DELETE FROM learning_events",
    ):
        with (
            tenant_session(registry_factory, "acme") as session,
            pytest.raises(sa.exc.DBAPIError, match=r"append-only|permission denied"),
        ):
            session.execute(sa.text(statement))
            session.commit()
    assert snapshots.get(ADMIN, snapshot.id).row_count == 5


def test_concurrent_ingests_of_the_same_events_store_each_once(
    ingestor: EventIngestor, source: tuple[str, bytes], registry_factory: sessionmaker[Session]
) -> None:
    from tests.integration.test_registry_concurrency import race

    events = [event(i, source) for i in range(50)]
    results = race([lambda: ingestor.ingest_objects(ADMIN, "acme", events, "test") for _ in range(8)])
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.accepted for r in results) == 50
    assert sum(r.duplicate for r in results) == 50 * 7
    with tenant_session(registry_factory, "acme") as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LearningEvent)) == 50

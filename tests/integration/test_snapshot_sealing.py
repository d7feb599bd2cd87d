"""Sealing reads the window without the tenant's lock, encodes it as before, and re-reads it if it changed meanwhile.

On SQLite and PostgreSQL: the sealed bytes are the canonical lines of the stored events; the rows kept for the scan
are the rows read back from the store; an event that lands in the window while it is being read is sealed too; a
window another seal took meanwhile is not sealed twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.data.event_schema import sign_event
from evolution.data.events import EventIngestor
from evolution.data.snapshots import DatasetSnapshotService
from evolution.errors import InvalidInput
from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.integrity.signing import (
    KeyRing,
    LocalEd25519Signer,
    generate_source_keypair,
    key_id_for_public_pem,
)
from evolution.registry.db import consistent_reading, tenant_session
from evolution.registry.schema import DatasetSnapshot, LearningEvent
from evolution.registry.tenants import TenantService
from evolution.security import Principal, Role
from evolution.timeutil import iso, utcnow

ADMIN = Principal.for_tenant("root", Role.ADMIN, "acme")
SYSTEM = Principal.system("acme")
FEATURES: list[dict[str, Any]] = [
    {"rain_mm": 10.25, "crop": "maize", "irrigated": True, "note": None},
    {"rain_mm": 1e-05, "crop": "ß 🌾 \u2028", "irrigated": False, "plots": 2**63 + 1},
    {"rain_mm": -0.0, "crop": 'quote " and \\ and\nnewline', "z_last": 1e16, "a_first": 0},
    {},
]


class World:
    def __init__(self, factory: sessionmaker[Session], tmp_path: Path) -> None:
        TenantService(factory).ensure_tenant(ADMIN, "acme")
        self.factory = factory
        self.ingestor = EventIngestor(factory)
        private_pem, public_pem = generate_source_keypair()
        self.key = (key_id_for_public_pem(public_pem), private_pem)
        self.ingestor.register_source_key(ADMIN, "acme", self.key[0], public_pem)
        signer = LocalEd25519Signer(tmp_path / "keys")
        self.keyring = KeyRing.of(signer)
        self.store = FilesystemArtifactStore(tmp_path / "store")
        self.snapshots = DatasetSnapshotService(factory, self.store, signer)
        self.start = utcnow() - timedelta(hours=2)
        self.sent = 0

    def send(self, count: int, at: datetime | None = None) -> None:
        events = []
        for _ in range(count):
            i = self.sent
            self.sent += 1
            body = {
                "tenant": "acme",
                "request_id": f"r-{i:04d}",
                # Equal times for some events: the order within them is the request id's.
                "event_time": iso(at or self.start + timedelta(seconds=i // 3)),
                "features": FEATURES[i % len(FEATURES)],
                "actual": None if i % 5 == 0 else 7.5 + i / 7,
            }
            events.append(sign_event(body, self.key[1], self.key[0]))
        summary = self.ingestor.ingest_objects(ADMIN, "acme", events, "test")
        assert summary.accepted == count, summary

    def reference_encoding(self, start: datetime, end: datetime) -> bytes:
        """The encoding as the seal made it before it read columns: canonical_json of each ORM row."""
        with tenant_session(self.factory, "acme") as session:
            rows = session.scalars(
                sa.select(LearningEvent)
                .where(LearningEvent.event_time >= start, LearningEvent.event_time < end)
                .order_by(LearningEvent.event_time, LearningEvent.request_id)
            )
            return b"".join(
                canonical_json(
                    {
                        "request_id": row.request_id,
                        "event_time": iso(row.event_time),
                        "features": row.features,
                        "prediction_id": row.prediction_id,
                        "actual": row.actual,
                        "source_key_id": row.source_key_id,
                        "payload_digest": row.payload_digest,
                    }
                )
                + b"\n"
                for row in rows
            )

    def snapshot_count(self) -> int:
        with tenant_session(self.factory, "acme") as session:
            return session.scalar(sa.select(sa.func.count()).select_from(DatasetSnapshot)) or 0


@pytest.fixture
def world(registry_factory: sessionmaker[Session], tmp_path: Path) -> World:
    return World(registry_factory, tmp_path)


@pytest.fixture
def during_first_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[], object]], None]]:
    """Run an action right after the seal's first (lock-free) read of the window, once."""
    actions: list[Callable[[], object]] = []
    original = DatasetSnapshotService._encode

    def encode(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        while actions:
            actions.pop()()
        return result

    monkeypatch.setattr(DatasetSnapshotService, "_encode", staticmethod(encode))
    yield actions.append


def test_a_consistent_reading_sees_one_state_while_others_write(world: World) -> None:
    world.send(5)

    def count(session: Session) -> int:
        return session.scalar(sa.select(sa.func.count()).select_from(LearningEvent)) or 0

    with consistent_reading(world.factory, "acme") as session:
        before = count(session)
        world.send(3)  # committed by another session meanwhile; on SQLite it needs no lock the reader holds
        assert count(session) == before == 5
    with tenant_session(world.factory, "acme") as session:
        assert count(session) == 8


def test_the_sealed_bytes_are_the_canonical_lines_of_the_stored_events(world: World) -> None:
    world.send(40)
    snapshot = world.snapshots.seal(SYSTEM, "acme", utcnow())
    data = world.store.read_bytes("acme", snapshot.artifact_digest)
    assert snapshot.row_count == 40
    assert data == world.reference_encoding(snapshot.window_start, snapshot.window_end)
    world.snapshots.verify(snapshot, world.keyring)


def test_the_rows_kept_for_the_scan_are_the_rows_read_back_from_the_store(world: World) -> None:
    world.send(40)
    snapshot, rows = world.snapshots.seal_for_scan(SYSTEM, "acme", utcnow())
    assert len(rows) == 40
    assert rows == world.snapshots.load_rows(snapshot, world.keyring)


def test_an_event_that_lands_in_the_window_while_it_is_read_is_sealed_too(
    world: World, during_first_read: Callable[[Callable[[], object]], None]
) -> None:
    world.send(30)
    during_first_read(lambda: world.send(1, at=world.start + timedelta(seconds=1, microseconds=5)))
    snapshot, rows = world.snapshots.seal_for_scan(SYSTEM, "acme", utcnow())
    assert snapshot.row_count == len(rows) == 31
    assert "r-0030" in [row["request_id"] for row in rows]
    data = world.store.read_bytes("acme", snapshot.artifact_digest)
    assert data == world.reference_encoding(snapshot.window_start, snapshot.window_end)
    assert rows == world.snapshots.load_rows(snapshot, world.keyring)


def test_a_window_another_seal_took_meanwhile_is_not_sealed_twice(
    world: World, during_first_read: Callable[[Callable[[], object]], None]
) -> None:
    world.send(30)
    end = utcnow()
    during_first_read(lambda: world.snapshots.seal(SYSTEM, "acme", end))
    with pytest.raises(InvalidInput, match="must be after the last sealed window's end"):
        world.snapshots.seal(SYSTEM, "acme", end)
    assert world.snapshot_count() == 1

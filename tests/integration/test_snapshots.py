"""Dataset snapshots: non-overlapping windows, a Merkle root over the stored bytes, signed, tamper-evident."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from evolution.demo.scenario import Scenario
from evolution.errors import InsufficientData, IntegrityViolation, InvalidInput
from evolution.integrity.merkle import CHUNK_SIZE, chunked_merkle_root
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.support.scenario import seed_tenant

SYSTEM = Principal.system("acme")


@pytest.fixture
def services(tmp_path: Path) -> Services:
    svc = build_services(Settings(home=tmp_path / "home"))
    seed_tenant(svc, Scenario(tenant_id="acme", history_rows=6000))
    return svc


def test_a_multi_megabyte_window_hashes_to_the_root_of_its_stored_bytes(services: Services) -> None:
    snapshot = services.snapshots.seal(SYSTEM, "acme", utcnow())
    data = services.store.read_bytes("acme", snapshot.artifact_digest)
    assert snapshot.row_count == 6000 and snapshot.byte_size == len(data) > 2 * CHUNK_SIZE * 8
    assert snapshot.merkle_root == chunked_merkle_root(data).hex()
    assert snapshot.leaf_count == -(-len(data) // CHUNK_SIZE)
    services.snapshots.verify(snapshot, services.keyring)


def test_windows_do_not_overlap_and_empty_windows_are_refused(services: Services) -> None:
    first = services.snapshots.seal(SYSTEM, "acme", utcnow() - timedelta(days=60))
    second = services.snapshots.seal(SYSTEM, "acme", utcnow())
    assert first.window_end == second.window_start
    assert first.row_count + second.row_count == 6000
    with pytest.raises(InvalidInput, match="must be after"):
        services.snapshots.seal(SYSTEM, "acme", utcnow() - timedelta(days=1))
    with pytest.raises(InsufficientData, match="fewer than 1"):
        services.snapshots.seal(SYSTEM, "acme", utcnow() + timedelta(seconds=1))


def test_a_signature_from_another_key_is_refused(services: Services, tmp_path: Path) -> None:
    from evolution.integrity.signing import KeyRing, LocalEd25519Signer

    snapshot = services.snapshots.seal(SYSTEM, "acme", utcnow())
    stranger = KeyRing.of(LocalEd25519Signer(tmp_path / "other-keys"))
    with pytest.raises(IntegrityViolation):
        services.snapshots.verify(snapshot, stranger)

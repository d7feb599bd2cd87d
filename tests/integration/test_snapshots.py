"""Dataset snapshots: non-overlapping windows, a Merkle root over the stored bytes, signed with the tree's size,
tamper-evident."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from evolution.canonical import canonical_json
from evolution.demo.scenario import Scenario
from evolution.errors import InsufficientData, IntegrityViolation, InvalidInput
from evolution.integrity.merkle import (
    CHUNK_SIZE,
    ChunkedMerkle,
    chunked_merkle_root,
    leaf_hash,
    verify_inclusion,
)
from evolution.platform.settings import Settings
from evolution.platform.verification import verify_all
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal
from evolution.timeutil import iso, utcnow
from tests.support.progress import RecordingMeter
from tests.support.scenario import seed_tenant

SYSTEM = Principal.system("acme")


@pytest.fixture
def services(tmp_path: Path) -> Services:
    svc = build_services(Settings(home=tmp_path / "home"))
    seed_tenant(svc, Scenario(tenant_id="acme", history_rows=6000))
    return svc


def test_a_multi_megabyte_window_hashes_to_the_root_of_its_stored_bytes_and_reports_every_row_sealed(
    services: Services,
) -> None:
    meter = RecordingMeter()
    snapshot = services.snapshots.seal(SYSTEM, "acme", utcnow(), meter=meter)
    assert [(t.description, t.total, t.done) for t in meter.tasks] == [("seal acme", 6000, 6000)]
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


@pytest.fixture
def small(tmp_path: Path) -> Services:
    """A window of a few 64 KiB chunks: enough leaves for a proof that fits trees of other sizes too."""
    svc = build_services(Settings(home=tmp_path / "home"))
    seed_tenant(svc, Scenario(tenant_id="acme", history_rows=1000))
    return svc


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]


def test_a_chunk_proof_checked_against_a_claimed_tree_size_other_than_the_signed_one_fails(
    small: Services,
) -> None:
    snapshot = small.snapshots.seal(SYSTEM, "acme", utcnow())
    data = small.store.read_bytes("acme", snapshot.artifact_digest)
    chunks, root = _chunks(data), bytes.fromhex(snapshot.merkle_root)
    assert snapshot.leaf_count == len(chunks) >= 3
    proof = ChunkedMerkle().update(data).inclusion_proof(0)
    small.snapshots.verify_chunk(snapshot, small.keyring, 0, chunks[0], proof)

    # The bare proof fits other tree sizes (leaf 0 climbs a tree of 3 leaves and one of 4 alike) ...
    fitting = [
        n
        for n in range(2, 2 * snapshot.leaf_count + 1)
        if n != snapshot.leaf_count and verify_inclusion(leaf_hash(chunks[0]), 0, n, proof, root)
    ]
    assert fitting, "a size the bare proof also fits"
    # ... so a claimed size other than the signed one (say, a leaf count edited in the database) is refused.
    for claimed in fitting:
        lying = snapshot.model_copy(update={"leaf_count": claimed})
        with pytest.raises(IntegrityViolation, match="signature invalid"):
            small.snapshots.verify_chunk(lying, small.keyring, 0, chunks[0], proof)
        with pytest.raises(IntegrityViolation):
            small.snapshots.verify(lying, small.keyring)
    with pytest.raises(IntegrityViolation, match="do not lead to the signed root"):
        small.snapshots.verify_chunk(snapshot, small.keyring, 1, chunks[0], proof)


def test_a_leaf_count_edited_in_the_database_fails_evolution_verify(small: Services) -> None:
    snapshot = small.snapshots.seal(SYSTEM, "acme", utcnow())
    with small.engine.begin() as connection:  # the database's owner drops the append-only trigger
        connection.execute(sa.text("DROP TRIGGER dataset_snapshots_no_update"))
        connection.execute(
            sa.text("UPDATE dataset_snapshots SET leaf_count = leaf_count + 1 WHERE id = :id"),
            {"id": snapshot.id},
        )
    report = verify_all(small, ["acme"])
    failed = [(c.kind, c.subject) for c in report.failures]
    assert failed == [("snapshot", snapshot.id)], report.failures
    assert "signature invalid" in report.failures[0].detail


def test_a_snapshot_signed_before_the_tree_size_was_signed_still_verifies_and_binds_its_leaf_count(
    small: Services,
) -> None:
    """Snapshots sealed before dataset-snapshot/v2 carry a v1 signature (no leaf count): they keep verifying."""
    sealed = small.snapshots.seal(SYSTEM, "acme", utcnow())
    v1_statement = canonical_json(
        {
            "schema": "controlled-evolution/dataset-snapshot/v1",
            "id": sealed.id,
            "tenant": sealed.tenant_id,
            "window_start": iso(sealed.window_start),
            "window_end": iso(sealed.window_end),
            "row_count": sealed.row_count,
            "byte_size": sealed.byte_size,
            "merkle_root": sealed.merkle_root,
            "artifact_digest": sealed.artifact_digest,
        }
    )
    old = sealed.model_copy(update={"signature": small.signer.sign(v1_statement)})
    small.snapshots.verify(old, small.keyring)
    data = small.store.read_bytes("acme", old.artifact_digest)
    proof = ChunkedMerkle().update(data).inclusion_proof(0)
    small.snapshots.verify_chunk(old, small.keyring, 0, data[:CHUNK_SIZE], proof)

    # v1 signed the byte size, which with the fixed chunk size fixes the leaf count: a different one is refused.
    lying = old.model_copy(update={"leaf_count": old.leaf_count + 1})
    with pytest.raises(
        IntegrityViolation, match=f"{old.leaf_count + 1} leaves recorded, but its signed size"
    ):
        small.snapshots.verify_chunk(lying, small.keyring, 0, data[:CHUNK_SIZE], proof)
    # The two statements differ in their schema, so no signature can pass for both.
    with pytest.raises(IntegrityViolation):
        small.keyring.verify(old.statement(), old.signature)
    with pytest.raises(IntegrityViolation):
        small.keyring.verify(v1_statement, sealed.signature)

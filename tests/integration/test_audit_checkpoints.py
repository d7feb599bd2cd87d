"""Signed audit checkpoints written by the post-commit hook, on SQLite and a real PostgreSQL.

The hook runs after the appending transaction has committed (outside the per-tenant lock), writes one checkpoint
per ``every`` entries even under concurrent writers, and a failure to write never fails the business operation:
it is logged and the checkpoint is written on the next append.

After a restore to an earlier point, a restore acknowledgement supersedes exactly the checkpoints beyond the
restored chain and checkpoints resume in a new epoch; a forged, unsigned or unaudited acknowledgement, one naming
other checkpoints or one with a wrong head supersedes nothing, and the truncation is still reported.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.errors import IntegrityViolation, InvalidInput, PermissionDenied
from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.integrity.signing import KeyRing, LocalEd25519Signer, Signer
from evolution.registry.audit import append_audit, load_chain
from evolution.registry.audit_checkpoints import (
    ACKNOWLEDGED_ACTION,
    ACKNOWLEDGEMENT_PREFIX,
    CHECKPOINT_PREFIX,
    AuditCheckpointer,
    CheckpointReport,
    RestoreAcknowledgement,
    SignedAcknowledgement,
    SupersededCheckpoint,
    acknowledgement_key,
    chain_heads,
    checkpoint_key,
    parse_acknowledgement,
    parse_checkpoint,
)
from evolution.registry.db import make_engine, make_session_factory, reading, transaction
from evolution.registry.schema import AuditEntry, Tenant
from evolution.registry.tenants import TenantService
from evolution.security import Principal, Role
from evolution.timeutil import utcnow

TENANT = "acme"
ADMIN = Principal.for_tenant("root", Role.ADMIN, TENANT)


class FlakyStore(FilesystemArtifactStore):
    """The filesystem store, except that writing named objects fails while ``down`` is set."""

    down = False

    def put_object(self, tenant: str, key: str, data: bytes) -> str:
        if self.down:
            raise OSError("artifact store unreachable")
        return super().put_object(tenant, key, data)


@pytest.fixture
def signer(tmp_path: Path) -> LocalEd25519Signer:
    return LocalEd25519Signer(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path) -> FlakyStore:
    return FlakyStore(tmp_path / "artifacts")


@pytest.fixture
def checkpointer(
    registry_factory: sessionmaker[Session], store: FlakyStore, signer: LocalEd25519Signer
) -> Iterator[AuditCheckpointer]:
    TenantService(registry_factory).ensure_tenant(ADMIN, TENANT)  # audit entry 1
    hook = AuditCheckpointer(registry_factory, store, signer, every=25)
    hook.install()
    yield hook
    hook.uninstall()


def _append(factory: sessionmaker[Session], count: int, writer: int = 0) -> None:
    principal = Principal.system(TENANT, f"writer-{writer}")
    for i in range(count):
        with transaction(factory, TENANT) as session:
            append_audit(
                session,
                tenant_id=TENANT,
                principal=principal,
                action="test.appended",
                subject_type="test",
                subject_id=f"w{writer}-{i}",
                at=utcnow(),
            )


def test_concurrent_writers_get_one_checkpoint_per_interval_each_matching_the_chain(
    checkpointer: AuditCheckpointer,
    registry_factory: sessionmaker[Session],
    store: FlakyStore,
    signer: LocalEd25519Signer,
) -> None:
    writers, per_writer = 8, 50
    barrier = threading.Barrier(writers)

    def run(writer: int) -> None:
        barrier.wait()
        _append(registry_factory, per_writer, writer)

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(run, range(writers)))

    total = 1 + writers * per_writer
    assert store.list_objects(TENANT, CHECKPOINT_PREFIX) == [checkpoint_key(n) for n in range(25, total, 25)]
    with reading(registry_factory, TENANT) as session:
        heads = chain_heads(load_chain(session, TENANT))
    assert len(heads) == total
    for key in store.list_objects(TENANT, CHECKPOINT_PREFIX):
        cp = parse_checkpoint(TENANT, key, store.get_object(TENANT, key), KeyRing.of(signer))
        assert cp.root == heads[cp.size - 1]
    report = checkpointer.verify(TENANT)
    assert report.ok and report.checkpoints == total // 25, report.problems


def test_a_failed_checkpoint_write_never_fails_the_append_and_is_retried_on_the_next(
    checkpointer: AuditCheckpointer,
    registry_factory: sessionmaker[Session],
    store: FlakyStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.down = True
    with caplog.at_level(logging.WARNING, logger="evolution.registry.audit_checkpoints"):
        _append(registry_factory, 30)  # crosses position 25
    assert store.list_objects(TENANT, CHECKPOINT_PREFIX) == []
    with reading(registry_factory, TENANT) as session:
        assert len(load_chain(session, TENANT)) == 31, "every append committed"
    assert any("retried on the next append" in r.getMessage() for r in caplog.records)

    store.down = False
    _append(registry_factory, 1)
    assert store.list_objects(TENANT, CHECKPOINT_PREFIX) == [checkpoint_key(25)]
    assert checkpointer.verify(TENANT).ok


def test_the_hook_runs_after_commit_outside_the_tenant_lock_and_not_for_rolled_back_work(
    registry_factory: sessionmaker[Session],
) -> None:
    TenantService(registry_factory).ensure_tenant(ADMIN, TENANT)
    seen: list[tuple[dict[str, int], int]] = []

    def hook(appended: dict[str, int]) -> None:
        # A new transaction can take the tenant's chain lock at once and sees the committed entry.
        with transaction(registry_factory, TENANT) as session:
            lock = sa.select(Tenant.id).where(Tenant.id == TENANT)
            if session.get_bind().dialect.name == "postgresql":
                lock = lock.with_for_update(nowait=True)
            session.execute(lock)
            seen.append((appended, len(load_chain(session, TENANT))))

    from evolution.registry.audit import add_commit_hook, remove_commit_hook

    engine = registry_factory.kw["bind"]
    add_commit_hook(engine, hook)
    try:
        _append(registry_factory, 2)
        with pytest.raises(RuntimeError), transaction(registry_factory, TENANT) as session:
            append_audit(
                session,
                tenant_id=TENANT,
                principal=ADMIN,
                action="test.rolled_back",
                subject_type="test",
                subject_id="x",
                at=utcnow(),
            )
            raise RuntimeError("the business operation fails after auditing")
        _append(registry_factory, 1)
    finally:
        remove_commit_hook(engine, hook)
    assert seen == [({TENANT: 2}, 2), ({TENANT: 3}, 3), ({TENANT: 4}, 4)]


def test_verify_still_reports_when_the_store_refuses_its_new_checkpoint(
    checkpointer: AuditCheckpointer, registry_factory: sessionmaker[Session], store: FlakyStore
) -> None:
    _append(registry_factory, 30)
    store.down = True
    report = checkpointer.verify(TENANT, write=True)
    assert report.ok and report.checkpoints == 1 and report.written is None
    assert report.refused is not None and "artifact store unreachable" in report.refused
    store.down = False
    again = checkpointer.checkpoint(TENANT)
    assert again.ok and again.written == 31 and again.refused is None


def test_a_checkpoint_is_compared_with_the_chain_only_at_the_size_it_was_signed_for(
    checkpointer: AuditCheckpointer, registry_factory: sessionmaker[Session], store: FlakyStore
) -> None:
    """A genuine checkpoint of size 25 stored as the one of size 30 claims a size its signature does not bind."""
    _append(registry_factory, 30)
    assert store.list_objects(TENANT, CHECKPOINT_PREFIX) == [checkpoint_key(25)]
    store.put_object(TENANT, checkpoint_key(30), store.get_object(TENANT, checkpoint_key(25)))

    report = checkpointer.verify(TENANT, write=True)
    assert report.problems == [
        f"tenant {TENANT}: checkpoint {checkpoint_key(30)} names position 25, not its key's"
    ]
    assert report.latest_size == 25 and report.written is None, "nothing is signed while a checkpoint fails"


# ----------------------------------------------------------------------------------- the restore acknowledgement
# A restore to an earlier point leaves the chain a prefix of what it was, while the write-once store keeps every
# checkpoint. These tests cut the tail as the database owner (the append-only trigger out of the way for that one
# statement), which leaves exactly that; the PITR drill does it with a real recovery.

REASON = "restored backup b-1 to 10:40 after the disk failure (INC-7)"


@pytest.fixture
def owner(
    registry_factory: sessionmaker[Session], request: pytest.FixtureRequest
) -> Iterator[sessionmaker[Session]]:
    """The database owner: the app's own SQLite file, or the PostgreSQL superuser (the app role cannot delete)."""
    engine = registry_factory.kw["bind"]
    assert isinstance(engine, sa.Engine)
    if engine.dialect.name != "postgresql":
        yield registry_factory
        return
    owner_engine = make_engine(request.getfixturevalue("pg_url"))
    try:
        yield make_session_factory(owner_engine)
    finally:
        owner_engine.dispose()


def _cut_chain_to(owner: sessionmaker[Session], size: int) -> None:
    with owner() as session, session.begin():
        delete = sa.delete(AuditEntry).where(AuditEntry.tenant_id == TENANT, AuditEntry.seq > size)
        if session.get_bind().dialect.name == "postgresql":
            session.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            session.execute(delete)
            session.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
            return
        trigger = session.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'audit_log_no_delete'")
        ).scalar_one()
        session.execute(sa.text("DROP TRIGGER audit_log_no_delete"))
        session.execute(delete)
        session.execute(sa.text(trigger))


def _entries(factory: sessionmaker[Session]) -> list[AuditEntry]:
    with reading(factory, TENANT) as session:
        return load_chain(session, TENANT)


def _restored_to_40(
    checkpointer: AuditCheckpointer, factory: sessionmaker[Session], owner: sessionmaker[Session]
) -> None:
    """61 entries, checkpointed at 25 and 50 by the hook and at 61 by verify; then a restore to position 40."""
    _append(factory, 60)
    assert checkpointer.checkpoint(TENANT).written == 61
    _cut_chain_to(owner, 40)


def _truncations(report: CheckpointReport) -> list[str]:
    return [p for p in report.problems if "removed (truncated)" in p]


def _beyond(store: FlakyStore, signer: LocalEd25519Signer, size: int) -> tuple[SupersededCheckpoint, ...]:
    found = []
    for key in store.list_objects(TENANT, CHECKPOINT_PREFIX):
        if key.startswith(ACKNOWLEDGEMENT_PREFIX):
            continue
        cp = parse_checkpoint(TENANT, key, store.get_object(TENANT, key), KeyRing.of(signer))
        if cp.size > size:
            found.append(SupersededCheckpoint(key=key, size=cp.size, root=cp.root))
    return tuple(sorted(found, key=lambda s: s.size))


def _store_acknowledgement(
    factory: sessionmaker[Session],
    store: FlakyStore,
    signer: Signer,
    *,
    head: str | None = None,
    supersedes: tuple[SupersededCheckpoint, ...],
    signed: bool = True,
    audited: bool = True,
    epoch: int = 1,
) -> str:
    """An acknowledgement of the chain at position 40 and its audit entry, stored as the system stores them but
    with what the test chooses in them and signed by ``signer``, so that only the rule under test can fail."""
    ack = RestoreAcknowledgement(
        tenant=TENANT,
        epoch=epoch,
        size=40,
        head=head or chain_heads(_entries(factory))[39],
        supersedes=supersedes,
        acknowledged_by="root",
        role="admin",
        reason=REASON,
        created_at=utcnow(),
    )
    if signed:
        data = SignedAcknowledgement(
            acknowledgement=ack, signature=signer.sign(ack.signed_payload())
        ).to_bytes()
    else:
        data = canonical_json({"acknowledgement": ack.model_dump(mode="json")})
    key = acknowledgement_key(epoch)
    if audited:
        with transaction(factory, TENANT) as session:
            append_audit(
                session,
                tenant_id=TENANT,
                principal=ADMIN,
                action=ACKNOWLEDGED_ACTION,
                subject_type="audit-chain",
                subject_id=TENANT,
                at=ack.created_at,
                details={"acknowledgement": key, "digest": hashlib.sha256(data).hexdigest()},
            )
    store.put_object(TENANT, key, data)
    return key


def test_the_restore_acknowledgement_supersedes_the_checkpoints_beyond_the_restored_chain_and_they_resume(
    checkpointer: AuditCheckpointer,
    registry_factory: sessionmaker[Session],
    store: FlakyStore,
    signer: LocalEd25519Signer,
    owner: sessionmaker[Session],
) -> None:
    _restored_to_40(checkpointer, registry_factory, owner)
    before = checkpointer.verify(TENANT, write=True)
    assert [p.split(":")[1].strip() for p in _truncations(before)] == ["position 50", "position 61"]
    assert before.written is None
    head_40 = chain_heads(_entries(registry_factory))[-1]

    done = checkpointer.acknowledge_restore(ADMIN, TENANT, REASON, backup_id="b-1", restored_to="time 10:40")

    ack = done.acknowledgement
    assert done.key == acknowledgement_key(1) == "audit-checkpoints/acknowledged-restores/000001.json"
    assert (ack.epoch, ack.size, ack.head) == (1, 40, head_40)
    assert [(s.key, s.size) for s in ack.supersedes] == [(checkpoint_key(50), 50), (checkpoint_key(61), 61)]
    assert (ack.acknowledged_by, ack.role, ack.reason, ack.backup_id) == ("root", "admin", REASON, "b-1")
    stored = store.get_object(TENANT, done.key)
    assert parse_acknowledgement(TENANT, done.key, stored, KeyRing.of(signer)) == ack, "signed by the system"
    entry = _entries(registry_factory)[40]
    assert (entry.seq, entry.action, entry.actor) == (41, ACKNOWLEDGED_ACTION, "root")
    assert entry.details["acknowledgement"] == done.key
    assert entry.details["digest"] == hashlib.sha256(stored).hexdigest()
    assert entry.details["reason"] == REASON and entry.details["supersedes"] == [
        checkpoint_key(50),
        checkpoint_key(61),
    ]
    assert done.report.ok and done.report.superseded == 2, done.report.problems
    assert done.report.written == 41 and done.report.epoch == 1, "the acknowledgement's entry is checkpointed"

    _append(
        registry_factory, 20
    )  # 61 entries again: the hook signs position 50 of epoch 1 beside the old one
    keys = store.list_objects(TENANT, CHECKPOINT_PREFIX)
    assert {checkpoint_key(41, 1), checkpoint_key(50, 1), checkpoint_key(50)} <= set(keys)
    old = parse_checkpoint(
        TENANT, checkpoint_key(50), store.get_object(TENANT, checkpoint_key(50)), KeyRing.of(signer)
    )
    new = parse_checkpoint(
        TENANT, checkpoint_key(50, 1), store.get_object(TENANT, checkpoint_key(50, 1)), KeyRing.of(signer)
    )
    assert (old.epoch, new.epoch) == (0, 1) and old.root != new.root, (
        "both stay verifiable, each under its key"
    )
    resumed = checkpointer.checkpoint(TENANT)
    assert resumed.ok and resumed.written == 61 and resumed.latest_size == 61, resumed.problems
    assert checkpoint_key(61, 1) in store.list_objects(TENANT, CHECKPOINT_PREFIX)

    # The acknowledgement excuses what it names, nothing later: cutting the new tail is reported.
    _cut_chain_to(owner, 55)
    after = checkpointer.verify(TENANT, write=True)
    assert [p.split(":")[1].strip() for p in _truncations(after)] == ["position 61"], after.problems
    assert after.written is None


def test_a_forged_or_unsigned_restore_acknowledgement_supersedes_nothing(
    checkpointer: AuditCheckpointer,
    registry_factory: sessionmaker[Session],
    store: FlakyStore,
    signer: LocalEd25519Signer,
    owner: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    _restored_to_40(checkpointer, registry_factory, owner)
    beyond = _beyond(store, signer, 40)
    forged = _store_acknowledgement(
        registry_factory, store, LocalEd25519Signer(tmp_path / "mallory"), supersedes=beyond
    )

    report = checkpointer.verify(TENANT, write=True)
    assert any(
        p.startswith(f"tenant {TENANT}: restore acknowledgement {forged}: signature invalid")
        for p in report.problems
    ), report.problems
    assert len(_truncations(report)) == 2 and report.superseded == 0 and report.written is None

    _cut_chain_to(owner, 40)
    unsigned = _store_acknowledgement(
        registry_factory, store, signer, supersedes=beyond, signed=False, epoch=2
    )
    report = checkpointer.verify(TENANT)
    assert any(
        f"restore acknowledgement {unsigned} is not a readable signed acknowledgement (signature: Field required)"
        in p
        for p in report.problems
    ), report.problems
    assert len(_truncations(report)) == 2

    _cut_chain_to(owner, 40)
    with pytest.raises(IntegrityViolation, match="never a rewritten chain or a forged checkpoint"):
        checkpointer.acknowledge_restore(ADMIN, TENANT, REASON)
    assert len(_entries(registry_factory)) == 40, "nothing acknowledged over a forged object"


OTHER_CHECKPOINTS: dict[
    str,
    tuple[
        Callable[[tuple[SupersededCheckpoint, ...], SupersededCheckpoint], tuple[SupersededCheckpoint, ...]],
        str,
    ],
] = {
    # (what the acknowledgement names, given the two beyond the chain and the one at 25 within it; the refusal)
    "leaves-one-out": (
        lambda beyond, _within: beyond[1:],
        f"it does not name {checkpoint_key(50)}, beyond position 40 too",
    ),
    "names-one-within-the-chain": (
        lambda beyond, within: (within, *beyond),
        f"it names checkpoint {checkpoint_key(25)}, which is not a checkpoint of an earlier epoch beyond position 40",
    ),
    "names-one-never-stored": (
        lambda beyond, _within: (
            *beyond,
            SupersededCheckpoint(key=checkpoint_key(75), size=75, root="a" * 64),
        ),
        f"it names checkpoint {checkpoint_key(75)}, which the store does not hold",
    ),
    "names-another-root": (
        lambda beyond, _within: (beyond[0], beyond[1].model_copy(update={"root": "b" * 64})),
        f"it names checkpoint {checkpoint_key(61)} with another size or root than the stored one",
    ),
}


@pytest.mark.parametrize("variant", list(OTHER_CHECKPOINTS))
def test_a_restore_acknowledgement_naming_other_checkpoints_than_those_beyond_the_chain_is_refused(
    checkpointer: AuditCheckpointer,
    registry_factory: sessionmaker[Session],
    store: FlakyStore,
    signer: LocalEd25519Signer,
    owner: sessionmaker[Session],
    variant: str,
) -> None:
    _restored_to_40(checkpointer, registry_factory, owner)
    choose, refusal = OTHER_CHECKPOINTS[variant]
    [within] = _beyond(store, signer, 0)[:1]
    key = _store_acknowledgement(
        registry_factory, store, signer, supersedes=choose(_beyond(store, signer, 40), within)
    )

    report = checkpointer.verify(TENANT, write=True)
    assert f"tenant {TENANT}: restore acknowledgement {key} does not hold: {refusal}" in " | ".join(
        report.problems
    ), report.problems
    assert len(_truncations(report)) == 2 and report.superseded == 0 and report.written is None


@pytest.mark.parametrize("variant", ["wrong-head", "no-audit-entry"])
def test_a_restore_acknowledgement_with_a_wrong_head_or_without_its_audit_entry_is_refused(
    checkpointer: AuditCheckpointer,
    registry_factory: sessionmaker[Session],
    store: FlakyStore,
    signer: LocalEd25519Signer,
    owner: sessionmaker[Session],
    variant: str,
) -> None:
    _restored_to_40(checkpointer, registry_factory, owner)
    heads = chain_heads(_entries(registry_factory))
    key = _store_acknowledgement(
        registry_factory,
        store,
        signer,
        supersedes=_beyond(store, signer, 40),
        head=heads[38] if variant == "wrong-head" else None,  # the head at 39
        audited=variant != "no-audit-entry",
    )

    report = checkpointer.verify(TENANT, write=True)
    refusal = (
        "the chain's recomputed head at position 40 is not the acknowledged head"
        if variant == "wrong-head"
        else f"position 41 is not the {ACKNOWLEDGED_ACTION} entry naming it"
    )
    assert f"restore acknowledgement {key} does not hold: {refusal}" in " | ".join(report.problems), (
        report.problems
    )
    assert len(_truncations(report)) == 2 and report.superseded == 0 and report.written is None


def test_acknowledging_is_refused_without_checkpoints_beyond_the_chain_or_over_a_rewritten_one(
    checkpointer: AuditCheckpointer,
    registry_factory: sessionmaker[Session],
    store: FlakyStore,
    owner: sessionmaker[Session],
) -> None:
    _append(registry_factory, 60)
    assert checkpointer.checkpoint(TENANT).written == 61
    with pytest.raises(
        InvalidInput, match="nothing to acknowledge: no checkpoint lies beyond the chain's 61"
    ):
        checkpointer.acknowledge_restore(ADMIN, TENANT, REASON)
    with pytest.raises(PermissionDenied, match="acknowledge_restore: role manager may not"):
        checkpointer.acknowledge_restore(Principal.for_tenant("m", Role.MANAGER, TENANT), TENANT, REASON)

    _cut_chain_to(owner, 40)
    with pytest.raises(InvalidInput, match="needs a reason"):
        checkpointer.acknowledge_restore(ADMIN, TENANT, "  ")
    # Signed before the point the registry was restored to: the chain was already short then, no restore explains it.
    with pytest.raises(IntegrityViolation, match="at or before the point restored to"):
        checkpointer.acknowledge_restore(ADMIN, TENANT, REASON, signed_after=utcnow())
    with owner() as session, session.begin():  # and an entry within the restored chain rewritten
        if session.get_bind().dialect.name == "postgresql":
            session.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            session.execute(sa.text("DROP TRIGGER audit_log_no_update"))
        session.execute(
            sa.update(AuditEntry)
            .where(AuditEntry.tenant_id == TENANT, AuditEntry.seq == 10)
            .values(actor="mallory")
        )
    with pytest.raises(IntegrityViolation, match="position 10: content does not match its hash"):
        checkpointer.acknowledge_restore(ADMIN, TENANT, REASON)
    assert len(_entries(registry_factory)) == 40
    assert not store.list_objects(TENANT, ACKNOWLEDGEMENT_PREFIX), "nothing acknowledged, nothing audited"


def test_a_second_restore_to_before_the_acknowledgement_supersedes_it_and_every_later_checkpoint(
    checkpointer: AuditCheckpointer,
    registry_factory: sessionmaker[Session],
    store: FlakyStore,
    owner: sessionmaker[Session],
) -> None:
    _restored_to_40(checkpointer, registry_factory, owner)
    first = checkpointer.acknowledge_restore(ADMIN, TENANT, REASON)
    _append(registry_factory, 20)
    assert checkpointer.checkpoint(TENANT).written == 61
    _cut_chain_to(owner, 30)  # before the first acknowledgement's own entry

    stale = checkpointer.verify(TENANT)
    assert f"restore acknowledgement {first.key} does not hold: the chain has 30 entries" in " | ".join(
        stale.problems
    )
    second = checkpointer.acknowledge_restore(ADMIN, TENANT, "restored again, to 10:30 (INC-8)")

    assert second.acknowledgement.epoch == 2 and second.acknowledgement.supersedes_acknowledgements == (
        first.key,
    )
    assert [s.key for s in second.acknowledgement.supersedes] == [
        checkpoint_key(41, 1),
        checkpoint_key(50),
        checkpoint_key(50, 1),
        checkpoint_key(61),
        checkpoint_key(61, 1),
    ]
    assert second.report.ok and second.report.written == 31 and second.report.epoch == 2, (
        second.report.problems
    )
    _append(registry_factory, 20)
    assert checkpoint_key(50, 2) in store.list_objects(TENANT, CHECKPOINT_PREFIX)
    final = checkpointer.verify(TENANT)
    assert final.ok and final.superseded == 5 and final.acknowledgements == 2, final.problems

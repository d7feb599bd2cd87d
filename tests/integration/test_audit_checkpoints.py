"""Signed audit checkpoints written by the post-commit hook, on SQLite and a real PostgreSQL.

The hook runs after the appending transaction has committed (outside the per-tenant lock), writes one checkpoint
per ``every`` entries even under concurrent writers, and a failure to write never fails the business operation:
it is logged and the checkpoint is written on the next append.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.integrity.signing import KeyRing, LocalEd25519Signer
from evolution.registry.audit import append_audit, load_chain
from evolution.registry.audit_checkpoints import (
    CHECKPOINT_PREFIX,
    AuditCheckpointer,
    chain_heads,
    checkpoint_key,
    parse_checkpoint,
)
from evolution.registry.db import reading, transaction
from evolution.registry.schema import Tenant
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

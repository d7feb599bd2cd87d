"""Concurrent audit writers on SQLite and a real PostgreSQL: one tenant's chain stays gapless, unique and intact.

Each append is its own transaction (that is the point: the position is assigned under the per-tenant lock, so a
naive "previous = highest seq" read cannot race). The writers are released together by a barrier.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evolution.registry.audit import append_audit, load_chain, verify_chain
from evolution.registry.db import reading, transaction
from evolution.registry.schema import AuditEntry
from evolution.registry.tenants import TenantService
from evolution.security import Principal, Role
from evolution.timeutil import utcnow

TENANT = "acme"
WRITERS = 16
PER_WRITER = 200
ADMIN = Principal.for_tenant("root", Role.ADMIN, TENANT)


def _write(factory: sessionmaker[Session], writer: int, barrier: threading.Barrier) -> list[int]:
    """``PER_WRITER`` appends, one transaction each; returns the positions this writer was given, in order."""
    principal = Principal.system(TENANT, f"writer-{writer}")
    positions: list[int] = []
    barrier.wait()
    for i in range(PER_WRITER):
        with transaction(factory, TENANT) as session:
            entry = append_audit(
                session,
                tenant_id=TENANT,
                principal=principal,
                action="test.appended",
                subject_type="test",
                subject_id=f"w{writer}-{i}",
                at=utcnow(),
                details={"writer": writer, "i": i},
            )
            positions.append(entry.seq)
    return positions


def test_sixteen_concurrent_writers_leave_one_gapless_unique_chain_that_verifies(
    registry_factory: sessionmaker[Session],
) -> None:
    TenantService(registry_factory).ensure_tenant(ADMIN, TENANT)
    with reading(registry_factory, TENANT) as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) or 0
    assert before >= 1, "the tenant's creation is audited, so the writers extend an existing chain"

    barrier = threading.Barrier(WRITERS)
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        futures = [pool.submit(_write, registry_factory, w, barrier) for w in range(WRITERS)]
        given = [f.result() for f in futures]  # re-raises any writer's error

    total = before + WRITERS * PER_WRITER
    with reading(registry_factory, TENANT) as session:
        chain = load_chain(session, TENANT)
    seqs = [e.seq for e in chain]
    assert len(chain) == total
    assert seqs == list(range(1, total + 1)), "positions must run 1..N without gap or duplicate"
    # Every append landed exactly once, at the position its writer was told.
    subjects = Counter(e.subject_id for e in chain if e.action == "test.appended")
    assert len(subjects) == WRITERS * PER_WRITER and set(subjects.values()) == {1}
    by_subject = {e.subject_id: e.seq for e in chain}
    for writer, positions in enumerate(given):
        assert positions == [by_subject[f"w{writer}-{i}"] for i in range(PER_WRITER)]
        assert positions == sorted(positions), "a writer's own commits keep their order in the chain"
    # Writers really interleaved: otherwise the test would not have exercised the lock.
    owners = [e.details["writer"] for e in chain if e.action == "test.appended"]
    switches = sum(1 for a, b in itertools.pairwise(owners) if a != b)
    assert switches >= WRITERS - 1

    report = verify_chain(TENANT, chain)
    assert report.ok, report.problems[:5]
    assert report.entries == total
    assert report.head_hash == chain[-1].entry_hash

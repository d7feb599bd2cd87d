"""An attacker with database access tampers with an audit chain; `evolution verify` catches it every time.

The attacker is the database owner (SQLite: the file's owner drops the append-only triggers; PostgreSQL: the
superuser disables them), so the triggers are out of the way. Each way of tampering — edit a field, delete a row,
swap two rows' positions, truncate the tail, truncate everything, rewrite the whole chain with every hash
recomputed — is detected by the verification function, naming the tenant and the position; the last three leave
a chain that verifies on its own and are caught by the signed checkpoints in the artifact store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from evolution.cli.main import app
from evolution.integrity.signing import LocalEd25519Signer
from evolution.platform.settings import Settings
from evolution.platform.verification import VerificationReport, verify_all
from evolution.platform.wiring import Services, build_services
from evolution.registry.audit import append_audit, entry_digest, load_chain
from evolution.registry.audit_checkpoints import (
    CHECKPOINT_PREFIX,
    AuditCheckpoint,
    AuditCheckpointer,
    SignedCheckpoint,
    chain_heads,
    checkpoint_key,
)
from evolution.registry.db import make_engine, make_session_factory, reading, transaction
from evolution.registry.schema import AuditEntry
from evolution.registry.tenants import TenantService
from evolution.security import Principal, Role
from evolution.timeutil import utcnow

TENANT = "acme"
OTHER = "globex"
ENTRIES = 250  # checkpoints by the hook at 100 and 200, by the first verify at 250
VICTIM = 137
ADMIN = Principal(user="root", role=Role.ADMIN, tenants=(TENANT, OTHER))


class Stack:
    def __init__(self, services: Services, app_url: str, attacker: sessionmaker[Session], home: Path) -> None:
        self.services = services
        self.app_url = app_url
        self.attacker = attacker
        self.home = home

    def checkpoints(self, tenant: str = TENANT) -> list[str]:
        return self.services.store.list_objects(tenant, CHECKPOINT_PREFIX)

    def verify(self) -> VerificationReport:
        return verify_all(self.services)

    def failures(self, kind: str, tenant: str = TENANT) -> list[str]:
        report = self.verify()
        return [c.detail for c in report.failures if c.kind == kind and c.tenant_id == tenant]


def _url_of(factory: sessionmaker[Session]) -> str:
    engine = factory.kw["bind"]
    assert isinstance(engine, sa.Engine)
    return engine.url.render_as_string(hide_password=False)


def _append(factory: sessionmaker[Session], tenant: str, count: int, per_transaction: int = 10) -> None:
    principal = Principal.system(tenant, "test")
    for start in range(0, count, per_transaction):
        with transaction(factory, tenant) as session:
            for i in range(start, min(count, start + per_transaction)):
                append_audit(
                    session,
                    tenant_id=tenant,
                    principal=principal,
                    action="test.appended",
                    subject_type="test",
                    subject_id=f"s-{i}",
                    at=utcnow(),
                    details={"i": i, "note": "x" * (i % 7)},
                )


def _disable_triggers(attacker: sessionmaker[Session]) -> None:
    with attacker() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            session.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            session.execute(sa.text("DROP TRIGGER audit_log_no_update"))
            session.execute(sa.text("DROP TRIGGER audit_log_no_delete"))


@pytest.fixture
def stack(
    registry_factory: sessionmaker[Session], request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Stack]:
    """Two tenants with audited history, checkpointed by the post-commit hook every 100 entries, verified once."""
    app_url = _url_of(registry_factory)
    owner_url = request.getfixturevalue("pg_url") if app_url.startswith("postgresql") else app_url
    home = tmp_path / "home"
    services = build_services(Settings(home=home, database_url=app_url), migrate=False)
    hook = AuditCheckpointer(services.factory, services.store, services.signer, every=100)
    hook.install()
    owner_engine = make_engine(owner_url)
    try:
        tenants = TenantService(services.factory)
        tenants.ensure_tenant(ADMIN, TENANT)
        tenants.ensure_tenant(ADMIN, OTHER)
        _append(services.factory, TENANT, ENTRIES - 1)
        _append(services.factory, OTHER, 30)
        stack = Stack(services, app_url, make_session_factory(owner_engine), home)
        assert stack.checkpoints() == [checkpoint_key(100), checkpoint_key(200)], "written by the hook"
        first = stack.verify()
        assert first.ok, first.failures
        assert stack.checkpoints()[-1] == checkpoint_key(ENTRIES), "verify checkpoints the current head"
        _disable_triggers(stack.attacker)
        yield stack
    finally:
        hook.uninstall()
        owner_engine.dispose()
        services.close()


def _edit_a_field(stack: Stack) -> None:
    with stack.attacker() as session, session.begin():
        session.execute(
            sa.update(AuditEntry)
            .where(AuditEntry.tenant_id == TENANT, AuditEntry.seq == VICTIM)
            .values(actor="mallory")
        )


def _delete_a_row(stack: Stack) -> None:
    with stack.attacker() as session, session.begin():
        session.execute(sa.delete(AuditEntry).where(AuditEntry.tenant_id == TENANT, AuditEntry.seq == VICTIM))


def _swap_two_rows(stack: Stack) -> None:
    def move(session: Session, old: int, new: int) -> None:
        session.execute(
            sa.update(AuditEntry).where(AuditEntry.tenant_id == TENANT, AuditEntry.seq == old).values(seq=new)
        )

    with stack.attacker() as session, session.begin():
        move(session, VICTIM, -1)
        move(session, VICTIM + 1, VICTIM)
        move(session, -1, VICTIM + 1)


def _truncate_the_tail(stack: Stack) -> None:
    with stack.attacker() as session, session.begin():
        session.execute(sa.delete(AuditEntry).where(AuditEntry.tenant_id == TENANT, AuditEntry.seq > 230))


def _truncate_everything(stack: Stack) -> None:
    with stack.attacker() as session, session.begin():
        session.execute(sa.delete(AuditEntry).where(AuditEntry.tenant_id == TENANT))


def rewrite_whole_chain(stack: Stack) -> None:
    """Change one entry, then recompute every position, link and hash so the chain is consistent again."""
    with stack.attacker() as session, session.begin():
        entries = load_chain(session, TENANT)
        session.execute(sa.delete(AuditEntry).where(AuditEntry.tenant_id == TENANT))
        prev = "0" * 64
        for e in entries:
            fields: dict[str, Any] = {
                "tenant_id": e.tenant_id,
                "seq": e.seq,
                "prev_hash": prev,
                "at": e.at,
                "actor": "mallory" if e.seq == VICTIM else e.actor,
                "role": e.role,
                "action": e.action,
                "subject_type": e.subject_type,
                "subject_id": e.subject_id,
                "from_state": e.from_state,
                "to_state": e.to_state,
                "request_id": e.request_id,
                "details": e.details,
            }
            prev = entry_digest(**fields)
            session.add(AuditEntry(entry_hash=prev, **fields))


# (tampering, does the chain walk alone catch it?, what the failure must name)
TAMPERING: dict[str, tuple[Callable[[Stack], None], bool, list[str]]] = {
    "edit-a-field": (_edit_a_field, True, [f"position {VICTIM}: content does not match its hash"]),
    "delete-a-row": (_delete_a_row, True, [f"position {VICTIM}: found {VICTIM + 1}"]),
    "swap-two-rows": (_swap_two_rows, True, [f"position {VICTIM}:"]),
    "truncate-the-tail": (
        _truncate_the_tail,
        False,
        ["position 250: the chain has only 230 entries", "truncated"],
    ),
    "truncate-everything": (_truncate_everything, False, ["position 100: the chain has only 0 entries"]),
    "rewrite-whole-chain": (
        rewrite_whole_chain,
        False,
        ["position 200:", "rewritten between positions 101 and 200"],
    ),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_verify_reports_tampering_naming_tenant_and_position(stack: Stack, name: str) -> None:
    tamper, chain_walk_sees_it, named = TAMPERING[name]
    before = stack.checkpoints()
    tamper(stack)

    report = stack.verify()
    assert not report.ok
    failed = {(c.tenant_id, c.kind) for c in report.failures}
    assert (TENANT, "audit-checkpoints") in failed, (
        report.failures
    )  # every tampering breaks a signed checkpoint
    assert ((TENANT, "audit-chain") in failed) is chain_walk_sees_it
    details = " | ".join(c.detail for c in report.failures if c.tenant_id == TENANT)
    for text in named:
        assert text in details, details
    assert {t for t, _ in failed} == {TENANT}, "the other tenant's chain is untouched and verifies"
    assert stack.checkpoints() == before, "nothing is signed over a tampered chain"
    assert stack.verify().failures == report.failures, "detected again on every run"


def test_the_cli_verify_and_checkpoint_fail_on_a_rewritten_chain(stack: Stack) -> None:
    rewrite_whole_chain(stack)
    runner = CliRunner()
    env = {"EVOLUTION_HOME": str(stack.home), "EVOLUTION_DATABASE_URL": stack.app_url}

    verified = runner.invoke(app, ["verify"], env=env)
    assert verified.exit_code == 1, verified.output
    failed = [line for line in verified.output.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].split()[:2] == [TENANT, "audit-checkpoints"], verified.output
    assert "position 200" in failed[0]

    refused = runner.invoke(app, ["audit", "checkpoint", "--tenant", TENANT], env=env)
    assert refused.exit_code == 1 and "REFUSED" in refused.output, refused.output
    assert stack.checkpoints()[-1] == checkpoint_key(ENTRIES)


def test_a_checkpoint_not_signed_by_the_system_key_is_reported(stack: Stack, tmp_path: Path) -> None:
    """Rewriting the chain and storing a checkpoint of the rewritten head does not help without the key."""
    rewrite_whole_chain(stack)
    _append(stack.services.factory, TENANT, 1)  # the hook refuses to sign: the chain no longer extends 250
    assert stack.checkpoints()[-1] == checkpoint_key(ENTRIES)
    with reading(stack.services.factory, TENANT) as session:
        heads = chain_heads(load_chain(session, TENANT))
    forged = AuditCheckpoint(tenant=TENANT, size=len(heads), root=heads[-1], created_at=utcnow())
    signature = LocalEd25519Signer(tmp_path / "forger").sign(forged.signed_payload())
    stack.services.store.put_object(
        TENANT,
        checkpoint_key(forged.size),
        SignedCheckpoint(checkpoint=forged, signature=signature).to_bytes(),
    )
    details = " | ".join(stack.failures("audit-checkpoints"))
    assert f"position {ENTRIES + 1}: signature invalid" in details and "not a trusted key" in details
    assert "position 200:" in details and "position 250:" in details

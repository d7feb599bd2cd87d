"""The audit log: append-only, hash-chained per tenant, positions assigned under a per-tenant lock."""

from __future__ import annotations

import hashlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.orm import Session, SessionTransaction

from evolution.canonical import canonical_json
from evolution.registry.schema import AuditEntry, Tenant
from evolution.security import Principal
from evolution.timeutil import iso

GENESIS_HASH = "0" * 64
log = logging.getLogger(__name__)

# session.info key: {tenant_id: highest position appended} in the session's current transaction.
_APPENDED = "evolution.audit.appended"
CommitHook = Callable[[dict[str, int]], None]
_commit_hooks: weakref.WeakKeyDictionary[Engine, list[CommitHook]] = weakref.WeakKeyDictionary()
_hooks_lock = threading.Lock()


def entry_digest(
    *,
    tenant_id: str,
    seq: int,
    prev_hash: str,
    at: datetime,
    actor: str,
    role: str,
    action: str,
    subject_type: str,
    subject_id: str,
    from_state: str | None,
    to_state: str | None,
    request_id: str | None,
    details: dict[str, Any],
) -> str:
    body = {
        "tenant_id": tenant_id,
        "seq": seq,
        "prev_hash": prev_hash,
        "at": iso(at),
        "actor": actor,
        "role": role,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "from_state": from_state,
        "to_state": to_state,
        "request_id": request_id,
        "details": details,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def lock_tenant_chain(session: Session, tenant_id: str) -> None:
    """Serialise chain appends per tenant (PostgreSQL: row lock; SQLite: BEGIN IMMEDIATE already serialises)."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


def append_audit(
    session: Session,
    *,
    tenant_id: str,
    principal: Principal,
    action: str,
    subject_type: str,
    subject_id: str,
    at: datetime,
    from_state: str | None = None,
    to_state: str | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    lock_tenant_chain(session, tenant_id)
    last = session.execute(
        select(AuditEntry.seq, AuditEntry.entry_hash)
        .where(AuditEntry.tenant_id == tenant_id)
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    seq = (last.seq + 1) if last else 1
    prev_hash = last.entry_hash if last else GENESIS_HASH
    details = details or {}
    fields: dict[str, Any] = {
        "tenant_id": tenant_id,
        "seq": seq,
        "prev_hash": prev_hash,
        "at": at,
        "actor": principal.user,
        "role": str(principal.role),
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "from_state": from_state,
        "to_state": to_state,
        "request_id": request_id,
        "details": details,
    }
    entry = AuditEntry(entry_hash=entry_digest(**fields), **fields)
    session.add(entry)
    session.flush()
    appended = session.info.setdefault(_APPENDED, {})
    appended[tenant_id] = max(seq, appended.get(tenant_id, 0))
    return entry


def add_commit_hook(engine: Engine, hook: CommitHook) -> None:
    """Call ``hook({tenant: highest position})`` after every commit on ``engine`` that appended audit entries.

    The hook runs after the commit, outside the transaction and its per-tenant lock (the session can no longer
    emit SQL; a hook opens its own). Whatever it raises is logged and swallowed: the business operation has
    committed and must not be reported as failed.
    """
    with _hooks_lock:
        hooks = _commit_hooks.setdefault(engine, [])
        if hook not in hooks:
            hooks.append(hook)


def remove_commit_hook(engine: Engine, hook: CommitHook) -> None:
    with _hooks_lock:
        hooks = _commit_hooks.get(engine, [])
        if hook in hooks:
            hooks.remove(hook)


@event.listens_for(Session, "after_commit")
def _run_commit_hooks(session: Session) -> None:
    appended: dict[str, int] | None = session.info.pop(_APPENDED, None)
    if not appended:
        return
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    with _hooks_lock:
        hooks = list(_commit_hooks.get(engine, ()))
    for hook in hooks:
        try:
            hook(dict(appended))
        except Exception:  # a hook's failure never becomes the committed operation's failure
            log.exception("audit post-commit hook %r failed", hook)


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_APPENDED, None)


class ChainReport(BaseModel):
    tenant_id: str
    entries: int
    ok: bool
    problems: list[str]
    head_hash: str


def digest_of(e: AuditEntry, seq: int | None = None, prev_hash: str | None = None) -> str:
    """The hash of a stored entry's content, at its own position or at ``seq`` after ``prev_hash``."""
    return entry_digest(
        tenant_id=e.tenant_id,
        seq=e.seq if seq is None else seq,
        prev_hash=e.prev_hash if prev_hash is None else prev_hash,
        at=e.at,
        actor=e.actor,
        role=e.role,
        action=e.action,
        subject_type=e.subject_type,
        subject_id=e.subject_id,
        from_state=e.from_state,
        to_state=e.to_state,
        request_id=e.request_id,
        details=e.details,
    )


def verify_chain(tenant_id: str, entries: Iterable[AuditEntry]) -> ChainReport:
    """Walk the chain in position order: positions contiguous from 1, each link and each hash recomputed."""
    problems: list[str] = []
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    for e in entries:
        count += 1
        if e.seq != expected_seq:
            problems.append(f"position {expected_seq}: found {e.seq} (entries missing or reordered)")
            expected_seq = e.seq
        if e.prev_hash != expected_prev:
            problems.append(f"position {e.seq}: link to the previous entry is broken")
        if digest_of(e) != e.entry_hash:
            problems.append(f"position {e.seq}: content does not match its hash (entry edited)")
        expected_prev = e.entry_hash
        expected_seq += 1
    return ChainReport(
        tenant_id=tenant_id, entries=count, ok=not problems, problems=problems, head_hash=expected_prev
    )


def load_chain(session: Session, tenant_id: str) -> list[AuditEntry]:
    return list(
        session.scalars(select(AuditEntry).where(AuditEntry.tenant_id == tenant_id).order_by(AuditEntry.seq))
    )

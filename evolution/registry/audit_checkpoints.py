"""Signed checkpoints of the audit chains: what lets ``evolution verify`` catch a rewrite of a whole chain.

The hash chain alone proves that no entry was edited, dropped or moved *relative to the others*; someone with
write access to the database can still truncate the tail, or rewrite every entry and recompute every hash, and the
chain will verify. A checkpoint pins the chain from outside the database: ``{tenant, size, root, created_at}``,
signed by the system signer and written once to the artifact store (``audit-checkpoints/<size:012d>.json``; WORM
in production: S3 object lock). A later rewrite of any entry at or before ``size`` changes the root; a truncation
below ``size`` leaves fewer than ``size`` entries. Both fail ``verify``.

The root is the chain's head hash at ``size`` (``root_kind = "chain-head-sha256"``), recomputed from the entries'
*content* by position: h_0 = 64 zeros, h_i = entry_digest(entry_i with seq = i and prev_hash = h_{i-1}). Every
entry hash already commits to its predecessor, so the head commits to the whole prefix, and ``verify`` recomputes
it in the walk it does anyway. A Merkle root over entry hashes would add O(log n) inclusion and consistency proofs
for auditors who hold only some entries; nobody asks for those here, and it would be a second structure to keep
consistent with the chain, so the simpler commitment wins.

When checkpoints are written:

* every ``every`` entries (default 100), by a hook that runs *after* the audit transaction commits (never inside
  the per-tenant lock). It signs only a head that extends the last checkpoint it trusts (the entries in between
  are re-linked and re-hashed), so it never signs over tampering. A failure is logged and retried on the next
  append; it never fails the business operation;
* by ``evolution audit checkpoint`` and on every ``evolution verify``, at the current head, and only when the
  whole chain and every earlier checkpoint verify.

What checkpoints cannot see: entries appended after the latest checkpoint can be truncated unnoticed until the
next checkpoint would have covered them (that is why ``verify`` writes one); and checkpoints deleted from the
store (prevented by object lock in production). The ``"*"`` chain (grants on every tenant) is not a store tenant
and is not checkpointed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.errors import Conflict, IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import TENANT_PATTERN, ArtifactStore
from evolution.integrity.signing import KeyRing, Signature, Signer
from evolution.registry.audit import (
    GENESIS_HASH,
    add_commit_hook,
    digest_of,
    load_chain,
    remove_commit_hook,
    verify_chain,
)
from evolution.registry.db import reading
from evolution.registry.schema import AuditEntry
from evolution.timeutil import iso, utcnow

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "audit-checkpoints"
DEFAULT_EVERY = 100
ROOT_KIND: Literal["chain-head-sha256"] = "chain-head-sha256"
PAYLOAD_TYPE = "evolution.audit-checkpoint/v1"
_KEY = re.compile(rf"^{CHECKPOINT_PREFIX}/(\d{{12}})\.json$")


def checkpoint_key(size: int) -> str:
    return f"{CHECKPOINT_PREFIX}/{size:012d}.json"


class AuditCheckpoint(BaseModel):
    """What is signed: this tenant's chain had ``size`` entries and its head hash was ``root``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1, max_length=64)
    size: int = Field(ge=1)
    root: str = Field(pattern=r"^[0-9a-f]{64}$")
    root_kind: Literal["chain-head-sha256"] = ROOT_KIND
    created_at: datetime

    @field_serializer("created_at")
    def _iso(self, value: datetime) -> str:
        return iso(value)

    def signed_payload(self) -> bytes:
        return canonical_json({"type": PAYLOAD_TYPE, **self.model_dump(mode="json")})


class SignedCheckpoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: AuditCheckpoint
    signature: Signature

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


class CheckpointReport(BaseModel):
    """The outcome for one tenant: how many checkpoints were checked, what is wrong, what was written."""

    tenant_id: str
    checkpoints: int = 0
    latest_size: int = 0
    entries: int = 0
    problems: list[str] = Field(default_factory=list)
    written: int | None = Field(
        default=None, description="Size of the checkpoint written by this run, if any."
    )
    refused: str | None = Field(default=None, description="Why no checkpoint was written although asked.")

    @property
    def ok(self) -> bool:
        return not self.problems


def chain_heads(entries: Iterable[AuditEntry], start: int = 0, head: str = GENESIS_HASH) -> list[str]:
    """``heads[i-1]`` = the head hash after the ``start + i``-th entry, recomputed from content by position.

    Stored hashes, stored links and stored positions are ignored: an edited, dropped or reordered entry changes
    every head from its position on, whatever the attacker wrote into those columns. ``start``/``head`` continue
    from a known head (a trusted checkpoint) instead of the genesis.
    """
    heads: list[str] = []
    for position, e in enumerate(entries, start=start + 1):
        head = digest_of(e, seq=position, prev_hash=head)
        heads.append(head)
    return heads


def parse_checkpoint(tenant_id: str, key: str, data: bytes, keyring: KeyRing) -> AuditCheckpoint:
    """A stored checkpoint, its signature verified and its key and tenant matching; IntegrityViolation if not."""
    try:
        signed = SignedCheckpoint.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise IntegrityViolation(
            f"tenant {tenant_id}: checkpoint {key} is not a readable signed checkpoint ({where}: {first['msg']})"
        ) from None
    cp = signed.checkpoint
    try:
        keyring.verify(cp.signed_payload(), signed.signature)
    except IntegrityViolation as error:
        raise IntegrityViolation(
            f"tenant {tenant_id}: checkpoint at position {cp.size}: signature invalid ({error})"
        ) from None
    if cp.tenant != tenant_id:
        raise IntegrityViolation(
            f"tenant {tenant_id}: checkpoint {key} was signed for tenant {cp.tenant!r} (copied from another tenant)"
        )
    if key != checkpoint_key(cp.size):
        raise IntegrityViolation(
            f"tenant {tenant_id}: checkpoint {key} names position {cp.size}, not its key's"
        )
    return cp


def check_against_chain(tenant_id: str, checkpoints: list[AuditCheckpoint], heads: list[str]) -> list[str]:
    """Problems of the chain (given as its recomputed ``heads``) against trusted checkpoints, in size order."""
    problems: list[str] = []
    size_now = len(heads)
    matched = 0
    for cp in sorted(checkpoints, key=lambda c: c.size):
        if size_now < cp.size:
            removed = (
                f"entry {cp.size} was"
                if size_now + 1 == cp.size
                else f"entries {size_now + 1}..{cp.size} were"
            )
            problems.append(
                f"position {cp.size}: the chain has only {size_now} entries but a signed checkpoint covers "
                f"{cp.size}: {removed} removed (truncated)"
            )
        elif heads[cp.size - 1] != cp.root:
            problems.append(
                f"position {cp.size}: the chain's recomputed head differs from the signed checkpoint's root: "
                f"it was rewritten between positions {matched + 1} and {cp.size} (the last checkpoint that "
                f"still matches is at position {matched or 'none'})"
            )
        else:
            matched = cp.size
    return problems


class AuditCheckpointer:
    """Writes and checks the signed checkpoints of every tenant's audit chain."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        signer: Signer,
        keyring: KeyRing | None = None,
        *,
        every: int = DEFAULT_EVERY,
    ) -> None:
        if every < 1:
            raise InvalidInput(f"audit checkpoint interval must be at least 1 entry, not {every}")
        self._factory = factory
        self._store = store
        self._signer = signer
        self._keyring = keyring if keyring is not None else KeyRing.of(signer)
        self.every = every
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, str]] = {}  # tenant -> (size, root) of the latest trusted checkpoint

    # -- the periodic hook ---------------------------------------------------------------------

    def install(self) -> None:
        """Write a checkpoint every ``every`` entries, after the appending transaction has committed."""
        add_commit_hook(self._engine(), self.on_committed)

    def uninstall(self) -> None:
        remove_commit_hook(self._engine(), self.on_committed)

    def _engine(self) -> Engine:
        engine = self._factory.kw.get("bind")
        if not isinstance(engine, Engine):
            raise InvalidInput("the session factory is bound to no engine: audit checkpoints need one")
        return engine

    def on_committed(self, appended: Mapping[str, int]) -> None:
        """The post-commit hook: never raises; a failed write is retried on the tenant's next append."""
        for tenant_id, position in appended.items():
            if not TENANT_PATTERN.match(tenant_id):
                continue  # the "*" chain has no tenant in the store
            try:
                self.maybe_checkpoint(tenant_id, position)
            except IntegrityViolation as error:
                log.error("audit checkpoint not written: %s", error, extra={"tenantId": tenant_id})
            except Exception as error:
                log.warning(
                    "audit checkpoint for %s not written (%s: %s); retried on the next append",
                    tenant_id,
                    type(error).__name__,
                    error,
                    extra={"tenantId": tenant_id},
                )

    def maybe_checkpoint(self, tenant_id: str, position: int) -> AuditCheckpoint | None:
        """Checkpoint the latest multiple of ``every`` at or below ``position`` unless one already covers it."""
        target = position // self.every * self.every
        if target == 0:
            return None
        cached = self._last.get(tenant_id)
        if cached is not None and cached[0] >= target:
            return None  # the common case: no store or database access at all
        with self._lock:
            last = self._latest_trusted(tenant_id)
            if last is not None and last[0] >= target:
                return None
            root = self._extend(tenant_id, last, target)
            return self._write(tenant_id, target, root)

    def _latest_trusted(self, tenant_id: str) -> tuple[int, str] | None:
        cached = self._last.get(tenant_id)
        keys = self._keys(tenant_id)
        if not keys:
            return cached
        latest = max(keys)
        if cached is not None and cached[0] >= latest[0]:
            return cached
        cp = parse_checkpoint(
            tenant_id, latest[1], self._store.get_object(tenant_id, latest[1]), self._keyring
        )
        self._last[tenant_id] = (cp.size, cp.root)
        return cp.size, cp.root

    def _extend(self, tenant_id: str, last: tuple[int, str] | None, target: int) -> str:
        """The head at ``target``, after checking that entries last+1..target extend the trusted ``last``."""
        start, head = last if last is not None else (0, GENESIS_HASH)
        with reading(self._factory, tenant_id) as session:
            entries = list(
                session.scalars(
                    select(AuditEntry)
                    .where(
                        AuditEntry.tenant_id == tenant_id, AuditEntry.seq > start, AuditEntry.seq <= target
                    )
                    .order_by(AuditEntry.seq)
                )
            )
        if len(entries) != target - start:
            raise IntegrityViolation(
                f"tenant {tenant_id}: positions {start + 1}..{target} hold {len(entries)} entries, not "
                f"{target - start}; no checkpoint written"
            )
        heads = chain_heads(entries, start, head)
        for e, recomputed in zip(entries, heads, strict=True):
            if e.entry_hash != recomputed:
                raise IntegrityViolation(
                    f"tenant {tenant_id}: position {e.seq} does not extend the checkpoint at position {start} "
                    "(edited, reordered or rewritten); no checkpoint written"
                )
        return heads[-1]

    # -- explicit checkpoints and verification --------------------------------------------------

    def checkpoint(self, tenant_id: str) -> CheckpointReport:
        """Verify the whole chain and every checkpoint; if all holds, sign the current head.

        Nothing is written over a chain that does not verify: the report lists the problems instead.
        """
        return self.verify(tenant_id, write=True)

    def verify(self, tenant_id: str, *, write: bool = False) -> CheckpointReport:
        """Check every stored checkpoint: signature, tenant, key, and the chain's recomputed head at its size.

        With ``write``, a checkpoint of the current head is added when the chain and all checkpoints verify.
        """
        report = CheckpointReport(tenant_id=tenant_id)
        if not TENANT_PATTERN.match(tenant_id):
            return report
        with reading(self._factory, tenant_id) as session:
            entries = load_chain(session, tenant_id)
        report.entries = len(entries)
        trusted: list[AuditCheckpoint] = []
        for _size, key in self._keys(tenant_id):
            report.checkpoints += 1
            try:
                trusted.append(
                    parse_checkpoint(tenant_id, key, self._store.get_object(tenant_id, key), self._keyring)
                )
            except (IntegrityViolation, NotFound) as error:
                report.problems.append(str(error))
        for key in self._stray_keys(tenant_id):
            report.problems.append(f"tenant {tenant_id}: {key} is not a checkpoint the system writes")
        heads = chain_heads(entries)
        report.problems.extend(
            f"tenant {tenant_id}: {p}" for p in check_against_chain(tenant_id, trusted, heads)
        )
        report.latest_size = max((c.size for c in trusted), default=0)
        if not write:
            return report
        if report.problems:
            report.refused = "the checkpoints do not verify"
            return report
        if not entries:
            report.refused = "the chain is empty"
            return report
        chain = verify_chain(tenant_id, entries)
        if not chain.ok:  # never sign over a broken chain (the chain walk reports the problems itself)
            report.refused = "the chain does not verify: " + "; ".join(chain.problems[:3])
            return report
        if report.latest_size < len(entries):
            try:
                with self._lock:
                    self._write(tenant_id, len(entries), heads[-1])
            except IntegrityViolation as error:
                report.problems.append(str(error))
                return report
            except Exception as error:  # a read-only or unreachable store: the checks above still stand
                log.warning("audit checkpoint not written: %s", error, extra={"tenantId": tenant_id})
                report.refused = f"the artifact store refused the write ({type(error).__name__}: {error})"
                return report
            report.written = len(entries)
            report.latest_size = len(entries)
        return report

    # -- the store ------------------------------------------------------------------------------

    def _keys(self, tenant_id: str) -> list[tuple[int, str]]:
        keys = []
        for key in self._store.list_objects(tenant_id, CHECKPOINT_PREFIX):
            match = _KEY.match(key)
            if match:
                keys.append((int(match.group(1)), key))
        return sorted(keys)

    def _stray_keys(self, tenant_id: str) -> list[str]:
        return [k for k in self._store.list_objects(tenant_id, CHECKPOINT_PREFIX) if not _KEY.match(k)]

    def _write(self, tenant_id: str, size: int, root: str) -> AuditCheckpoint:
        """Sign and store; if another writer stored this size first, its root must be ours (else: a fork)."""
        cp = AuditCheckpoint(tenant=tenant_id, size=size, root=root, created_at=utcnow())
        signed = SignedCheckpoint(checkpoint=cp, signature=self._signer.sign(cp.signed_payload()))
        key = checkpoint_key(size)
        try:
            self._store.put_object(tenant_id, key, signed.to_bytes())
        except Conflict:
            existing = parse_checkpoint(tenant_id, key, self._store.get_object(tenant_id, key), self._keyring)
            if existing.root != root:
                raise IntegrityViolation(
                    f"tenant {tenant_id}: position {size}: a checkpoint with another root is already stored "
                    "(the chain forked or was rewritten)"
                ) from None
            cp = existing
        self._last[tenant_id] = max(self._last.get(tenant_id, (0, GENESIS_HASH)), (cp.size, cp.root))
        log.info("audit checkpoint at position %d signed", size, extra={"tenantId": tenant_id})
        return cp

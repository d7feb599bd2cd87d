"""Signed checkpoints of the audit chains: what lets ``evolution verify`` catch a rewrite of a whole chain.

The hash chain alone proves that no entry was edited, dropped or moved *relative to the others*; someone with
write access to the database can still truncate the tail, or rewrite every entry and recompute every hash, and the
chain will verify. A checkpoint pins the chain from outside the database: ``{tenant, size, root, created_at}``,
signed by the system signer and written once to the artifact store (``audit-checkpoints/<size:012d>.json``; WORM
in production: S3 object lock). A later rewrite of any entry at or before ``size`` changes the root; a truncation
below ``size`` leaves fewer than ``size`` entries. Both fail ``verify``. The size is signed with the root and named
by the key, so a checkpoint is only ever compared with the chain at the size it was signed for: one stored under
another size's key is refused, whatever its signature.

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

Restores to an earlier point. The store, write-once, keeps the checkpoints signed after the point the registry was
restored to, and the restored chain is shorter than they are: exactly what a truncation looks like. An admin says
that it was a restore with a *restore acknowledgement* (``audit-checkpoints/acknowledged-restores/<epoch:06d>.json``),
signed by the system signer: the tenant, the restored chain's size and head, every checkpoint it supersedes (key,
size, root), the earlier acknowledgements that no longer hold, who acknowledged, why, and the backup and point
restored to. It is written in the same transaction as the ``audit.restore_acknowledged`` entry that follows the
acknowledged head (that entry names the object and the SHA-256 of its bytes), so the acknowledgement is chained
and the next checkpoint covers it. ``verify`` honours an acknowledgement only when its signature verifies, the chain
at its size has its head, the entry right after it is its audit entry, and it names *exactly* the checkpoints of
earlier epochs beyond its size and the earlier acknowledgements that do not hold; the checkpoints it names are then
superseded, and every other checkpoint is still compared with the chain, so a truncation nobody acknowledged, or one
below an acknowledged head, is still reported. Acknowledgement ``n`` opens epoch ``n``: the checkpoints written
after it are ``audit-checkpoints/epoch-<n:06d>/<size:012d>.json`` (the epoch is signed with the size and root), so a
position an old, superseded checkpoint used can be checkpointed again without touching the old object, which stays
verifiable. Epoch 0 keeps the original names and payload, so the checkpoints written before acknowledgements existed
verify unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

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
    append_audit,
    digest_of,
    load_chain,
    lock_tenant_chain,
    remove_commit_hook,
    verify_chain,
)
from evolution.registry.db import reading, transaction
from evolution.registry.schema import AuditEntry
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, iso, utcnow

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "audit-checkpoints"
ACKNOWLEDGEMENT_PREFIX = f"{CHECKPOINT_PREFIX}/acknowledged-restores"
ACKNOWLEDGED_ACTION = "audit.restore_acknowledged"
DEFAULT_EVERY = 100
ROOT_KIND: Literal["chain-head-sha256"] = "chain-head-sha256"
PAYLOAD_TYPE = "evolution.audit-checkpoint/v1"
ACKNOWLEDGEMENT_PAYLOAD_TYPE = "evolution.audit-restore-acknowledgement/v1"
_HEX64 = r"^[0-9a-f]{64}$"
_KEY = re.compile(rf"^{CHECKPOINT_PREFIX}/(?:epoch-(\d{{6}})/)?(\d{{12}})\.json$")
_ACKNOWLEDGEMENT_KEY = re.compile(rf"^{ACKNOWLEDGEMENT_PREFIX}/(\d{{6}})\.json$")


def checkpoint_key(size: int, epoch: int = 0) -> str:
    """Epoch 0 (before any acknowledged restore) keeps the original flat names."""
    if epoch == 0:
        return f"{CHECKPOINT_PREFIX}/{size:012d}.json"
    return f"{CHECKPOINT_PREFIX}/epoch-{epoch:06d}/{size:012d}.json"


def acknowledgement_key(epoch: int) -> str:
    return f"{ACKNOWLEDGEMENT_PREFIX}/{epoch:06d}.json"


class AuditCheckpoint(BaseModel):
    """What is signed: this tenant's chain had ``size`` entries and its head hash was ``root``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1, max_length=64)
    size: int = Field(ge=1)
    root: str = Field(pattern=_HEX64)
    root_kind: Literal["chain-head-sha256"] = ROOT_KIND
    created_at: datetime
    epoch: int = Field(default=0, ge=0)

    @field_serializer("created_at")
    def _iso(self, value: datetime) -> str:
        return iso(value)

    def document(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if self.epoch == 0:  # the epoch-0 payload stays byte for byte what it was before epochs existed
            del data["epoch"]
        return data

    def signed_payload(self) -> bytes:
        return canonical_json({"type": PAYLOAD_TYPE, **self.document()})


class SignedCheckpoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: AuditCheckpoint
    signature: Signature

    def to_bytes(self) -> bytes:
        return canonical_json(
            {"checkpoint": self.checkpoint.document(), "signature": self.signature.model_dump(mode="json")}
        )


class SupersededCheckpoint(BaseModel):
    """A checkpoint an acknowledgement supersedes, named by where it is stored and what it signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, max_length=200)
    size: int = Field(ge=1)
    root: str = Field(pattern=_HEX64)


class RestoreAcknowledgement(BaseModel):
    """What is signed: this tenant's chain was restored to ``size`` entries with head ``head``, and the checkpoints
    (and acknowledgements) named here belong to the history the restore gave up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1, max_length=64)
    epoch: int = Field(ge=1)
    size: int = Field(ge=1)
    head: str = Field(pattern=_HEX64)
    supersedes: tuple[SupersededCheckpoint, ...]
    supersedes_acknowledgements: tuple[str, ...] = ()
    acknowledged_by: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=16)
    reason: str = Field(min_length=1, max_length=2000)
    backup_id: str | None = Field(default=None, max_length=200)
    restored_to: str | None = Field(default=None, max_length=200)
    created_at: datetime

    @field_serializer("created_at")
    def _iso(self, value: datetime) -> str:
        return iso(value)

    def signed_payload(self) -> bytes:
        return canonical_json({"type": ACKNOWLEDGEMENT_PAYLOAD_TYPE, **self.model_dump(mode="json")})


class SignedAcknowledgement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    acknowledgement: RestoreAcknowledgement
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
    acknowledgements: int = Field(default=0, description="Restore acknowledgements stored for the tenant.")
    superseded: int = Field(
        default=0, description="Checkpoints superseded by an acknowledgement that holds (not compared)."
    )
    epoch: int = Field(default=0, description="The epoch new checkpoints are written in.")

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
            f"tenant {tenant_id}: checkpoint {key} at position {cp.size}: signature invalid ({error})"
        ) from None
    if cp.tenant != tenant_id:
        raise IntegrityViolation(
            f"tenant {tenant_id}: checkpoint {key} was signed for tenant {cp.tenant!r} (copied from another tenant)"
        )
    if key != checkpoint_key(cp.size, cp.epoch):
        epoch = f" of epoch {cp.epoch}" if cp.epoch else ""
        raise IntegrityViolation(
            f"tenant {tenant_id}: checkpoint {key} names position {cp.size}{epoch}, not its key's"
        )
    return cp


def parse_acknowledgement(tenant_id: str, key: str, data: bytes, keyring: KeyRing) -> RestoreAcknowledgement:
    """A stored restore acknowledgement, its signature verified and its key and tenant matching."""
    try:
        signed = SignedAcknowledgement.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise IntegrityViolation(
            f"tenant {tenant_id}: restore acknowledgement {key} is not a readable signed acknowledgement "
            f"({where}: {first['msg']})"
        ) from None
    ack = signed.acknowledgement
    try:
        keyring.verify(ack.signed_payload(), signed.signature)
    except IntegrityViolation as error:
        raise IntegrityViolation(
            f"tenant {tenant_id}: restore acknowledgement {key}: signature invalid ({error})"
        ) from None
    if ack.tenant != tenant_id:
        raise IntegrityViolation(
            f"tenant {tenant_id}: restore acknowledgement {key} was signed for tenant {ack.tenant!r}"
        )
    if key != acknowledgement_key(ack.epoch):
        raise IntegrityViolation(
            f"tenant {tenant_id}: restore acknowledgement {key} names epoch {ack.epoch}, not its key's"
        )
    return ack


def parse_stored_object(
    tenant_id: str, key: str, data: bytes, keyring: KeyRing
) -> AuditCheckpoint | RestoreAcknowledgement:
    """Any object below ``audit-checkpoints/``: a checkpoint or a restore acknowledgement, each checked as such."""
    if key.startswith(ACKNOWLEDGEMENT_PREFIX + "/"):
        return parse_acknowledgement(tenant_id, key, data, keyring)
    return parse_checkpoint(tenant_id, key, data, keyring)


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


@dataclass
class StoredCheckpoints:
    """What the store holds below ``audit-checkpoints/`` for one tenant, each object parsed and checked."""

    checkpoints: dict[str, AuditCheckpoint] = field(default_factory=dict)
    # key -> (the acknowledgement, the SHA-256 of its stored bytes: its audit entry names that digest)
    acknowledgements: dict[str, tuple[RestoreAcknowledgement, str]] = field(default_factory=dict)
    listed_checkpoints: int = 0
    listed_acknowledgements: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        """The epoch checkpoints are written in now: that of the latest acknowledgement (0: none yet)."""
        return max((ack.epoch for ack, _digest in self.acknowledgements.values()), default=0)


@dataclass
class Supersession:
    """What the acknowledgements that hold supersede, and why each of the others does not hold."""

    checkpoints: set[str] = field(default_factory=set)
    acknowledgements: set[str] = field(default_factory=set)
    holding: list[RestoreAcknowledgement] = field(default_factory=list)
    not_holding: dict[str, str] = field(default_factory=dict)


def supersession(entries: list[AuditEntry], heads: list[str], stored: StoredCheckpoints) -> Supersession:
    """Evaluate every stored acknowledgement against the chain, oldest epoch first (each may name older ones)."""
    result = Supersession()
    for key, (ack, digest) in sorted(stored.acknowledgements.items(), key=lambda item: item[1][0].epoch):
        why = _why_not_holding(key, ack, digest, entries, heads, stored, result.not_holding)
        if why is None:
            result.holding.append(ack)
            result.checkpoints.update(named.key for named in ack.supersedes)
            result.acknowledgements.update(ack.supersedes_acknowledgements)
        else:
            result.not_holding[key] = why
    return result


def _why_not_holding(
    key: str,
    ack: RestoreAcknowledgement,
    digest: str,
    entries: list[AuditEntry],
    heads: list[str],
    stored: StoredCheckpoints,
    earlier_not_holding: Mapping[str, str],
) -> str | None:
    """None if the acknowledgement holds; else the first rule it breaks (see the module docs)."""
    if len(heads) < ack.size:
        return f"the chain has {len(heads)} entries, fewer than the {ack.size} it acknowledges"
    if heads[ack.size - 1] != ack.head:
        return f"the chain's recomputed head at position {ack.size} is not the acknowledged head"
    entry = entries[ack.size] if len(entries) > ack.size else None
    if (
        entry is None
        or entry.action != ACKNOWLEDGED_ACTION
        or entry.details.get("acknowledgement") != key
        or entry.details.get("digest") != digest
    ):
        return f"position {ack.size + 1} is not the {ACKNOWLEDGED_ACTION} entry naming it"
    # Exactly the checkpoints of earlier epochs beyond its size: it cannot excuse one inside the chain it vouches
    # for, and one it leaves out is still compared with the chain.
    expected = {k for k, cp in stored.checkpoints.items() if cp.epoch < ack.epoch and cp.size > ack.size}
    for named in ack.supersedes:
        cp = stored.checkpoints.get(named.key)
        if cp is None:
            return (
                f"it names checkpoint {named.key}, which the store does not hold (or which does not verify)"
            )
        if named.key not in expected:
            return (
                f"it names checkpoint {named.key}, which is not a checkpoint of an earlier epoch beyond "
                f"position {ack.size}"
            )
        if (cp.size, cp.root) != (named.size, named.root):
            return f"it names checkpoint {named.key} with another size or root than the stored one"
    unnamed = sorted(expected - {named.key for named in ack.supersedes})
    if unnamed:
        return f"it does not name {_listed(unnamed)}, beyond position {ack.size} too"
    named_acks = set(ack.supersedes_acknowledgements)
    if named_acks - set(earlier_not_holding):
        return f"it names {_listed(sorted(named_acks - set(earlier_not_holding)))}, not an earlier one that fails"
    if set(earlier_not_holding) - named_acks:
        return (
            f"it does not name {_listed(sorted(set(earlier_not_holding) - named_acks))}, which does not hold"
        )
    return None


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


@dataclass
class PendingRestore:
    """What an acknowledgement of the tenant's chain as it is now would say, and what stops one."""

    tenant_id: str
    size: int
    head: str
    epoch: int
    supersedes: list[SupersededCheckpoint]
    supersedes_acknowledgements: list[str]
    unacknowledged: list[AuditCheckpoint]
    stale: list[str]
    problems: list[str]

    @property
    def needed(self) -> bool:
        """Checkpoints beyond the chain, or acknowledgements that no longer hold, that nothing supersedes yet."""
        return bool(self.unacknowledged or self.stale)


@dataclass(frozen=True)
class Acknowledged:
    key: str
    acknowledgement: RestoreAcknowledgement
    report: CheckpointReport


class AuditCheckpointer:
    """Writes and checks the signed checkpoints of every tenant's audit chain, and acknowledges restores."""

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
        # tenant -> (epoch, size, root) of the latest trusted signed head (a checkpoint, or an acknowledgement)
        self._last: dict[str, tuple[int, int, str]] = {}

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
        if cached is not None and cached[1] >= target:
            return None  # the common case: no store or database access at all
        with self._lock:
            last = self._latest_trusted(tenant_id)
            if last is not None and last[1] >= target:
                return None
            epoch = last[0] if last is not None else 0
            root = self._extend(tenant_id, (last[1], last[2]) if last is not None else None, target)
            return self._write(tenant_id, target, root, epoch)

    def _latest_trusted(self, tenant_id: str) -> tuple[int, int, str] | None:
        """The latest signed head of the current epoch: its latest checkpoint, or the acknowledgement opening it.

        Only a head the entries after it extend is ever signed over (:meth:`_extend`), so an acknowledgement that
        no longer holds stops the checkpoints until a new one is written, as a restore does before one.
        """
        keys = self._store.list_objects(tenant_id, CHECKPOINT_PREFIX)
        candidates: list[tuple[int, int, str]] = []
        epoch = 0
        acknowledgements = sorted(k for k in keys if _ACKNOWLEDGEMENT_KEY.match(k))
        if acknowledgements:
            key = acknowledgements[-1]
            ack = parse_acknowledgement(tenant_id, key, self._store.get_object(tenant_id, key), self._keyring)
            epoch = ack.epoch
            candidates.append((ack.epoch, ack.size, ack.head))
        sizes = []
        for key in keys:
            match = _KEY.match(key)
            if match and int(match.group(1) or 0) == epoch:
                sizes.append((int(match.group(2)), key))
        cached = self._last.get(tenant_id)
        if sizes:
            size, key = max(sizes)
            if cached is None or cached[:2] < (epoch, size):
                cp = parse_checkpoint(tenant_id, key, self._store.get_object(tenant_id, key), self._keyring)
                candidates.append((cp.epoch, cp.size, cp.root))
        latest = max(candidates, default=None)
        if cached is not None and (latest is None or cached[:2] >= latest[:2]):
            return cached
        if latest is not None:
            self._last[tenant_id] = latest
        return latest

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
        """Check every stored checkpoint and acknowledgement: signature, tenant, key; each acknowledgement's rules;
        and the chain's recomputed head at the size of every checkpoint no acknowledgement that holds supersedes.

        With ``write``, a checkpoint of the current head is added when the chain and all checkpoints verify.
        """
        report = CheckpointReport(tenant_id=tenant_id)
        if not TENANT_PATTERN.match(tenant_id):
            return report
        with reading(self._factory, tenant_id) as session:
            entries = load_chain(session, tenant_id)
        report.entries = len(entries)
        stored = self.stored(tenant_id)
        report.checkpoints = stored.listed_checkpoints
        report.acknowledgements = stored.listed_acknowledgements
        report.epoch = stored.epoch
        report.problems.extend(stored.problems)
        heads = chain_heads(entries)
        superseded = supersession(entries, heads, stored)
        report.problems.extend(
            f"tenant {tenant_id}: restore acknowledgement {key} does not hold: {why}; it supersedes nothing"
            for key, why in superseded.not_holding.items()
            if key not in superseded.acknowledgements
        )
        live = [cp for key, cp in stored.checkpoints.items() if key not in superseded.checkpoints]
        report.superseded = len(stored.checkpoints) - len(live)
        report.problems.extend(
            f"tenant {tenant_id}: {p}" for p in check_against_chain(tenant_id, live, heads)
        )
        report.latest_size = max([c.size for c in live] + [a.size for a in superseded.holding], default=0)
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
                    self._write(tenant_id, len(entries), heads[-1], stored.epoch)
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

    # -- restores to an earlier point ------------------------------------------------------------

    def pending_restore(self, tenant_id: str) -> PendingRestore:
        """What :meth:`acknowledge_restore` would supersede now, and what would stop it; changes nothing."""
        with reading(self._factory, tenant_id) as session:
            entries = load_chain(session, tenant_id)
        return self._pending(tenant_id, entries, self.stored(tenant_id))

    def acknowledge_restore(
        self,
        principal: Principal,
        tenant_id: str,
        reason: str,
        *,
        backup_id: str | None = None,
        restored_to: str | None = None,
        signed_after: datetime | None = None,
    ) -> Acknowledged:
        """Sign and store an acknowledgement that the checkpoints beyond the chain belong to a history a restore
        gave up, audited in the same transaction, then checkpoint the new head.

        Refused (nothing written) unless there is something to acknowledge and the chain, and every checkpoint
        within it, verifies: an acknowledgement excuses a shorter chain, never a rewritten one. With
        ``signed_after`` (the point restored to), a checkpoint beyond the chain signed at or before that point is
        refused too: the chain was already shorter than it then, which no restore explains.
        """
        authorize(principal, Action.ACKNOWLEDGE_RESTORE, tenant_id)
        reason = reason.strip()
        if not reason:
            raise InvalidInput(
                "a restore acknowledgement needs a reason: what was restored, to when, and why"
            )
        if not TENANT_PATTERN.match(tenant_id):
            raise InvalidInput(f"tenant id {tenant_id!r} must match {TENANT_PATTERN.pattern}")
        with transaction(self._factory, tenant_id) as session:
            # Held until the commit: nothing is appended between the head read here and the acknowledgement's entry.
            lock_tenant_chain(session, tenant_id)
            entries = load_chain(session, tenant_id)
            pending = self._pending(tenant_id, entries, self.stored(tenant_id))
            _refuse_unless_acknowledgeable(pending, signed_after)
            ack = RestoreAcknowledgement(
                tenant=tenant_id,
                epoch=pending.epoch,
                size=pending.size,
                head=pending.head,
                supersedes=tuple(pending.supersedes),
                supersedes_acknowledgements=tuple(pending.supersedes_acknowledgements),
                acknowledged_by=principal.user,
                role=str(principal.role),
                reason=reason,
                backup_id=backup_id,
                restored_to=restored_to,
                created_at=utcnow(),
            )
            data = SignedAcknowledgement(
                acknowledgement=ack, signature=self._signer.sign(ack.signed_payload())
            ).to_bytes()
            key = acknowledgement_key(ack.epoch)
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action=ACKNOWLEDGED_ACTION,
                subject_type="audit-chain",
                subject_id=tenant_id,
                at=ack.created_at,
                details={
                    "acknowledgement": key,
                    "digest": hashlib.sha256(data).hexdigest(),
                    "size": ack.size,
                    "head": ack.head,
                    "supersedes": [named.key for named in ack.supersedes],
                    "supersedes_acknowledgements": list(ack.supersedes_acknowledgements),
                    "reason": reason,
                    "backup_id": backup_id,
                    "restored_to": restored_to,
                },
            )
            # Stored before the commit: if the store refuses, the entry rolls back and nothing was acknowledged.
            try:
                self._store.put_object(tenant_id, key, data)
            except Conflict:
                raise Conflict(
                    f"tenant {tenant_id}: another restore acknowledgement ({key}) was stored meanwhile; nothing "
                    "acknowledged: run the command again"
                ) from None
        with self._lock:
            self._last[tenant_id] = max(
                self._last.get(tenant_id, (0, 0, GENESIS_HASH)), (ack.epoch, ack.size, ack.head)
            )
        log.warning(
            "audit restore acknowledged by %s: %d checkpoints superseded beyond position %d (%s)",
            principal.user,
            len(ack.supersedes),
            ack.size,
            reason,
            extra={"tenantId": tenant_id},
        )
        return Acknowledged(key=key, acknowledgement=ack, report=self.verify(tenant_id, write=True))

    def _pending(
        self, tenant_id: str, entries: list[AuditEntry], stored: StoredCheckpoints
    ) -> PendingRestore:
        heads = chain_heads(entries)
        problems = list(stored.problems)
        chain = verify_chain(tenant_id, entries)
        if not chain.ok:
            problems.append("the chain does not verify: " + "; ".join(chain.problems[:3]))
        superseded = supersession(entries, heads, stored)
        live = [cp for key, cp in stored.checkpoints.items() if key not in superseded.checkpoints]
        problems.extend(check_against_chain(tenant_id, [cp for cp in live if cp.size <= len(entries)], heads))
        beyond = {key: cp for key, cp in stored.checkpoints.items() if cp.size > len(entries)}
        return PendingRestore(
            tenant_id=tenant_id,
            size=len(entries),
            head=heads[-1] if heads else GENESIS_HASH,
            epoch=stored.epoch + 1,
            supersedes=[
                SupersededCheckpoint(key=key, size=cp.size, root=cp.root)
                for key, cp in sorted(beyond.items(), key=lambda item: (item[1].size, item[0]))
            ],
            supersedes_acknowledgements=sorted(superseded.not_holding),
            unacknowledged=sorted(
                (cp for cp in live if cp.size > len(entries)), key=lambda c: (c.size, c.epoch)
            ),
            stale=sorted(k for k in superseded.not_holding if k not in superseded.acknowledgements),
            problems=problems,
        )

    # -- the store ------------------------------------------------------------------------------

    def stored(self, tenant_id: str) -> StoredCheckpoints:
        """Every object below ``audit-checkpoints/``, parsed and checked; what fails is listed in ``problems``."""
        stored = StoredCheckpoints()
        strays = []
        for key in self._store.list_objects(tenant_id, CHECKPOINT_PREFIX):
            try:
                if _ACKNOWLEDGEMENT_KEY.match(key):
                    stored.listed_acknowledgements += 1
                    data = self._store.get_object(tenant_id, key)
                    ack = parse_acknowledgement(tenant_id, key, data, self._keyring)
                    stored.acknowledgements[key] = (ack, hashlib.sha256(data).hexdigest())
                elif _KEY.match(key):
                    stored.listed_checkpoints += 1
                    data = self._store.get_object(tenant_id, key)
                    stored.checkpoints[key] = parse_checkpoint(tenant_id, key, data, self._keyring)
                else:
                    strays.append(f"tenant {tenant_id}: {key} is not a checkpoint the system writes")
            except (IntegrityViolation, NotFound) as error:
                stored.problems.append(str(error))
        stored.problems.extend(strays)
        return stored

    def _write(self, tenant_id: str, size: int, root: str, epoch: int = 0) -> AuditCheckpoint:
        """Sign and store; if another writer stored this size first, its root must be ours (else: a fork)."""
        cp = AuditCheckpoint(tenant=tenant_id, size=size, root=root, created_at=utcnow(), epoch=epoch)
        signed = SignedCheckpoint(checkpoint=cp, signature=self._signer.sign(cp.signed_payload()))
        key = checkpoint_key(size, epoch)
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
        self._last[tenant_id] = max(
            self._last.get(tenant_id, (0, 0, GENESIS_HASH)), (cp.epoch, cp.size, cp.root)
        )
        log.info("audit checkpoint at position %d signed", size, extra={"tenantId": tenant_id})
        return cp


def _refuse_unless_acknowledgeable(pending: PendingRestore, signed_after: datetime | None) -> None:
    tenant_id = pending.tenant_id
    if pending.size == 0:
        raise InvalidInput(f"tenant {tenant_id} has no audit chain: there is nothing to acknowledge")
    if pending.problems:
        shown = "; ".join(pending.problems[:3]) + (
            f"; … {len(pending.problems) - 3} more" if len(pending.problems) > 3 else ""
        )
        raise IntegrityViolation(
            f"tenant {tenant_id}: not acknowledged: {shown}. An acknowledgement supersedes checkpoints beyond a "
            "chain that otherwise verifies, never a rewritten chain or a forged checkpoint"
        )
    if not pending.needed:
        raise InvalidInput(
            f"tenant {tenant_id}: nothing to acknowledge: no checkpoint lies beyond the chain's {pending.size} "
            "entries that an acknowledgement does not already supersede"
        )
    if signed_after is not None:
        early = [cp for cp in pending.unacknowledged if as_utc(cp.created_at) <= as_utc(signed_after)]
        if early:
            cp = early[0]
            raise IntegrityViolation(
                f"tenant {tenant_id}: not acknowledged: the checkpoint at position {cp.size} was signed at "
                f"{iso(cp.created_at)}, at or before the point restored to ({iso(signed_after)}), so the chain "
                f"was already shorter than it then (only {pending.size} entries), which a restore does not explain. "
                "Investigate; if the restore does explain it, `evolution audit acknowledge-restore` records that"
            )

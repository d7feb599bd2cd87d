"""Dataset snapshots: immutable, non-overlapping windows of learning events, Merkle-hashed and signed.

The canonical encoding is one canonical-JSON line per event, ordered by (event_time, request_id). The Merkle tree's
leaves are 64 KiB chunks of that encoding (RFC 6962 prefixes), so hashing costs about one flat SHA-256 pass.

What is signed (the *statement*) binds the Merkle root to the tree's size: since ``dataset-snapshot/v2`` it names
``leaf_count`` and ``chunk_size`` beside the root, so a proof about one chunk is only ever checked against the size
that was signed with the root (an audit path can fit a tree of another size: leaf 0 climbs 3 leaves and 4 alike).
Snapshots sealed before v2 keep their v1 signatures, which bound ``byte_size`` but not the leaf count; they still
verify, and for them the recorded leaf count must be the one ``byte_size`` and the fixed chunk size imply.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel
from sqlalchemy import ColumnElement, String, Text, cast, func, select, type_coerce
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json, canonical_json_of_decoded
from evolution.errors import InsufficientData, IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.merkle import CHUNK_SIZE, ChunkedMerkle, leaf_hash, verify_inclusion
from evolution.integrity.signing import KeyRing, Signature, Signer
from evolution.progress import Advance, ProgressMeter, metered
from evolution.registry.audit import append_audit, lock_tenant_chain
from evolution.registry.db import consistent_reading, reading, transaction
from evolution.registry.lineage_outbox import LineageOutbox
from evolution.registry.schema import DatasetSnapshot, LearningEvent
from evolution.registry.tenancy import tenant_of_snapshot
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, iso, utcnow

SNAPSHOT_SCHEMA = "controlled-evolution/dataset-snapshot/v2"
SNAPSHOT_SCHEMA_V1 = "controlled-evolution/dataset-snapshot/v1"
"""Statements of snapshots sealed before the leaf count was signed; still verified (see the module docstring)."""
ENCODE_BUFFER_BYTES = 1 << 20
READ_BATCH_ROWS = 2000


class SnapshotView(BaseModel):
    id: str
    tenant_id: str
    window_start: datetime
    window_end: datetime
    row_count: int
    byte_size: int
    leaf_count: int
    merkle_root: str
    artifact_digest: str
    signature: Signature

    @classmethod
    def of(cls, row: DatasetSnapshot) -> SnapshotView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            window_start=as_utc(row.window_start),
            window_end=as_utc(row.window_end),
            row_count=row.row_count,
            byte_size=row.byte_size,
            leaf_count=row.leaf_count,
            merkle_root=row.merkle_root,
            artifact_digest=row.artifact_digest,
            signature=Signature.model_validate(row.signature),
        )

    def statement(self) -> bytes:
        """The bytes that are signed: everything that identifies the snapshot's content, the tree's size included."""
        return snapshot_statement(
            self.id,
            self.tenant_id,
            self.window_start,
            self.window_end,
            self.row_count,
            self.byte_size,
            self.merkle_root,
            self.artifact_digest,
            self.leaf_count,
        )

    def verify_statement(self, keyring: KeyRing) -> None:
        """The signature binds this snapshot's content, Merkle root and tree size; IntegrityViolation if not."""
        try:
            keyring.verify(self.statement(), self.signature)
            return
        except IntegrityViolation as error:
            v2_failure = error
        try:
            keyring.verify(self._v1_statement(), self.signature)
        except IntegrityViolation:
            raise IntegrityViolation(f"snapshot {self.id}: signature invalid ({v2_failure})") from None
        # A v1 signature binds byte_size; with the fixed chunk size, that fixes the tree's size too.
        implied = leaves_of(self.byte_size)
        if self.leaf_count != implied:
            raise IntegrityViolation(
                f"snapshot {self.id}: {self.leaf_count} leaves recorded, but its signed size of {self.byte_size} "
                f"bytes makes {implied}"
            )

    def _v1_statement(self) -> bytes:
        return canonical_json(
            {
                "schema": SNAPSHOT_SCHEMA_V1,
                **_statement_fields(
                    self.id,
                    self.tenant_id,
                    self.window_start,
                    self.window_end,
                    self.row_count,
                    self.byte_size,
                    self.merkle_root,
                    self.artifact_digest,
                ),
            }
        )


def leaves_of(byte_size: int) -> int:
    """How many leaves a snapshot of ``byte_size`` bytes has: one per started chunk."""
    return -(-byte_size // CHUNK_SIZE)


def snapshot_statement(
    snapshot_id: str,
    tenant_id: str,
    start: datetime,
    end: datetime,
    rows: int,
    size: int,
    root: str,
    digest: str,
    leaf_count: int,
) -> bytes:
    return canonical_json(
        {
            "schema": SNAPSHOT_SCHEMA,
            **_statement_fields(snapshot_id, tenant_id, start, end, rows, size, root, digest),
            "leaf_count": leaf_count,
            "chunk_size": CHUNK_SIZE,
        }
    )


def _statement_fields(
    snapshot_id: str,
    tenant_id: str,
    start: datetime,
    end: datetime,
    rows: int,
    size: int,
    root: str,
    digest: str,
) -> dict[str, Any]:
    return {
        "id": snapshot_id,
        "tenant": tenant_id,
        "window_start": iso(start),
        "window_end": iso(end),
        "row_count": rows,
        "byte_size": size,
        "merkle_root": root,
        "artifact_digest": digest,
    }


class WindowEvent(NamedTuple):
    """One learning event as sealed: the fields of its canonical line, with the time already in ISO form."""

    request_id: str
    event_time: str
    features: dict[str, Any]
    prediction_id: str | None
    actual: float | None
    source_key_id: str
    payload_digest: str

    def encode(self) -> bytes:
        """The event's canonical line. Its features were decoded from JSON text, so their keys are strings."""
        return (
            canonical_json_of_decoded(
                {
                    "request_id": self.request_id,
                    "event_time": self.event_time,
                    "features": self.features,
                    "prediction_id": self.prediction_id,
                    "actual": self.actual,
                    "source_key_id": self.source_key_id,
                    "payload_digest": self.payload_digest,
                }
            )
            + b"\n"
        )

    def scan_row(self) -> dict[str, Any]:
        """The row :meth:`DatasetSnapshotService.load_rows` makes of this event's line."""
        return _scan_row(self.features, self.event_time, self.actual, self.request_id, self.prediction_id)


def _scan_row(
    features: dict[str, Any], event_time: str, actual: Any, request_id: str, prediction_id: str | None
) -> dict[str, Any]:
    """One event as the scan and the trainer read it: its features plus its time, outcome and ids."""
    return {
        **features,
        "event_time": event_time,
        "actual": actual,
        "request_id": request_id,
        "prediction_id": prediction_id,
    }


def _sqlite_time_iso(stored: str) -> str:
    """ISO form of a time as SQLAlchemy stores it in SQLite (naive UTC, 'YYYY-MM-DD HH:MM:SS.ffffff')."""
    if len(stored) == 26 and stored[10] == " " and stored[19] == ".":
        return f"{stored[:10]}T{stored[11:]}Z"  # what iso() gives, without parsing: the seal's hottest loop
    return iso(datetime.fromisoformat(stored))


# PostgreSQL formats the time itself, exactly as iso() would: cheaper than a datetime per row, then iso().
_PG_ISO_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def window_events(session: Session, tenant_id: str, start: datetime, end: datetime) -> Iterator[WindowEvent]:
    """The window's events in sealing order, read as columns (an ORM object per event costs more than sealing it).

    The time and the features are read as text and converted here: on SQLite, SQLAlchemy's regex datetime parsing
    alone would cost a third of the seal; on PostgreSQL, the database formats the time in ISO form itself.
    """
    dialect = session.get_bind().dialect.name
    columns = LearningEvent.__table__.c
    when: ColumnElement[Any] = columns.event_time
    features: ColumnElement[Any] = columns.features
    if dialect == "sqlite":
        when, features = type_coerce(when, String), type_coerce(features, String)
    elif dialect == "postgresql":
        when = func.to_char(func.timezone("UTC", when), _PG_ISO_FORMAT)
        features = cast(features, Text)
    query = (
        select(
            LearningEvent.request_id,
            when,
            features,
            LearningEvent.prediction_id,
            LearningEvent.actual,
            LearningEvent.source_key_id,
            LearningEvent.payload_digest,
        )
        .where(
            LearningEvent.tenant_id == tenant_id,
            LearningEvent.event_time >= start,
            LearningEvent.event_time < end,
        )
        .order_by(LearningEvent.event_time, LearningEvent.request_id)
        .execution_options(yield_per=READ_BATCH_ROWS)
    )
    time_iso: Callable[[Any], str] = (
        _sqlite_time_iso if dialect == "sqlite" else str if dialect == "postgresql" else iso
    )
    loads: Callable[[Any], dict[str, Any]] = json.loads if isinstance(features.type, String) else dict
    for request_id, time, values, prediction_id, actual, source_key_id, digest in session.execute(query):
        yield WindowEvent(
            request_id, time_iso(time), loads(values), prediction_id, actual, source_key_id, digest
        )


class DatasetSnapshotService:
    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        signer: Signer,
        lineage: LineageOutbox | None = None,
    ) -> None:
        """``lineage``: where each sealed snapshot's OpenLineage event is recorded (None: not)."""
        self._factory = factory
        self._store = store
        self._signer = signer
        self._lineage = lineage

    def seal(
        self,
        principal: Principal,
        tenant_id: str,
        window_end: datetime,
        min_rows: int = 1,
        *,
        meter: ProgressMeter | None = None,
    ) -> SnapshotView:
        """Seal the next window: from the end of the last snapshot (or the first event) up to ``window_end``.

        ``meter``: a task over the window's events as they are encoded and hashed.
        """
        return self._seal(principal, tenant_id, window_end, min_rows, None, meter)

    def seal_for_scan(
        self, principal: Principal, tenant_id: str, window_end: datetime, min_rows: int = 1
    ) -> tuple[SnapshotView, list[dict[str, Any]]]:
        """:meth:`seal`, also returning the rows :meth:`load_rows` would read back from the sealed window.

        For a scan that follows at once: it saves reading, re-hashing and parsing the window it just wrote.
        The rows are held in memory, as a scan of them would hold them anyway.
        """
        rows: list[dict[str, Any]] = []
        return self._seal(principal, tenant_id, window_end, min_rows, rows), rows

    def _seal(
        self,
        principal: Principal,
        tenant_id: str,
        window_end: datetime,
        min_rows: int,
        scan_rows: list[dict[str, Any]] | None,
        meter: ProgressMeter | None = None,
    ) -> SnapshotView:
        authorize(principal, Action.CREATE_SNAPSHOT, tenant_id)
        window_end = as_utc(window_end)
        with tempfile.TemporaryDirectory(prefix="snapshot-") as scratch:
            encoding = Path(scratch) / "events.jsonl"
            # Read and encode first without the tenant's lock (on SQLite, the database's one write lock): holding
            # it for the whole encoding would stall ingestion, and on SQLite every other tenant's writes.
            with consistent_reading(self._factory, tenant_id) as session:
                start = self._window_start(session, tenant_id, window_end)
                # Counting is an extra query: made only for a meter to show.
                total = self._count(session, tenant_id, start, window_end) if meter is not None else 0
                with metered(meter, f"seal {tenant_id}", total) as advance:
                    encoded = self._encode(
                        session, tenant_id, start, window_end, encoding, scan_rows, advance=advance
                    )
            self._require_rows(encoded[0], min_rows, start, window_end)
            with transaction(self._factory, tenant_id) as session:
                # Exclusive against ingestion batches (which hold the tenant row shared) and other seals: nothing
                # can change the window between this check and the commit. Events are only ever inserted, so an
                # unchanged start and count mean the very rows that were encoded.
                lock_tenant_chain(session, tenant_id)
                if not self._unchanged(session, tenant_id, start, window_end, encoded[0]):
                    if scan_rows is not None:
                        scan_rows.clear()
                    start = self._window_start(session, tenant_id, window_end)
                    encoded = self._encode(session, tenant_id, start, window_end, encoding, scan_rows)
                    self._require_rows(encoded[0], min_rows, start, window_end)
                rows, size, merkle = encoded
                digest = self._store.put_file(tenant_id, encoding)
                sealed = self._record(
                    session, principal, tenant_id, start, window_end, rows, size, merkle, digest
                )
        if self._lineage is not None:
            self._lineage.committed(tenant_id)
        return sealed

    @staticmethod
    def _window_start(session: Session, tenant_id: str, window_end: datetime) -> datetime:
        """Where the next window starts: the end of the last snapshot, or the tenant's first event."""
        last_end = session.scalar(
            select(func.max(DatasetSnapshot.window_end)).where(DatasetSnapshot.tenant_id == tenant_id)
        )
        if last_end is not None:
            start = as_utc(last_end)
        else:
            first = session.scalar(
                select(func.min(LearningEvent.event_time)).where(LearningEvent.tenant_id == tenant_id)
            )
            if first is None:
                raise InsufficientData(f"tenant {tenant_id!r} has no learning events to snapshot")
            start = as_utc(first)
        if window_end <= start:
            raise InvalidInput(
                f"window_end {iso(window_end)} must be after the last sealed window's end {iso(start)}"
            )
        return start

    @classmethod
    def _unchanged(cls, session: Session, tenant_id: str, start: datetime, end: datetime, rows: int) -> bool:
        if cls._window_start(session, tenant_id, end) != start:
            return False  # another seal committed meanwhile
        return cls._count(session, tenant_id, start, end) == rows

    @staticmethod
    def _count(session: Session, tenant_id: str, start: datetime, end: datetime) -> int:
        return int(
            session.scalar(
                select(func.count())
                .select_from(LearningEvent)
                .where(
                    LearningEvent.tenant_id == tenant_id,
                    LearningEvent.event_time >= start,
                    LearningEvent.event_time < end,
                )
            )
            or 0
        )

    @staticmethod
    def _require_rows(rows: int, min_rows: int, start: datetime, end: datetime) -> None:
        if rows < min_rows:
            raise InsufficientData(
                f"window {iso(start)} .. {iso(end)} holds {rows} events, fewer than {min_rows}"
            )

    def _record(
        self,
        session: Session,
        principal: Principal,
        tenant_id: str,
        start: datetime,
        window_end: datetime,
        rows: int,
        size: int,
        merkle: ChunkedMerkle,
        digest: str,
    ) -> SnapshotView:
        """Sign the sealed window's statement and record it, with its audit entry, in ``session``."""
        snapshot_id = f"ds-{uuid.uuid4().hex[:20]}"
        root = merkle.root().hex()
        leaves = merkle.leaf_count
        statement = snapshot_statement(
            snapshot_id, tenant_id, start, window_end, rows, size, root, digest, leaves
        )
        signature = self._signer.sign(statement)
        row = DatasetSnapshot(
            id=snapshot_id,
            tenant_id=tenant_id,
            window_start=start,
            window_end=window_end,
            row_count=rows,
            byte_size=size,
            leaf_count=leaves,
            merkle_root=root,
            artifact_digest=digest,
            signature=signature.model_dump(mode="json"),
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            tenant_id=tenant_id,
            principal=principal,
            action="snapshot.sealed",
            subject_type="dataset_snapshot",
            subject_id=snapshot_id,
            at=utcnow(),
            details={
                "window_start": iso(start),
                "window_end": iso(window_end),
                "rows": rows,
                "merkle_root": root,
            },
        )
        if self._lineage is not None:
            self._lineage.snapshot_sealed(session, row)  # in this transaction: no seal, no event
        return SnapshotView.of(row)

    @staticmethod
    def _encode(
        session: Session,
        tenant_id: str,
        start: datetime,
        end: datetime,
        path: Path,
        scan_rows: list[dict[str, Any]] | None = None,
        *,
        advance: Advance | None = None,
    ) -> tuple[int, int, ChunkedMerkle]:
        """Stream the window's canonical encoding to ``path`` and the Merkle tree in bounded memory.

        ``advance`` is told the rows encoded at each flush of the buffer (a call per row would slow the loop).
        """
        merkle = ChunkedMerkle()
        buffer = bytearray()
        rows = size = reported = 0
        with path.open("wb") as out:
            for event in window_events(session, tenant_id, start, end):
                buffer += event.encode()
                if scan_rows is not None:
                    scan_rows.append(event.scan_row())
                rows += 1
                if len(buffer) >= ENCODE_BUFFER_BYTES:
                    # Large updates: feeding the tree row by row would cost about twice a flat SHA-256.
                    merkle.update(bytes(buffer))
                    out.write(buffer)
                    size += len(buffer)
                    buffer.clear()
                    if advance is not None:
                        advance(rows - reported)
                        reported = rows
            merkle.update(bytes(buffer))
            out.write(buffer)
            size += len(buffer)
        if advance is not None and rows > reported:
            advance(rows - reported)
        return rows, size, merkle

    def get(self, principal: Principal, snapshot_id: str) -> SnapshotView:
        tenant_id = tenant_of_snapshot(self._factory, snapshot_id)
        if tenant_id is None:
            raise NotFound(f"dataset snapshot {snapshot_id!r} does not exist")
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            row = session.get(DatasetSnapshot, snapshot_id)
            if row is None:
                raise NotFound(f"dataset snapshot {snapshot_id!r} does not exist")
            return SnapshotView.of(row)

    def latest(self, principal: Principal, tenant_id: str) -> SnapshotView | None:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            row = session.scalars(
                select(DatasetSnapshot)
                .where(DatasetSnapshot.tenant_id == tenant_id)
                .order_by(DatasetSnapshot.window_end.desc())
                .limit(1)
            ).first()
            return SnapshotView.of(row) if row else None

    def list_snapshots(self, principal: Principal, tenant_id: str) -> list[SnapshotView]:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            rows = session.scalars(
                select(DatasetSnapshot)
                .where(DatasetSnapshot.tenant_id == tenant_id)
                .order_by(DatasetSnapshot.window_start)
            )
            return [SnapshotView.of(r) for r in rows]

    def verify(self, snapshot: SnapshotView, keyring: KeyRing) -> None:
        """Signature over the statement, then the stored bytes against the Merkle root. Raises IntegrityViolation."""
        self._verified_bytes(snapshot, keyring)

    def _verified_bytes(self, snapshot: SnapshotView, keyring: KeyRing) -> bytes:
        snapshot.verify_statement(keyring)
        data = self._store.read_bytes(snapshot.tenant_id, snapshot.artifact_digest)
        merkle = ChunkedMerkle().update(data)
        if (
            merkle.root().hex() != snapshot.merkle_root
            or len(data) != snapshot.byte_size
            or merkle.leaf_count != snapshot.leaf_count
        ):
            raise IntegrityViolation(f"snapshot {snapshot.id}: content does not match its signed Merkle root")
        return data

    @staticmethod
    def verify_chunk(
        snapshot: SnapshotView, keyring: KeyRing, index: int, chunk: bytes, proof: list[bytes]
    ) -> None:
        """Check one chunk of a snapshot by its inclusion proof, without the rest of the window.

        For an auditor who holds a chunk (bytes ``[index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE)``) and its audit
        path: the path is checked against the root *and the tree size* the snapshot's signature binds, never against
        a size that is merely claimed. Raises IntegrityViolation.
        """
        snapshot.verify_statement(keyring)
        root = bytes.fromhex(snapshot.merkle_root)
        if not verify_inclusion(leaf_hash(chunk), index, snapshot.leaf_count, proof, root):
            raise IntegrityViolation(
                f"snapshot {snapshot.id}: chunk {index} and its proof do not lead to the signed root of "
                f"{snapshot.leaf_count} leaves"
            )

    def load_rows(self, snapshot: SnapshotView, keyring: KeyRing) -> list[dict[str, Any]]:
        """The snapshot's events, verified first; each row is the event's features plus event_time and actual."""
        data = self._verified_bytes(snapshot, keyring)
        # One parse of the whole window as a JSON array: the canonical encoding escapes every control character
        # inside strings, so its only raw newlines are the line ends.
        events = json.loads(b"[" + b",".join(data.splitlines()) + b"]")
        return [
            _scan_row(e["features"], e["event_time"], e["actual"], e["request_id"], e["prediction_id"])
            for e in events
        ]

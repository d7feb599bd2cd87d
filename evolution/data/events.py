"""Learning-event ingestion: validated, signature-checked, deduplicated; every reject kept with its reason.

What an event is, how it is signed, and the refusals one event earns on its own are in
:mod:`evolution.data.event_schema`; this module reads what is stored, deduplicates, and writes the accepted
events and the dead letters.

Replays and stale events:

* the same event again (same request_id, same signed content) is a duplicate: counted as such, stored once;
* a source may number its events: ``sequence`` (an integer >= 0, inside the signed payload). The source key keeps
  the highest sequence accepted from it, updated under that key's row lock, so two concurrent ingests cannot both
  pass with the same number. An event whose sequence is not above it, and which is not an exact duplicate of an
  accepted event, is refused as a *stale sequence* (a replay of a captured event under a new request_id, or
  events delivered out of order). Sequences must increase; gaps are allowed (a lost event is not waited for).
  Events without a sequence are not ordered: they keep the plain request_id deduplication;
* an event older than the maximum age (:data:`DEFAULT_MAX_EVENT_AGE`, per ingestor or per call) is refused as
  *expired*; sealed snapshot windows refuse late events as well, whatever their age.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import exc, select, update
from sqlalchemy.orm import Session, sessionmaker

from evolution.data.event_schema import (
    MAX_EVENT_BYTES,
    IngestSummary,
    InputRecord,
    LearningEventIn,
    Reject,
    RejectedEvent,
    check_event,
    event_digest,
    peek_request_id,
    storable,
)
from evolution.errors import InvalidInput, NotFound
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import DatasetSnapshot, DeadLetter, LearningEvent, SourceKey, Tenant
from evolution.security import Action, Principal, authorize
from evolution.timeutil import utcnow

log = logging.getLogger(__name__)

# Older events are refused as expired. A crop year and a margin: a yield outcome arrives at harvest, months after
# the features it belongs to, and a new tenant backfills its past season (the demo seeds 120 days).
DEFAULT_MAX_EVENT_AGE = timedelta(days=400)
BATCH_SIZE = 500
MAX_BATCH_ATTEMPTS = 3
SOURCE_CHARS = 200  # dead_letters.source


class DeadLetterView(BaseModel):
    """A rejected record as kept: where it came from, the field to blame, the reason, and its text."""

    id: int
    request_id: str | None
    source: str
    field: str | None
    reason: str
    payload: str
    received_at: datetime


class EventIngestor:
    """Validates and stores learning events for one tenant."""

    def __init__(
        self, factory: sessionmaker[Session], max_event_age: timedelta | None = DEFAULT_MAX_EVENT_AGE
    ) -> None:
        """``max_event_age``: older events are refused as expired (None: no limit)."""
        self._factory = factory
        self.max_event_age = max_event_age

    def register_source_key(
        self, principal: Principal, tenant_id: str, key_id: str, public_key_pem: bytes
    ) -> None:
        authorize(principal, Action.REGISTER_SOURCE_KEY, tenant_id)
        try:
            self._register_source_key(principal, tenant_id, key_id, public_key_pem)
        except exc.IntegrityError as error:
            # Another tenant's key with this id is invisible under row-level security; its primary key still holds.
            raise InvalidInput(
                f"key id {key_id!r} is already registered with another key or tenant"
            ) from error

    def _register_source_key(
        self, principal: Principal, tenant_id: str, key_id: str, public_key_pem: bytes
    ) -> None:
        with transaction(self._factory, tenant_id) as session:
            existing = session.get(SourceKey, key_id)
            if existing is not None:
                if existing.tenant_id != tenant_id or existing.public_key_pem != public_key_pem.decode():
                    raise InvalidInput(f"key id {key_id!r} is already registered with another key or tenant")
                return
            now = utcnow()
            session.add(
                SourceKey(
                    key_id=key_id, tenant_id=tenant_id, public_key_pem=public_key_pem.decode(), created_at=now
                )
            )
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="source_key.registered",
                subject_type="source_key",
                subject_id=key_id,
                at=now,
            )

    def ingest_lines(
        self,
        principal: Principal,
        tenant_id: str,
        lines: Iterable[str],
        source: str,
        *,
        max_age: timedelta | None = None,
    ) -> IngestSummary:
        """JSON Lines, one event a line; blank lines are skipped. ``max_age``: this call's, else the ingestor's."""
        records = (
            InputRecord(where=f"line {number}", line=number, raw=line)
            for number, line in enumerate(lines, start=1)
            if line.strip()
        )
        return self.ingest_records(principal, tenant_id, records, source, max_age=max_age)

    def ingest_objects(
        self,
        principal: Principal,
        tenant_id: str,
        objects: Iterable[Any],
        source: str,
        *,
        max_age: timedelta | None = None,
    ) -> IngestSummary:
        """Events as parsed JSON values (a batch over HTTP): one that is not even an object is a reject like any."""
        records = (
            InputRecord(where=f"event {number}", line=number, obj=obj)
            for number, obj in enumerate(objects, start=1)
        )
        return self.ingest_records(principal, tenant_id, records, source, max_age=max_age)

    def ingest_records(
        self,
        principal: Principal,
        tenant_id: str,
        records: Iterable[InputRecord],
        source: str,
        *,
        max_age: timedelta | None = None,
    ) -> IngestSummary:
        """Records as a reader made them (:mod:`evolution.data.input_files`): each one is accepted, a duplicate, or
        a dead letter whose reason says where it was; ``records_read`` counts them all."""
        authorize(principal, Action.INGEST_EVENTS, tenant_id)
        with reading(self._factory, tenant_id) as session:
            if session.get(Tenant, tenant_id) is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
        age = max_age if max_age is not None else self.max_event_age
        summary = IngestSummary()
        batch: list[InputRecord] = []
        for record in records:
            batch.append(record)
            if len(batch) >= BATCH_SIZE:
                summary.add(self._ingest_batch_settled(tenant_id, batch, source, age))
                batch = []
        if batch:
            summary.add(self._ingest_batch_settled(tenant_id, batch, source, age))
        log.info(
            "ingested from %s: %d read, %d accepted, %d duplicate, %d rejected",
            source,
            summary.records_read,
            summary.accepted,
            summary.duplicate,
            summary.rejected,
            extra={"tenantId": tenant_id},
        )
        return summary

    def dead_letters(
        self, principal: Principal, tenant_id: str, *, source: str | None = None, limit: int = 1000
    ) -> list[DeadLetterView]:
        """The tenant's most recent rejects (of one ``source``, e.g. a file's path, when given), oldest first."""
        authorize(principal, Action.VIEW, tenant_id)
        query = select(DeadLetter).where(DeadLetter.tenant_id == tenant_id)
        if source is not None:
            query = query.where(DeadLetter.source == source[:SOURCE_CHARS])
        with reading(self._factory, tenant_id) as session:
            rows = session.scalars(query.order_by(DeadLetter.id.desc()).limit(limit)).all()
            return [DeadLetterView.model_validate(row, from_attributes=True) for row in reversed(rows)]

    def _ingest_batch_settled(
        self, tenant_id: str, batch: list[InputRecord], source: str, max_age: timedelta | None
    ) -> IngestSummary:
        """A concurrent ingest of the same request_id makes the batch's insert fail; once retried, it is a duplicate."""
        for _ in range(MAX_BATCH_ATTEMPTS - 1):
            try:
                return self._ingest_batch(tenant_id, batch, source, max_age)
            except exc.IntegrityError:
                continue
        return self._ingest_batch(tenant_id, batch, source, max_age)

    def _ingest_batch(
        self, tenant_id: str, batch: list[InputRecord], source: str, max_age: timedelta | None
    ) -> IngestSummary:
        summary = IngestSummary(records_read=len(batch))
        now = utcnow()
        with transaction(self._factory, tenant_id) as session:
            # Shared with other batches, exclusive against a seal: the sealed-window check below stays true.
            session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(read=True))
            keys = {
                k.key_id: k
                for k in session.scalars(
                    select(SourceKey).where(SourceKey.tenant_id == tenant_id, SourceKey.revoked_at.is_(None))
                )
            }
            sealed_until = session.scalar(
                select(DatasetSnapshot.window_end)
                .where(DatasetSnapshot.tenant_id == tenant_id)
                .order_by(DatasetSnapshot.window_end.desc())
                .limit(1)
            )
            candidates: list[tuple[InputRecord, LearningEventIn, str]] = []
            for record in batch:
                try:
                    if record.problem is not None:
                        raise record.problem
                    event = check_event(tenant_id, record.obj, record.raw, keys, sealed_until, max_age, now)
                except RejectedEvent as rejected:
                    self._dead_letter(
                        session, summary, tenant_id, record, _request_id_of(record), rejected, source, now
                    )
                    continue
                candidates.append((record, event, event_digest(event)))
            known = {
                row.request_id: row.payload_digest
                for row in session.execute(
                    select(LearningEvent.request_id, LearningEvent.payload_digest).where(
                        LearningEvent.tenant_id == tenant_id,
                        LearningEvent.request_id.in_([e.request_id for _, e, _ in candidates]),
                    )
                )
            }
            last_sequence = self._lock_sequences(
                session, {e.source_key_id for _, e, _ in candidates if e.sequence is not None}
            )
            advanced: set[str] = set()
            for record, event, digest in candidates:
                seen = known.get(event.request_id)
                if seen == digest:
                    summary.duplicate += 1
                    continue
                refused: RejectedEvent | None = None
                if seen is not None:
                    refused = RejectedEvent(
                        "request_id",
                        f"request_id {event.request_id!r} was already accepted with other content",
                    )
                elif event.sequence is not None:
                    last = last_sequence.get(event.source_key_id)
                    if last is not None and event.sequence <= last:
                        refused = RejectedEvent(
                            "sequence",
                            f"sequence: stale sequence {event.sequence} from source {event.source_key_id!r}: "
                            f"its last accepted sequence is {last} (a replay, or out of order)",
                        )
                if refused is not None:
                    self._dead_letter(
                        session,
                        summary,
                        tenant_id,
                        replace(record, obj=event.wire(), raw=""),
                        event.request_id,
                        refused,
                        source,
                        now,
                    )
                    continue
                if event.sequence is not None:
                    last_sequence[event.source_key_id] = event.sequence
                    advanced.add(event.source_key_id)
                known[event.request_id] = digest
                session.add(
                    LearningEvent(
                        tenant_id=tenant_id,
                        request_id=event.request_id,
                        event_time=event.event_time,
                        received_at=now,
                        source_key_id=event.source_key_id,
                        features=event.features,
                        prediction_id=event.prediction_id,
                        actual=event.actual,
                        payload_digest=digest,
                    )
                )
                summary.accepted += 1
            for key_id in sorted(advanced):
                session.execute(
                    update(SourceKey)
                    .where(SourceKey.key_id == key_id)
                    .values(last_sequence=last_sequence[key_id])
                )
        return summary

    @staticmethod
    def _lock_sequences(session: Session, key_ids: set[str]) -> dict[str, int | None]:
        """The last accepted sequence of each key, its row locked until commit (in key order: no deadlock)."""
        if not key_ids:
            return {}
        rows = session.execute(
            select(SourceKey.key_id, SourceKey.last_sequence)
            .where(SourceKey.key_id.in_(sorted(key_ids)))
            .order_by(SourceKey.key_id)
            .with_for_update()
        )
        return {row.key_id: row.last_sequence for row in rows}

    @staticmethod
    def _dead_letter(
        session: Session,
        summary: IngestSummary,
        tenant_id: str,
        record: InputRecord,
        request_id: str | None,
        rejected: RejectedEvent,
        source: str,
        now: datetime,
    ) -> None:
        request_id = storable(request_id[:100]) if request_id is not None else None
        payload = record.raw or _json_text(record.obj)
        field = storable(rejected.field) if rejected.field else None
        reason = storable(f"{record.where}: {rejected.reason}")
        session.add(
            DeadLetter(
                tenant_id=tenant_id,
                request_id=request_id,
                source=source[:SOURCE_CHARS],
                reason=reason,
                field=field,
                payload=storable(payload[:MAX_EVENT_BYTES]),
                received_at=now,
            )
        )
        summary.rejected += 1
        if len(summary.rejects) < 20:
            summary.rejects.append(
                Reject(line=record.line, request_id=request_id, field=field, reason=reason)
            )


def _request_id_of(record: InputRecord) -> str | None:
    """The request_id a refused record claims, if it names one (to find its dead letter by it)."""
    if record.request_id is not None:
        return record.request_id
    if isinstance(record.obj, dict):
        value = record.obj.get("request_id")
        return value if isinstance(value, str) else None
    return peek_request_id(record.raw) if record.raw else None


def _json_text(obj: Any) -> str:
    """What a dead letter keeps of a refused object: its JSON, or what it is when it has none (never a crash)."""
    try:
        return json.dumps(obj, default=str)[:MAX_EVENT_BYTES]
    except (ValueError, TypeError, RecursionError):
        return f"<a {type(obj).__name__} that cannot be written as JSON (too deep, or a number too long)>"

"""Learning-event ingestion: validated, signature-checked, deduplicated; every reject kept with its reason.

A source (a sensor gateway, an upstream system) signs each event with a key registered for the tenant. What is
signed is the canonical JSON of the event without its ``signature`` field (and without ``sequence`` when the event
has none, so events signed before sequences existed keep their signatures and digests).

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

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import exc, select, update
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.errors import IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.signing import Signature, algorithm_for_public_pem, verify_signature
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import DatasetSnapshot, DeadLetter, LearningEvent, SourceKey, Tenant
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 64 * 1024
MAX_FEATURES = 200
# Clocks of field devices drift; an event further ahead than this is refused rather than sealed into the future.
MAX_CLOCK_SKEW = timedelta(minutes=10)
# Older events are refused as expired. A crop year and a margin: a yield outcome arrives at harvest, months after
# the features it belongs to, and a new tenant backfills its past season (the demo seeds 120 days).
DEFAULT_MAX_EVENT_AGE = timedelta(days=400)
MAX_SEQUENCE = 2**63 - 1
BATCH_SIZE = 500
MAX_BATCH_ATTEMPTS = 3
FeatureValue = float | int | str | bool | None


def _unstorable(text: str) -> str | None:
    """Why a database cannot keep this text: PostgreSQL refuses NUL, and UTF-8 has no lone surrogates."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def _storable(text: str) -> str:
    """The text with what a database cannot keep escaped (for dead letters and reasons, which quote bad input)."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class LearningEventIn(BaseModel):
    """One learning event as a source sends it."""

    tenant: str = Field(min_length=1, max_length=64)
    request_id: str = Field(min_length=1, max_length=100)
    event_time: datetime
    features: dict[str, FeatureValue] = Field(max_length=MAX_FEATURES)
    prediction_id: str | None = Field(default=None, max_length=100)
    actual: float | None = None
    source_key_id: str = Field(min_length=1, max_length=80)
    sequence: int | None = Field(
        default=None, ge=0, le=MAX_SEQUENCE, description="The source's own increasing number for this event."
    )
    signature: str = Field(min_length=1, max_length=200, description="base64 signature of the signed payload")

    @field_validator("tenant", "request_id", "prediction_id", "source_key_id")
    @classmethod
    def _storable_ids(cls, value: str | None) -> str | None:
        problem = _unstorable(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("event_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-05-01T12:00:00Z)")
        return as_utc(value)

    @field_validator("actual")
    @classmethod
    def _finite_actual(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("features")
    @classmethod
    def _finite_features(cls, value: dict[str, FeatureValue]) -> dict[str, FeatureValue]:
        for key, item in value.items():
            if not key or len(key) > 100:
                raise ValueError(f"feature name {key[:40]!r} must be 1-100 characters")
            problem = _unstorable(key) or (_unstorable(item) if isinstance(item, str) else None)
            if problem:
                raise ValueError(f"feature {key[:40]!r}: {problem}")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"feature {key!r} is not finite (send null for missing)")
            if isinstance(item, str) and len(item) > 200:
                raise ValueError(f"feature {key!r} is longer than 200 characters")
        return value

    def signed_payload(self) -> bytes:
        return canonical_json(self.wire(exclude_signature=True))

    def wire(self, exclude_signature: bool = False) -> dict[str, Any]:
        """The event as JSON; ``sequence`` only when it has one."""
        exclude = {"signature"} if exclude_signature else set()
        if self.sequence is None:
            exclude.add("sequence")
        return self.model_dump(mode="json", exclude=exclude)


def sign_event(
    event: dict[str, Any], private_key_pem: bytes, key_id: str, *, sequence: int | None = None
) -> dict[str, Any]:
    """What a source does: add its key id (and ``sequence``, if given) and sign the canonical payload."""
    from evolution.integrity.signing import sign_with_private_pem

    body = {**event, "source_key_id": key_id, "signature": "-"}
    if sequence is not None:
        body["sequence"] = sequence
    unsigned = LearningEventIn.model_validate(body)
    signature = sign_with_private_pem(private_key_pem, unsigned.signed_payload())
    return {**unsigned.wire(exclude_signature=True), "signature": signature.value}


class Reject(BaseModel):
    line: int
    request_id: str | None
    field: str | None
    reason: str


class IngestSummary(BaseModel):
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    rejects: list[Reject] = Field(
        default_factory=list, description="The first rejects, for the user to read."
    )

    def add(self, other: IngestSummary) -> None:
        self.accepted += other.accepted
        self.duplicate += other.duplicate
        self.rejected += other.rejected
        self.rejects.extend(other.rejects[: max(0, 20 - len(self.rejects))])


def _digest(event: LearningEventIn) -> str:
    return hashlib.sha256(event.signed_payload()).hexdigest()


def _first_error(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    return field or "event", f"{field}: {first['msg']}" if field else first["msg"]


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

        def parsed() -> Iterator[tuple[int, Any, str]]:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, None, line

        return self._ingest(principal, tenant_id, parsed(), source, max_age)

    def ingest_objects(
        self,
        principal: Principal,
        tenant_id: str,
        objects: Iterable[Any],
        source: str,
        *,
        max_age: timedelta | None = None,
    ) -> IngestSummary:
        return self._ingest(
            principal, tenant_id, ((i, obj, "") for i, obj in enumerate(objects, start=1)), source, max_age
        )

    def _ingest(
        self,
        principal: Principal,
        tenant_id: str,
        items: Iterable[tuple[int, Any, str]],
        source: str,
        max_age: timedelta | None,
    ) -> IngestSummary:
        authorize(principal, Action.INGEST_EVENTS, tenant_id)
        with reading(self._factory, tenant_id) as session:
            if session.get(Tenant, tenant_id) is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
        age = max_age if max_age is not None else self.max_event_age
        summary = IngestSummary()
        batch: list[tuple[int, Any, str]] = []
        for item in items:
            batch.append(item)
            if len(batch) >= BATCH_SIZE:
                summary.add(self._ingest_batch_settled(tenant_id, batch, source, age))
                batch = []
        if batch:
            summary.add(self._ingest_batch_settled(tenant_id, batch, source, age))
        log.info(
            "ingested from %s: %d accepted, %d duplicate, %d rejected",
            source,
            summary.accepted,
            summary.duplicate,
            summary.rejected,
            extra={"tenantId": tenant_id},
        )
        return summary

    def _ingest_batch_settled(
        self, tenant_id: str, batch: list[tuple[int, Any, str]], source: str, max_age: timedelta | None
    ) -> IngestSummary:
        """A concurrent ingest of the same request_id makes the batch's insert fail; once retried, it is a duplicate."""
        for _ in range(MAX_BATCH_ATTEMPTS - 1):
            try:
                return self._ingest_batch(tenant_id, batch, source, max_age)
            except exc.IntegrityError:
                continue
        return self._ingest_batch(tenant_id, batch, source, max_age)

    def _ingest_batch(
        self, tenant_id: str, batch: list[tuple[int, Any, str]], source: str, max_age: timedelta | None
    ) -> IngestSummary:
        summary = IngestSummary()
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
            candidates: list[tuple[int, LearningEventIn, str]] = []
            for line_no, obj, raw in batch:
                try:
                    event = self._check(tenant_id, obj, raw, keys, sealed_until, max_age, now)
                except _Rejected as rejected:
                    request_id = obj.get("request_id") if isinstance(obj, dict) else None
                    if request_id is None and raw:
                        request_id = _peek_request_id(raw)
                    self._dead_letter(
                        session, summary, tenant_id, line_no, request_id, rejected, raw or obj, source, now
                    )
                    continue
                candidates.append((line_no, event, _digest(event)))
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
            for line_no, event, digest in candidates:
                seen = known.get(event.request_id)
                if seen == digest:
                    summary.duplicate += 1
                    continue
                refused: _Rejected | None = None
                if seen is not None:
                    refused = _Rejected(
                        "request_id",
                        f"request_id {event.request_id!r} was already accepted with other content",
                    )
                elif event.sequence is not None:
                    last = last_sequence.get(event.source_key_id)
                    if last is not None and event.sequence <= last:
                        refused = _Rejected(
                            "sequence",
                            f"sequence: stale sequence {event.sequence} from source {event.source_key_id!r}: "
                            f"its last accepted sequence is {last} (a replay, or out of order)",
                        )
                if refused is not None:
                    self._dead_letter(
                        session,
                        summary,
                        tenant_id,
                        line_no,
                        event.request_id,
                        refused,
                        event.wire(),
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
    def _check(
        tenant_id: str,
        obj: Any,
        raw: str,
        keys: dict[str, SourceKey],
        sealed_until: datetime | None,
        max_age: timedelta | None,
        now: datetime,
    ) -> LearningEventIn:
        if raw:
            if len(raw.encode()) > MAX_EVENT_BYTES:
                raise _Rejected(None, f"event is larger than {MAX_EVENT_BYTES} bytes")
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as error:
                raise _Rejected(None, f"malformed JSON: {error.msg} at column {error.colno}") from None
        elif len(canonical_json(obj) if _jsonable(obj) else b"") > MAX_EVENT_BYTES:
            raise _Rejected(None, f"event is larger than {MAX_EVENT_BYTES} bytes")
        if not isinstance(obj, dict):
            raise _Rejected(None, "an event must be a JSON object")
        try:
            event = LearningEventIn.model_validate(obj)
        except ValidationError as error:
            field, reason = _first_error(error)
            raise _Rejected(field, reason) from None
        if event.tenant != tenant_id:
            raise _Rejected("tenant", f"tenant: event is for {event.tenant!r}, ingested into {tenant_id!r}")
        key = keys.get(event.source_key_id)
        if key is None:
            raise _Rejected(
                "source_key_id",
                f"source_key_id: {event.source_key_id!r} is not a registered key of {tenant_id!r}",
            )
        try:
            verify_signature(
                key.public_key_pem.encode(),
                event.signed_payload(),
                Signature(
                    algorithm=algorithm_for_public_pem(key.public_key_pem),
                    key_id=key.key_id,
                    value=event.signature,
                ),
            )
        except (IntegrityViolation, ValueError):
            raise _Rejected(
                "signature", "signature: does not verify with the source's registered key"
            ) from None
        if event.event_time > utcnow() + MAX_CLOCK_SKEW:
            raise _Rejected(
                "event_time",
                f"event_time: {event.event_time.isoformat()} is in the future (more than {MAX_CLOCK_SKEW} ahead)",
            )
        if max_age is not None and event.event_time < now - max_age:
            raise _Rejected(
                "event_time",
                f"event_time: {event.event_time.isoformat()} is expired: older than the maximum age of "
                f"{_describe_age(max_age)}",
            )
        if sealed_until is not None and event.event_time < as_utc(sealed_until):
            raise _Rejected(
                "event_time",
                f"event_time: {event.event_time.isoformat()} falls in an already sealed snapshot window "
                f"(sealed until {as_utc(sealed_until).isoformat()})",
            )
        return event

    @staticmethod
    def _dead_letter(
        session: Session,
        summary: IngestSummary,
        tenant_id: str,
        line_no: int,
        request_id: Any,
        rejected: _Rejected,
        payload: Any,
        source: str,
        now: datetime,
    ) -> None:
        request_id = _storable(str(request_id)[:100]) if request_id is not None else None
        text = payload if isinstance(payload, str) else json.dumps(payload, default=str)[:MAX_EVENT_BYTES]
        text = _storable(text)
        rejected = _Rejected(
            _storable(rejected.field) if rejected.field else None, _storable(rejected.reason)
        )
        session.add(
            DeadLetter(
                tenant_id=tenant_id,
                request_id=request_id,
                source=source[:200],
                reason=rejected.reason,
                field=rejected.field,
                payload=text[:MAX_EVENT_BYTES],
                received_at=now,
            )
        )
        summary.rejected += 1
        if len(summary.rejects) < 20:
            summary.rejects.append(
                Reject(line=line_no, request_id=request_id, field=rejected.field, reason=rejected.reason)
            )


class _Rejected(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _describe_age(age: timedelta) -> str:
    return f"{age.days} days" if age == timedelta(days=age.days) else str(age)


def _peek_request_id(raw: str) -> str | None:
    try:
        value = json.loads(raw).get("request_id")
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _jsonable(obj: Any) -> bool:
    try:
        canonical_json(obj)
    except Exception:
        return False
    return True

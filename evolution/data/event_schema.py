"""What a learning event is and when one is refused: the schema, its signature, the checks. Pure, no database.

A source (a sensor gateway, an upstream system) signs each event with a key registered for the tenant. What is
signed is the canonical JSON of the event without its ``signature`` field (and without ``sequence`` when the event
has none, so events signed before sequences existed keep their signatures and digests).

:func:`check_event` is every refusal that one event earns on its own (size, JSON, schema, tenant, key, signature,
clock skew, age, sealed window); the refusals that depend on what is already stored (duplicates with other
content, stale sequences) are the ingestor's, in :mod:`evolution.data.events`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from evolution.canonical import canonical_json
from evolution.errors import IntegrityViolation
from evolution.integrity.signing import Signature, algorithm_for_public_pem, verify_signature
from evolution.timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from evolution.registry.schema import SourceKey

MAX_EVENT_BYTES = 64 * 1024
MAX_FEATURES = 200
# Clocks of field devices drift; an event further ahead than this is refused rather than sealed into the future.
MAX_CLOCK_SKEW = timedelta(minutes=10)
MAX_SEQUENCE = 2**63 - 1
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


def storable(text: str) -> str:
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
    line: int = Field(description="The line the record starts on (for a batch: the event's position, from 1)")
    request_id: str | None
    field: str | None
    reason: str = Field(
        description="Where the record is (e.g. 'line 7', 'event 3'), the field, and the problem"
    )


class IngestSummary(BaseModel):
    """What one ingest did with each record it read: every record is exactly one of accepted, duplicate, rejected."""

    records_read: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    rejects: list[Reject] = Field(
        default_factory=list, description="The first rejects, for the user to read."
    )

    def add(self, other: IngestSummary) -> None:
        self.records_read += other.records_read
        self.accepted += other.accepted
        self.duplicate += other.duplicate
        self.rejected += other.rejected
        self.rejects.extend(other.rejects[: max(0, 20 - len(self.rejects))])


class RejectedEvent(Exception):
    """An event refused: the field to blame (None for the event as a whole) and the reason the user reads."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class InputRecord:
    """One record as read, before its checks: a JSON line (``raw``), an object, or why it could not be read.

    ``where`` says where it came from ("line 7", "line 7 (record 5)", "event 3"); a reject's reason starts with it,
    so a dead letter names the line as well as the field. A record with a ``problem`` is dead-lettered as it is.
    """

    where: str
    line: int
    obj: Any = None
    raw: str = ""
    problem: RejectedEvent | None = None
    request_id: str | None = None


def event_digest(event: LearningEventIn) -> str:
    return hashlib.sha256(event.signed_payload()).hexdigest()


def check_event(
    tenant_id: str,
    obj: Any,
    raw: str,
    keys: dict[str, SourceKey],
    sealed_until: datetime | None,
    max_age: timedelta | None,
    now: datetime,
) -> LearningEventIn:
    """The event in ``raw`` (a JSON line) or, when ``raw`` is empty, ``obj``; raises RejectedEvent if refused.

    ``keys`` are the tenant's registered, unrevoked source keys by id; ``sealed_until`` the end of its last sealed
    snapshot window; ``max_age`` None for no age limit.
    """
    if raw:
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_EVENT_BYTES:
            raise RejectedEvent(None, f"event is larger than {MAX_EVENT_BYTES} bytes")
        obj = parse_json(raw)
    elif len(canonical_json(obj) if _jsonable(obj) else b"") > MAX_EVENT_BYTES:
        raise RejectedEvent(None, f"event is larger than {MAX_EVENT_BYTES} bytes")
    if not isinstance(obj, dict):
        raise RejectedEvent(None, "an event must be a JSON object")
    try:
        event = LearningEventIn.model_validate(obj)
    except ValidationError as error:
        raise rejection_from(error) from None
    if event.tenant != tenant_id:
        raise RejectedEvent("tenant", f"tenant: event is for {event.tenant!r}, ingested into {tenant_id!r}")
    key = keys.get(event.source_key_id)
    if key is None:
        raise RejectedEvent(
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
        raise RejectedEvent(
            "signature", "signature: does not verify with the source's registered key"
        ) from None
    if event.event_time > utcnow() + MAX_CLOCK_SKEW:
        raise RejectedEvent(
            "event_time",
            f"event_time: {event.event_time.isoformat()} is in the future (more than {MAX_CLOCK_SKEW} ahead)",
        )
    if max_age is not None and event.event_time < now - max_age:
        raise RejectedEvent(
            "event_time",
            f"event_time: {event.event_time.isoformat()} is expired: older than the maximum age of "
            f"{_describe_age(max_age)}",
        )
    if sealed_until is not None and event.event_time < as_utc(sealed_until):
        raise RejectedEvent(
            "event_time",
            f"event_time: {event.event_time.isoformat()} falls in an already sealed snapshot window "
            f"(sealed until {as_utc(sealed_until).isoformat()})",
        )
    return event


def parse_json(raw: str) -> Any:
    """The JSON value of one line; RejectedEvent when it is not JSON (or nested or numbered past what Python parses)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise RejectedEvent(None, f"malformed JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise RejectedEvent(None, "malformed JSON: nested too deeply") from None
    except ValueError as error:  # e.g. an integer of more digits than int() converts
        raise RejectedEvent(None, f"malformed JSON: {error}") from None


def peek_request_id(raw: str) -> str | None:
    """The request_id of a JSON line that was refused, if it has one (to name it in the dead letter)."""
    try:
        value = parse_json(raw).get("request_id")
    except (RejectedEvent, AttributeError):
        return None
    return value if isinstance(value, str) else None


FEATURE_TYPES = ("float", "int", "str", "bool")
JSON_KINDS: dict[type, str] = {dict: "an object", list: "an array"}


def rejection_from(error: ValidationError) -> RejectedEvent:
    """The first problem pydantic found, as a refusal naming its field ("features.rain_mm: ...")."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    message = first["msg"]
    if len(loc) == 3 and loc[0] == "features" and loc[2] in FEATURE_TYPES:
        # A feature value fits none of the union's types; pydantic names the last type it tried, not the feature.
        loc = loc[:2]
        kind = JSON_KINDS.get(type(first["input"]), type(first["input"]).__name__)
        message = f"must be a number, a string, true, false or null, not {kind}"
    field = ".".join(loc)
    return RejectedEvent(field or "event", f"{field}: {message}" if field else message)


def _describe_age(age: timedelta) -> str:
    return f"{age.days} days" if age == timedelta(days=age.days) else str(age)


def _jsonable(obj: Any) -> bool:
    try:
        canonical_json(obj)
    except Exception:
        return False
    return True

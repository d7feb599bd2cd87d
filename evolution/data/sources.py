"""Event sources: their signing keys, and turning plain records into signed learning events (record by record)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evolution.data.event_schema import InputRecord, RejectedEvent, rejection_from, sign_event
from evolution.errors import InvalidInput
from evolution.integrity.signing import generate_source_keypair, key_id_for_public_pem

SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def source_key_path(keys_dir: Path, tenant_id: str, name: str) -> Path:
    if not SOURCE_NAME.match(name):
        raise InvalidInput(f"source name {name!r}: use lowercase letters, digits, '-' or '_'")
    return keys_dir / "sources" / tenant_id / f"{name}.pem"


def create_source_key(keys_dir: Path, tenant_id: str, name: str) -> tuple[str, bytes, Path]:
    """A new key pair for a source; the private key is written 0600 and never leaves this machine's key dir."""
    path = source_key_path(keys_dir, tenant_id, name)
    if path.exists():
        raise InvalidInput(f"source {name!r} of tenant {tenant_id!r} already has a key at {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_pem, public_pem = generate_source_keypair()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    path.with_suffix(".pub").write_bytes(public_pem)
    return key_id_for_public_pem(public_pem), public_pem, path


def load_source_key(keys_dir: Path, tenant_id: str, name: str) -> tuple[str, bytes]:
    path = source_key_path(keys_dir, tenant_id, name)
    if not path.exists():
        raise InvalidInput(
            f"no key for source {name!r} of tenant {tenant_id!r} (create it with `evolution source add`)"
        )
    public_pem = path.with_suffix(".pub").read_bytes()
    return key_id_for_public_pem(public_pem), path.read_bytes()


def records_to_events(
    records: Iterable[dict[str, Any]],
    tenant_id: str,
    key_id: str,
    private_pem: bytes,
    *,
    target: str,
    request_prefix: str,
    with_actual: bool = True,
    first_sequence: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Plain records (event_time, features, target) → signed learning events, as a source would send them.

    ``first_sequence``: number the events first_sequence, first_sequence + 1, ... (inside the signature), so the
    registry refuses a replay or an out-of-order event of this source; a record's own ``sequence`` wins.
    Raises RejectedEvent for a record that cannot be an event (:func:`sign_records` keeps going instead).
    """
    signer = RecordSigner(tenant_id, key_id, private_pem, target, request_prefix, with_actual, first_sequence)
    for i, record in enumerate(records):
        yield signer.sign(i, record)


def sign_records(
    records: Iterable[InputRecord],
    tenant_id: str,
    key_id: str,
    private_pem: bytes,
    *,
    target: str,
    request_prefix: str,
) -> Iterator[InputRecord]:
    """Plain records as a reader made them → signed events; a record that cannot be one keeps its reason."""
    signer = RecordSigner(tenant_id, key_id, private_pem, target, request_prefix)
    for i, record in enumerate(records):
        if record.problem is not None:
            yield record
            continue
        try:
            if not isinstance(record.obj, dict):
                raise RejectedEvent(None, "a record must be a JSON object of column names and values")
            # The signed event replaces the record's text: the ingestor checks the event, not the line.
            yield replace(record, obj=signer.sign(i, record.obj), raw="")
        except RejectedEvent as refused:
            request_id = record.obj.get("request_id") if isinstance(record.obj, dict) else None
            yield replace(
                record,
                problem=refused,
                request_id=request_id if isinstance(request_id, str) else None,
            )


# Columns of a plain record that are not features.
RESERVED = ("event_time", "prediction_id", "request_id", "sequence")


@dataclass(frozen=True)
class RecordSigner:
    """Turns the i-th plain record of a file into the event its source would sign (request ids from the position)."""

    tenant_id: str
    key_id: str
    private_pem: bytes
    target: str
    request_prefix: str
    with_actual: bool = True
    first_sequence: int | None = None

    def sign(self, i: int, record: dict[str, Any]) -> dict[str, Any]:
        if record.get("event_time") is None:
            raise RejectedEvent(
                "event_time", "event_time: missing (every record needs the time it was observed)"
            )
        event = {
            "tenant": self.tenant_id,
            "request_id": record.get("request_id") or f"{self.request_prefix}-{i:07d}",
            "event_time": record["event_time"],
            "features": {k: v for k, v in record.items() if k not in (*RESERVED, self.target)},
            "prediction_id": record.get("prediction_id"),
            "actual": record.get(self.target) if self.with_actual else None,
        }
        sequence = record.get("sequence")
        if sequence is None and self.first_sequence is not None:
            sequence = self.first_sequence + i
        try:
            return sign_event(event, self.private_pem, self.key_id, sequence=_sequence(sequence))
        except ValidationError as error:
            raise self._in_record_terms(rejection_from(error)) from None

    def _in_record_terms(self, refused: RejectedEvent) -> RejectedEvent:
        """Name the record's column, not the event's field: the target column for ``actual``, a feature's own name."""
        field = refused.field or ""
        column = self.target if field == "actual" else field.removeprefix("features.")
        if column == field:
            return refused
        return RejectedEvent(column, column + refused.reason.removeprefix(field))


def _sequence(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise RejectedEvent("sequence", f"sequence: {str(value)[:40]!r} is not a whole number")

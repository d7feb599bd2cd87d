"""Event sources: their signing keys, and turning plain records into signed learning events."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from evolution.data.event_schema import sign_event
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
    """
    for i, record in enumerate(records):
        features = {
            k: v
            for k, v in record.items()
            if k not in ("event_time", target, "prediction_id", "request_id", "sequence")
        }
        event = {
            "tenant": tenant_id,
            "request_id": record.get("request_id") or f"{request_prefix}-{i:07d}",
            "event_time": record["event_time"],
            "features": features,
            "prediction_id": record.get("prediction_id"),
            "actual": record.get(target) if with_actual else None,
        }
        sequence = record.get("sequence")
        if sequence is None and first_sequence is not None:
            sequence = first_sequence + i
        yield sign_event(event, private_pem, key_id, sequence=None if sequence is None else int(sequence))

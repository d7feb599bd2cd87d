"""load_rows parses the whole window at once: the same rows as parsing it line by line, tricky text included."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from evolution.data.sources import create_source_key, records_to_events
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.security import Principal
from evolution.timeutil import iso, utcnow
from tests.support.scenario import ADMIN

TRICKY = [
    "line\nbreak",
    "carriage\rreturn",
    "tab\tand \\ backslash",
    'quote " here',
    "sep\u2028par\u2029",
    "ß 🌾",
    "",
]


def line_by_line(data: bytes) -> list[dict[str, Any]]:
    rows = []
    for line in data.splitlines():
        event = json.loads(line)
        rows.append(
            {
                **event["features"],
                "event_time": event["event_time"],
                "actual": event["actual"],
                "request_id": event["request_id"],
                "prediction_id": event["prediction_id"],
            }
        )
    return rows


def test_rows_equal_the_line_by_line_parse_of_the_verified_bytes(tmp_path: Path) -> None:
    services = build_services(Settings(home=tmp_path / "home"))
    try:
        services.tenants.ensure_tenant(ADMIN, "acme")
        key_id, public_pem, path = create_source_key(services.settings.keys_dir, "acme", "s")
        services.events.register_source_key(ADMIN, "acme", key_id, public_pem)
        start = utcnow() - timedelta(hours=1)
        records = [
            {
                "event_time": iso(start + timedelta(seconds=i)),
                "note": text,
                "actual": None if i % 2 else float(i),
                "n": i,
                "x": None,
                "ok": bool(i % 3),
            }
            for i, text in enumerate(TRICKY * 3)
        ]
        events = records_to_events(
            records, "acme", key_id, path.read_bytes(), target="actual", request_prefix="r"
        )
        assert services.events.ingest_objects(ADMIN, "acme", list(events), "test").accepted == len(records)
        snapshot = services.snapshots.seal(Principal.system("acme"), "acme", utcnow())

        rows = services.snapshots.load_rows(snapshot, services.keyring)
        data = services.store.read_bytes("acme", snapshot.artifact_digest)
        assert b"\n" in data and data.count(b"\n") == len(records)
        assert rows == line_by_line(data)
        assert [row["note"] for row in rows] == [r["note"] for r in records]
    finally:
        services.close()

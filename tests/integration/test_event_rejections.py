"""Hostile and broken learning events on SQLite and a real PostgreSQL: each refused with its reason, nothing counted
twice, and nothing already accepted changed (a digest of every learning_events row is byte-identical before/after).

Cases: a signature made by another source's key (of the same tenant, of another tenant), a replay of an accepted
event, a replay under a new request_id with an old sequence, an expired timestamp, malformed JSON and body fields,
oversized payloads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.data.event_schema import MAX_EVENT_BYTES, IngestSummary, LearningEventIn, sign_event
from evolution.data.events import DEFAULT_MAX_EVENT_AGE, EventIngestor
from evolution.data.sources import records_to_events
from evolution.integrity.signing import generate_source_keypair, key_id_for_public_pem
from evolution.registry.db import reading
from evolution.registry.schema import Base, DeadLetter, LearningEvent, SourceKey
from evolution.registry.tenants import TenantService
from evolution.security import Principal, Role
from evolution.timeutil import iso, utcnow

TENANT, OTHER = "acme", "globex"
ADMIN = Principal(user="root", role=Role.ADMIN, tenants=(TENANT, OTHER))


@dataclass(frozen=True)
class Source:
    key_id: str
    private_pem: bytes


@dataclass
class World:
    factory: sessionmaker[Session]
    ingestor: EventIngestor
    a: Source  # acme's source that has sent sequences 1..5
    b: Source  # another source of acme
    g: Source  # globex's source
    accepted: list[dict[str, Any]]

    def event(
        self, i: int, source: Source | None = None, sequence: int | None = None, **fields: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "tenant": TENANT,
            "request_id": f"r-{i}",
            "event_time": iso(utcnow() - timedelta(hours=2) + timedelta(seconds=i)),
            "features": {"rain_mm": 10.0 + i, "crop": "maize"},
            "actual": 7.5,
            **fields,
        }
        source = source or self.a
        return sign_event(body, source.private_pem, source.key_id, sequence=sequence)


def _source(ingestor: EventIngestor, tenant: str) -> Source:
    private_pem, public_pem = generate_source_keypair()
    key_id = key_id_for_public_pem(public_pem)
    ingestor.register_source_key(ADMIN, tenant, key_id, public_pem)
    return Source(key_id, private_pem)


@pytest.fixture
def world(registry_factory: sessionmaker[Session]) -> World:
    tenants = TenantService(registry_factory)
    tenants.ensure_tenant(ADMIN, TENANT)
    tenants.ensure_tenant(ADMIN, OTHER)
    ingestor = EventIngestor(registry_factory)
    w = World(
        registry_factory,
        ingestor,
        _source(ingestor, TENANT),
        _source(ingestor, TENANT),
        _source(ingestor, OTHER),
        [],
    )
    w.accepted = [w.event(i, sequence=i) for i in range(1, 6)] + [w.event(i) for i in range(6, 9)]
    w.accepted.append(w.event(9, w.b, sequence=100))
    summary = ingestor.ingest_objects(ADMIN, TENANT, w.accepted, "setup")
    assert (summary.accepted, summary.duplicate, summary.rejected) == (9, 0, 0), summary
    other = sign_event(
        {"tenant": OTHER, "request_id": "g-1", "event_time": iso(utcnow()), "features": {"x": 1}},
        w.g.private_pem,
        w.g.key_id,
        sequence=1,
    )
    assert ingestor.ingest_objects(ADMIN, OTHER, [other], "setup").accepted == 1
    return w


def state(factory: sessionmaker[Session]) -> tuple[str, int, dict[str, int | None]]:
    """A digest of every accepted row (every column) of both tenants, the row count and each source's last sequence."""
    rows: list[list[Any]] = []
    sequences: dict[str, int | None] = {}
    for tenant in (TENANT, OTHER):
        with reading(factory, tenant) as session:
            for e in session.scalars(
                sa.select(LearningEvent).where(LearningEvent.tenant_id == tenant).order_by(LearningEvent.id)
            ):
                rows.append(
                    [
                        e.id,
                        e.tenant_id,
                        e.request_id,
                        iso(e.event_time),
                        iso(e.received_at),
                        e.source_key_id,
                        e.features,
                        e.prediction_id,
                        e.actual,
                        e.payload_digest,
                    ]
                )
            for key in session.scalars(sa.select(SourceKey).where(SourceKey.tenant_id == tenant)):
                sequences[key.key_id] = key.last_sequence
    return hashlib.sha256(canonical_json(rows)).hexdigest(), len(rows), sequences


def dead_letters(factory: sessionmaker[Session]) -> list[tuple[str | None, str | None, str]]:
    with reading(factory, TENANT) as session:
        return [
            (d.request_id, d.field, d.reason)
            for d in session.scalars(
                sa.select(DeadLetter).where(DeadLetter.tenant_id == TENANT).order_by(DeadLetter.id)
            )
        ]


def _with_signature_of(w: World, claimed: Source, signer: Source, i: int) -> dict[str, Any]:
    """An event that names ``claimed``'s key but is signed with ``signer``'s private key."""
    forged = w.event(i, signer)
    payload = LearningEventIn.model_validate({**forged, "source_key_id": claimed.key_id}).signed_payload()
    from evolution.integrity.signing import sign_with_private_pem

    return {
        **forged,
        "source_key_id": claimed.key_id,
        "signature": sign_with_private_pem(signer.private_pem, payload).value,
    }


# name -> (the event(s) to ingest as objects or a raw line, field named, words in the reason)
Case = tuple[Callable[[World], dict[str, Any] | str], str | None, list[str]]
CASES: dict[str, Case] = {
    "signed-by-another-source-of-the-tenant": (
        lambda w: _with_signature_of(w, w.a, w.b, 20),
        "signature",
        ["does not verify with the source's registered key"],
    ),
    "signed-by-a-source-of-another-tenant-under-its-own-key-id": (
        lambda w: w.event(21, w.g),
        "source_key_id",
        ["is not a registered key of 'acme'"],
    ),
    "signed-by-a-source-of-another-tenant-claiming-our-key": (
        lambda w: _with_signature_of(w, w.a, w.g, 22),
        "signature",
        ["does not verify"],
    ),
    "new-request-id-with-an-old-sequence": (
        lambda w: w.event(23, sequence=3),
        "sequence",
        ["stale sequence 3", "last accepted sequence is 5"],
    ),
    "new-request-id-with-the-last-sequence": (
        lambda w: w.event(24, sequence=5),
        "sequence",
        ["stale sequence 5"],
    ),
    "another-source's-old-sequence-is-not-ours": (
        lambda w: w.event(25, w.b, sequence=99),
        "sequence",
        ["stale sequence 99", "last accepted sequence is 100"],
    ),
    "expired": (
        lambda w: w.event(26, event_time=iso(utcnow() - DEFAULT_MAX_EVENT_AGE - timedelta(days=1))),
        "event_time",
        ["expired", f"{DEFAULT_MAX_EVENT_AGE.days} days"],
    ),
    "malformed-json": (lambda w: '{"tenant": "acme", "request_id": "m-1", ', None, ["malformed JSON"]),
    "not-an-object": (lambda w: "[1, 2, 3]", None, ["must be a JSON object"]),
    "negative-sequence": (
        lambda w: {**w.event(27), "sequence": -1},
        "sequence",
        ["greater than or equal to 0"],
    ),
    "sequence-not-a-number": (lambda w: {**w.event(28), "sequence": "seven"}, "sequence", ["valid integer"]),
    "features-not-an-object": (lambda w: {**w.event(29), "features": [1, 2]}, "features", ["dictionary"]),
    "event-time-without-timezone": (
        lambda w: {**w.event(30), "event_time": "2026-11-01T00:00:00"},
        "event_time",
        ["timezone"],
    ),
    "missing-signature": (
        lambda w: {k: v for k, v in w.event(31).items() if k != "signature"},
        "signature",
        ["Field required"],
    ),
    "oversized-line": (  # valid and signed but for an ignored padding field: the size alone refuses it
        lambda w: json.dumps({**w.event(32), "padding": "x" * MAX_EVENT_BYTES}),
        None,
        ["larger than 65536 bytes"],
    ),
    "oversized-object": (
        lambda w: {**w.event(33), "padding": ["z" * 1000] * 70},
        None,
        ["larger than 65536 bytes"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_rejected_event_is_dead_lettered_with_its_reason_and_changes_nothing_accepted(
    world: World, name: str
) -> None:
    make, field, words = CASES[name]
    before = state(world.factory)
    letters = len(dead_letters(world.factory))
    item = make(world)
    for attempt in range(2):  # a rejected event sent twice is rejected twice, never accepted
        if isinstance(item, str):
            summary = world.ingestor.ingest_lines(ADMIN, TENANT, [item], "hostile")
        else:
            summary = world.ingestor.ingest_objects(ADMIN, TENANT, [item], "hostile")
        assert (summary.accepted, summary.duplicate, summary.rejected) == (0, 0, 1), summary
        assert summary.rejects[0].field == field
        assert state(world.factory) == before, "accepted rows, counts and sequences are unchanged"
        letters_now = dead_letters(world.factory)
        assert len(letters_now) == letters + attempt + 1
        _, dead_field, reason = letters_now[-1]
        assert dead_field == field
        for word in words:
            assert word in reason, reason


def test_a_replay_of_an_accepted_event_is_a_duplicate_counted_once(world: World) -> None:
    before = state(world.factory)
    replay = json.loads(json.dumps(world.accepted[2]))  # the same bytes again: sequence 3 is not "stale" here
    line = json.dumps(world.accepted[6])
    objects = world.ingestor.ingest_objects(ADMIN, TENANT, [replay, replay], "replay")
    lines = world.ingestor.ingest_lines(ADMIN, TENANT, [line], "replay")
    assert (objects.accepted, objects.duplicate, objects.rejected) == (0, 2, 0)
    assert (lines.accepted, lines.duplicate, lines.rejected) == (0, 1, 0)
    assert state(world.factory) == before
    assert dead_letters(world.factory) == []


def test_a_reused_request_id_with_other_content_is_refused_even_with_a_fresh_sequence(world: World) -> None:
    before = state(world.factory)
    summary = world.ingestor.ingest_objects(ADMIN, TENANT, [world.event(2, sequence=50, actual=1.0)], "t")
    assert summary.rejected == 1 and summary.rejects[0].field == "request_id"
    assert state(world.factory) == before, "the refused event does not advance the source's sequence"


def test_a_mixed_batch_is_counted_right_and_accepts_only_the_good_in_order(world: World) -> None:
    w = world
    _, count, sequences = state(w.factory)
    batch: list[Any] = [
        w.event(40, sequence=7),  # accepted: 7 > 5
        w.event(41, sequence=6),  # stale within the batch: 6 <= 7
        w.event(42),  # no sequence: accepted as today
        w.accepted[0],  # duplicate
        w.event(43, sequence=9),  # accepted: gaps are allowed
        w.event(44, sequence=9),  # stale: equal
        _with_signature_of(w, w.a, w.b, 45),  # bad signature
        w.event(46, event_time=iso(utcnow() - timedelta(days=3))),  # expired under this call's max age
    ]
    summary = w.ingestor.ingest_objects(ADMIN, TENANT, batch, "mixed", max_age=timedelta(days=2))
    assert (summary.accepted, summary.duplicate, summary.rejected) == (3, 1, 4), summary
    assert [r.field for r in summary.rejects] == ["signature", "event_time", "sequence", "sequence"]
    _, count_after, sequences_after = state(w.factory)
    assert count_after == count + 3
    assert sequences_after == {**sequences, w.a.key_id: 9}
    with reading(w.factory, TENANT) as session:
        stored = set(
            session.scalars(sa.select(LearningEvent.request_id).where(LearningEvent.tenant_id == TENANT))
        )
    assert {"r-40", "r-42", "r-43"} <= stored and not {"r-41", "r-44", "r-45", "r-46"} & stored


def test_concurrent_ingests_of_one_sequence_number_accept_exactly_one(world: World) -> None:
    from tests.integration.test_registry_concurrency import race

    def send(event: dict[str, Any]) -> Callable[[], IngestSummary]:
        return lambda: world.ingestor.ingest_objects(ADMIN, TENANT, [event], "race")

    results = race([send(world.event(60 + i, sequence=10)) for i in range(8)])
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.accepted for r in results) == 1
    assert sum(r.rejected for r in results) == 7
    assert all(r.rejects[0].field == "sequence" for r in results if r.rejected)
    assert state(world.factory)[2][world.a.key_id] == 10


def test_events_without_a_sequence_sign_and_hash_as_before_sequences_existed(world: World) -> None:
    plain = world.event(70)
    assert "sequence" not in plain
    legacy_payload = canonical_json({k: v for k, v in plain.items() if k != "signature"})
    assert LearningEventIn.model_validate(plain).signed_payload() == legacy_payload
    numbered = list(
        records_to_events(
            [{"event_time": iso(utcnow()), "rain_mm": 1.0, "yield_t_ha": 7.0}] * 3,
            TENANT,
            world.a.key_id,
            world.a.private_pem,
            target="yield_t_ha",
            request_prefix="cli",
            first_sequence=20,
        )
    )
    assert [e["sequence"] for e in numbered] == [20, 21, 22]
    assert "sequence" not in numbered[0]["features"]
    summary = world.ingestor.ingest_objects(ADMIN, TENANT, [plain, *numbered], "cli")
    assert (summary.accepted, summary.rejected) == (4, 0)
    assert state(world.factory)[2][world.a.key_id] == 22


def test_the_sequence_migration_matches_the_model(registry_factory: sessionmaker[Session]) -> None:
    with registry_factory() as session:
        diffs = compare_metadata(MigrationContext.configure(session.connection()), Base.metadata)
    assert [d for d in diffs if "source_keys" in repr(d)] == []

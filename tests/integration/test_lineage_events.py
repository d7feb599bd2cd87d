"""OpenLineage run events: one per sealed snapshot, trained version and promotion, valid against the specification,
and delivered from the outbox, so an endpoint that is down loses none.

The services are the composition root's (SQLite home), driven through one tenant's lifecycle without training (the
registry records a trained version as the retraining workflow does: TRAINING -> VALIDATED with its model hash).
Events are checked with jsonschema against the OpenLineage spec 2-0-2 and the jobType facet 2-0-4 (copies under
tests/support/openlineage_spec/, versions named there) and our own facets against their schema beside them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from activities.escalations import EscalationActivities
from evolution.contracts import EscalationsIn
from evolution.data.event_schema import sign_event
from evolution.integrity.signing import generate_source_keypair, key_id_for_public_pem
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges
from evolution.notifications.lineage_config import LineageConfig
from evolution.notifications.outbox import OutboxNotifier
from evolution.platform.doctor import lineage_checks
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import reading, upgrade_to_head
from evolution.registry.lineage_events import MERKLE_FACET, MODEL_FACET, PROMOTION_FACET, run_id
from evolution.registry.lineage_outbox import MODEL_PROMOTED, MODEL_TRAINED, SNAPSHOT_SEALED
from evolution.registry.schema import Notification
from evolution.security import Principal, Role
from evolution.timeutil import iso, utcnow
from tests.support.ports import free_port
from tests.support.postgres import app_role_url, create_database

SPEC = Path(__file__).resolve().parents[1] / "support" / "openlineage_spec"
TENANT = "acme"
ADMIN = Principal.for_tenant("root", Role.ADMIN, TENANT)
SYSTEM = Principal.system(TENANT)
MODEL_HASH = "c0ffee" * 10 + "abcd"


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SPEC / name).read_text(encoding="utf-8"))
    return loaded


CORE = _schema("OpenLineage-2-0-2.json")
JOB_TYPE = _schema("JobTypeJobFacet-2-0-4.json")
OURS = _schema("ControlledEvolutionFacets.json")
REGISTRY: Registry = Registry().with_resources(  # type: ignore[call-arg]
    [(s["$id"], Resource.from_contents(s)) for s in (CORE, JOB_TYPE, OURS)]
)


def _validator(schema_id: str, pointer: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"{schema_id}#{pointer}"},
        registry=REGISTRY,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


RUN_EVENT = _validator(CORE["$id"], "/$defs/RunEvent")
JOB_TYPE_FACET = _validator(JOB_TYPE["$id"], "/$defs/JobTypeJobFacet")


def _ours(name: str) -> jsonschema.Draft202012Validator:
    return _validator(OURS["$id"], f"/$defs/{name}")


def _assert_valid(event: dict[str, Any]) -> None:
    RUN_EVENT.validate(event)
    # The core schema lets any facet through as long as it has _producer and _schemaURL: check each by its own.
    JOB_TYPE_FACET.validate(event["job"]["facets"]["jobType"])
    for dataset in [*event["inputs"], *event["outputs"]]:
        for key, facet in dataset.get("facets", {}).items():
            _ours(
                {MERKLE_FACET: "MerkleRootDatasetFacet", MODEL_FACET: "ModelVersionDatasetFacet"}[key]
            ).validate(facet)
    for key, facet in event["run"].get("facets", {}).items():
        assert key == PROMOTION_FACET
        _ours("PromotionRunFacet").validate(facet)


class Lifecycle:
    """One tenant: a sealed snapshot, a trained version on it, that version promoted."""

    def __init__(self, services: Services) -> None:
        self.services = services
        services.tenants.ensure_tenant(ADMIN, TENANT)
        private_pem, public_pem = generate_source_keypair()
        key_id = key_id_for_public_pem(public_pem)
        services.events.register_source_key(ADMIN, TENANT, key_id, public_pem)
        start = utcnow() - timedelta(hours=1)
        events = [
            sign_event(
                {
                    "tenant": TENANT,
                    "request_id": f"r-{i}",
                    "event_time": iso(start + timedelta(seconds=i)),
                    "features": {"rain_mm": float(i)},
                    "actual": 1.0 + i,
                },
                private_pem,
                key_id,
            )
            for i in range(12)
        ]
        assert services.events.ingest_objects(ADMIN, TENANT, events, "test").accepted == 12
        self.snapshot = services.snapshots.seal(SYSTEM, TENANT, utcnow())
        registry = services.registry
        version = registry.register_version(SYSTEM, TENANT, "yield", "reg-1")
        version = registry.transition(
            SYSTEM, self._to(version.id, "TRAINING", version.lock_version, "t-1")
        ).version
        trained = VersionChanges(model_hash=MODEL_HASH, dataset_snapshot_id=self.snapshot.id)
        version = registry.transition(
            SYSTEM, self._to(version.id, "VALIDATED", version.lock_version, "t-2", trained)
        ).version
        for state, request in (("SHADOW", "t-3"), ("CANARY", "t-4")):
            version = registry.transition(
                SYSTEM, self._to(version.id, state, version.lock_version, request)
            ).version
        self.promote_args = (ADMIN, version.id, version.lock_version, "approve-1")
        self.champion = registry.promote(*self.promote_args).version

    @staticmethod
    def _to(
        version_id: str, state: str, lock: int, request: str, changes: VersionChanges | None = None
    ) -> TransitionRequest:
        return TransitionRequest(
            version_id=version_id,
            to_state=ModelState(state),
            expected_version=lock,
            request_id=request,
            changes=changes,
        )

    def outbox(self) -> list[Notification]:
        with reading(self.services.factory, TENANT) as session:
            return list(
                session.scalars(
                    select(Notification)
                    .where(Notification.kind.startswith("lineage."))
                    .order_by(Notification.id)
                )
            )


@pytest.fixture(scope="module")
def file_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    services = build_services(Settings(home=tmp_path_factory.mktemp("lineage-file") / "home", tracing="off"))
    try:
        yield Lifecycle(services)
    finally:
        services.close()


def _file_events(world: Lifecycle) -> list[dict[str, Any]]:
    lines = world.services.settings.lineage_file.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_a_seal_a_training_and_a_promotion_each_emit_one_event_to_the_file_under_the_home(
    file_world: Lifecycle,
) -> None:
    assert (
        file_world.services.settings.lineage_file
        == file_world.services.settings.home / "lineage" / "events.jsonl"
    )
    events = _file_events(file_world)
    assert [e["job"]["name"] for e in events] == [
        "acme.snapshot",
        "acme.training.yield",
        "acme.promotion.yield",
    ]
    assert [r.kind for r in file_world.outbox()] == [SNAPSHOT_SEALED, MODEL_TRAINED, MODEL_PROMOTED]
    assert all(r.delivered_at is not None for r in file_world.outbox())
    assert [r.body for r in file_world.outbox()] == events  # delivered as recorded


def test_every_event_is_valid_against_the_openlineage_specification(file_world: Lifecycle) -> None:
    events = _file_events(file_world)
    assert len(events) == 3
    for event in events:
        _assert_valid(event)
        assert event["eventType"] == "COMPLETE"
        assert event["schemaURL"] == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def test_an_event_that_breaks_the_specification_is_caught_by_the_check(file_world: Lifecycle) -> None:
    (sealed, *_) = _file_events(file_world)
    broken = json.loads(json.dumps(sealed))
    del broken["job"]["namespace"]
    with pytest.raises(jsonschema.ValidationError, match="namespace"):
        _assert_valid(broken)
    tampered = json.loads(json.dumps(sealed))
    tampered["outputs"][0]["facets"][MERKLE_FACET]["merkleRoot"] = "not hex"
    with pytest.raises(jsonschema.ValidationError):
        _assert_valid(tampered)


def test_the_events_carry_the_snapshots_merkle_root_and_the_models_digest(file_world: Lifecycle) -> None:
    sealed, trained, promoted = _file_events(file_world)
    snapshot = file_world.snapshot
    snapshot_name = f"acme/snapshots/{snapshot.id}"
    assert [d["name"] for d in sealed["outputs"]] == [snapshot_name]
    merkle = sealed["outputs"][0]["facets"][MERKLE_FACET]
    assert (merkle["merkleRoot"], merkle["rowCount"], merkle["leafCount"]) == (
        snapshot.merkle_root,
        snapshot.row_count,
        snapshot.leaf_count,
    )
    assert sealed["run"]["runId"] == run_id("snapshot", snapshot.id)
    # The training reads exactly that snapshot and writes the version, named with its digest.
    assert [d["name"] for d in trained["inputs"]] == [snapshot_name]
    assert trained["inputs"][0]["facets"][MERKLE_FACET]["merkleRoot"] == snapshot.merkle_root
    assert [d["name"] for d in trained["outputs"]] == ["acme/models/yield/v1"]
    model = trained["outputs"][0]["facets"][MODEL_FACET]
    assert model["digest"] == f"sha256:{MODEL_HASH}" and model["versionId"] == file_world.champion.id
    # The promotion takes the version to the model's champion.
    assert [d["name"] for d in promoted["inputs"]] == ["acme/models/yield/v1"]
    assert [d["name"] for d in promoted["outputs"]] == ["acme/models/yield/champion"]
    assert promoted["run"]["facets"][PROMOTION_FACET]["fromState"] == "CANARY"
    assert {e["job"]["namespace"] for e in (sealed, trained, promoted)} == {"controlled-evolution"}


def test_a_replayed_request_records_no_second_event_and_people_never_see_lineage_rows(
    file_world: Lifecycle,
) -> None:
    before = len(file_world.outbox())
    file_world.services.registry.promote(*file_world.promote_args)  # the same request id: idempotent
    assert len(file_world.outbox()) == before
    assert not [
        n
        for n in OutboxNotifier(file_world.services.factory).recent(TENANT)
        if n["kind"].startswith("lineage")
    ]


def test_doctor_reports_the_lineage_transport(file_world: Lifecycle) -> None:
    checks = {c.name: c for c in lineage_checks(file_world.services.settings)}
    assert checks["transport"].detail.startswith(f"file {file_world.services.settings.lineage_file}")
    assert checks["lineage.file"].ok
    assert checks["outbox"].detail == "0 event(s) waiting for delivery"


# ------------------------------------------------------------------------------------- an HTTP endpoint's outage


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/api/v1/lineage", self.path
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings of the registry: SQLite in the home, or PostgreSQL as the application role (row-level security)."""
    if request.param == "sqlite":
        return {}
    url = create_database(request.getfixturevalue("pg_server"))
    upgrade_to_head(url)
    return {"database_url": app_role_url(url), "database_owner_url": url}


def test_events_wait_in_the_outbox_while_the_endpoint_is_down_and_are_delivered_once_each_after(
    tmp_path: Path, database: dict[str, str]
) -> None:
    port = free_port()  # nothing listens here yet: the endpoint is down
    lineage = LineageConfig(transport="http", url=f"http://127.0.0.1:{port}", retries=0, timeout_s=2)
    settings = Settings(home=tmp_path / "home", tracing="off", lineage=lineage, **database)  # type: ignore[arg-type]
    services = build_services(settings)
    try:
        world = Lifecycle(services)  # every recording tried delivery at once, and failed
        rows = world.outbox()
        assert len(rows) == 3 and all(r.delivered_at is None for r in rows)
        down = services.lineage_delivery.deliver_pending()
        assert (down.delivered, down.pending, down.failed_tenants) == (0, 3, [TENANT])
        assert "ConnectionError" in (down.error or "")

        server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
        server.received = []  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            # The notify-escalations schedule's activity is the pass that retries (no channel to escalate to here).
            scheduled = EscalationActivities(None, services.lineage_delivery).run_escalations
            up = ActivityEnvironment().run(scheduled, EscalationsIn())
            again = services.lineage_delivery.deliver_pending()
        finally:
            server.shutdown()
            thread.join(timeout=10)
        assert (up.lineage_delivered, up.lineage_pending, up.escalated) == (3, 0, 0)
        assert (again.delivered, again.pending) == (0, 0)
        received: list[dict[str, Any]] = server.received  # type: ignore[attr-defined]
        assert received == [r.body for r in rows]  # each once, in the order they were recorded
        assert len({e["run"]["runId"] for e in received}) == 3
        for event in received:
            _assert_valid(event)
        assert all(r.delivered_at is not None for r in world.outbox())
    finally:
        services.close()

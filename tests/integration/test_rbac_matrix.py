"""The RBAC matrix: every action of the permission table, through every layer that performs it, for every actor.

``TABLE`` maps each :class:`~evolution.security.Action` to (a) a service-layer call that performs it, (b) the HTTP
operations that perform it and (c) the dashboard controls that perform it. Every cell
actor in {anonymous, viewer, manager, admin} x tenant in {own, other} is tried for real and asserted: it must succeed
exactly when the role is in ``PERMISSIONS[action]`` and the tenant is the actor's own, and be refused otherwise
(PermissionDenied in the service layer, 401/403 over HTTP, no page or control in the dashboard). A new Action without
a row, or a new HTTP operation no row names, fails the table tests. An action the dashboard offers no control for
(quotas, tenant settings, users, model definitions…) has no dashboard cells: the CLI and the API are its only doors.

An action whose row names no service-layer call is a known gap (the call exists but takes no principal, or nothing
performs the action yet): its test is an explicit xfail naming the gap, never a silent pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import RetrainingInput, RolloutTiming
from evolution.data.sources import records_to_events
from evolution.demo.scenario import Scenario
from evolution.demo.synthetic import TARGET, generate_rows
from evolution.errors import PermissionDenied
from evolution.governance.users import UserAccess, UserService
from evolution.integrity.signing import generate_source_keypair, key_id_for_public_pem
from evolution.lifecycle import ModelState, TransitionRequest, VersionView
from evolution.notifications.port import NotificationIn, notify_as
from evolution.platform.orchestrator import start_retraining_as
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.audit_checkpoints import AuditCheckpoint, SignedCheckpoint, checkpoint_key
from evolution.registry.model_definitions import ModelDefinition
from evolution.security import PERMISSIONS, Action, Principal, Role
from evolution.serving.app import create_app
from evolution.serving.predictor import PredictInstance, Predictor
from evolution.stats.drift_models import DriftConfig, DriftResult
from evolution.timeutil import utcnow
from tests.support.http_server import serving
from tests.support.models import install_model
from tests.support.scenario import seed_tenant
from tests.workflows.conftest import temporal_env  # noqa: F401
from tests.workflows.test_retraining_approval import wait_for_approval
from workers.orchestrator import TemporalOrchestrator
from workers.worker import build_worker

OWN, OTHER = "own", "other"
TENANTS = (OWN, OTHER)
ACTORS: dict[str, Role | None] = {
    "anonymous": None,
    "viewer": Role.VIEWER,
    "manager": Role.MANAGER,
    "admin": Role.ADMIN,
}
ROOT = Principal.for_tenant("root", Role.ADMIN, "*")
PASSWORD = "a long enough password"
APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")

Outcome = Literal["allowed", "refused"]


def expected(action: Action, role: Role | None, tenant: str) -> Outcome:
    return "allowed" if role is not None and role in PERMISSIONS[action] and tenant == OWN else "refused"


# ----------------------------------------------------------------------------------------------- the world
@dataclass
class World:
    """Two tenants with the same state: a signing source, sealed history, a trained and signed champion."""

    services: Services
    users: UserService
    predictor: Predictor
    keys: dict[str, tuple[str, bytes]]
    serial: Iterator[int] = field(default_factory=itertools.count)

    def rid(self, what: str) -> str:
        return f"{what}-{next(self.serial)}-{uuid.uuid4().hex[:8]}"

    def event(self, tenant: str) -> dict[str, Any]:
        """One signed learning event, happening now, from the tenant's own source."""
        key_id, private_pem = self.keys[tenant]
        record = generate_rows(1, next(self.serial), utcnow() - timedelta(milliseconds=5))[0]
        return next(
            records_to_events(
                [record], tenant, key_id, private_pem, target=TARGET, request_prefix=self.rid("ev")
            )
        )

    def instance(self) -> PredictInstance:
        record = generate_rows(1, 3, utcnow())[0]
        features = {k: v for k, v in record.items() if k not in ("event_time", TARGET)}
        return PredictInstance(request_id=self.rid("q"), features=features)

    def canary(self, tenant: str, model: str) -> VersionView:
        """The model's CANARY, moved there by the system through the lifecycle (reused while one exists)."""
        system = Principal.system(tenant)
        existing = self.services.registry.current(system, tenant, model, ModelState.CANARY)
        if existing is not None:
            return existing
        version = self.services.registry.register_version(system, tenant, model, self.rid("reg"))
        for state in (ModelState.TRAINING, ModelState.VALIDATED, ModelState.SHADOW, ModelState.CANARY):
            version = self.services.registry.transition(
                system,
                TransitionRequest(
                    version_id=version.id,
                    to_state=state,
                    expected_version=version.lock_version,
                    request_id=self.rid("tr"),
                ),
            ).version
        return version

    def rollback_ready(self, tenant: str, model: str) -> VersionView:
        """A champion with an earlier champion to go back to; returns the one a rollback would restore."""
        registry, system = self.services.registry, Principal.system(tenant)
        manager = Principal.for_tenant("setup-manager", Role.MANAGER, tenant)

        def promote_new() -> None:
            v = self.canary(tenant, model)
            registry.promote(manager, v.id, v.lock_version, self.rid("promote"))

        champion = registry.current(system, tenant, model, ModelState.CHAMPION)
        if champion is None:
            promote_new()
        champion = registry.current(system, tenant, model, ModelState.CHAMPION)
        assert champion is not None
        earlier = [
            v
            for v in registry.list_versions(system, tenant, model)
            if v.state == ModelState.DEPRECATED and v.number < champion.number
        ]
        if not earlier:
            promote_new()
            return self.rollback_ready(tenant, model)
        return max(earlier, key=lambda v: v.number)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("rbac") / "home"
    services = build_services(Settings(home=home, training_memory_limit_mb=None))
    keys = {}
    for tenant in TENANTS:
        seeded = seed_tenant(services, Scenario(tenant_id=tenant, history_rows=300))
        keys[tenant] = (seeded.key_id, seeded.private_pem)
        services.snapshots.seal(ROOT, tenant, utcnow())
        install_model(services, tenant, home.parent, ModelState.CHAMPION)
    users = UserService(
        services.factory, hasher=PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    )
    predictor = services.predictor(canary_share=0.1, refresh_s=0)
    yield World(services, users, predictor, keys)
    services.close()


@dataclass
class Tally:
    """Every asserted cell, per layer; summarised at the end of the module."""

    cells: list[tuple[str, Action, str, str, Outcome, str]] = field(default_factory=list)
    gaps: list[tuple[str, Action, str]] = field(default_factory=list)

    def record(self, layer: str, action: Action, actor: str, tenant: str, got: str) -> None:
        self.cells.append((layer, action, actor, tenant, expected(action, ACTORS[actor], tenant), got))

    def mismatches(self, layer: str, action: Action) -> list[str]:
        return [
            f"{layer} {a} {actor}@{tenant}: expected {want}, got {got}"
            for lay, a, actor, tenant, want, got in self.cells
            if lay == layer and a == action and want != got
        ]


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    found = Tally()
    yield found
    counts: Counter[str] = Counter()
    for layer, *_rest, want, got in found.cells:
        counts[f"{layer} cells"] += 1
        if want != got:
            kind = {"allowed": "unexpected successes", "refused": "unexpected refusals"}.get(
                got, "broken cells"
            )
            counts[kind] += 1
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    summary = (
        f"RBAC matrix: {len(found.cells)} cells asserted ("
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        + f"); unexpected successes {counts['unexpected successes']}, "
        f"unexpected refusals {counts['unexpected refusals']}, broken cells {counts['broken cells']}; "
        f"{len(found.gaps)} actions without a service-layer call: {sorted(str(g[1]) for g in found.gaps)}"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + summary)
    assert not (counts["unexpected successes"] or counts["unexpected refusals"] or counts["broken cells"]), (
        summary
    )


# ----------------------------------------------------------------------------------------------- the table
Prepare = Callable[[World, str], Any]
Act = Callable[[World, Principal | None, str, Any], object]


def nothing(_w: World, _tenant: str) -> None:
    return None


class RecordingOrchestrator:
    """The engine is not under test here, only who may ask it: a start that passes the check is recorded."""

    started: ClassVar[list[str]] = []

    async def start_retraining(self, request: RetrainingInput) -> str:
        self.started.append(request.tenant_id)
        return f"retrain/{request.tenant_id}"


@dataclass(frozen=True)
class ServiceCall:
    call: str  # what is called, for the reader and the failure messages
    act: Act
    prepare: Prepare = nothing  # the state the action needs, set up by the system, before the actor tries


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str  # OpenAPI path template
    body: Callable[[World, str], dict[str, Any] | None] = lambda _w, _t: None

    def url(self, tenant: str) -> str:
        return self.path.replace("{tenant_id}", tenant).replace("{model_name}", "yield")


@dataclass(frozen=True)
class DashboardControl:
    label: str | None  # a button's label; None: the page itself
    model: str | None = None  # the model the admin tools act on
    # The tenant each role acts on as its own (approvals need a candidate waiting in the actor's tenant).
    own: dict[Role, str] = field(
        default_factory=lambda: {r: OWN for r in (Role.VIEWER, Role.MANAGER, Role.ADMIN)}
    )


@dataclass(frozen=True)
class Row:
    service: ServiceCall | None
    http: tuple[HttpCall, ...] = ()
    dashboard: tuple[DashboardControl, ...] = ()
    gap: str | None = None  # why there is no service-layer call (an xfail naming the gap)


def _predict_body(w: World, _tenant: str) -> dict[str, Any]:
    return {"instances": [w.instance().model_dump()]}


def _events_body(w: World, tenant: str) -> dict[str, Any]:
    return {"events": [w.event(tenant)]}


def _drift_report(w: World, p: Principal | None, tenant: str, _: Any) -> object:
    snapshot = w.services.snapshots.latest(Principal.system(tenant), tenant)
    assert snapshot is not None
    return w.services.drift_reports.write(
        p,  # type: ignore[arg-type]
        tenant_id=tenant,
        model_name="yield",
        baseline_version_id="mv-matrix",
        baseline_model_hash=None,
        snapshot_id=snapshot.id,
        window_start=snapshot.window_start,
        window_end=snapshot.window_end,
        result=DriftResult(features=[], mae=None, level="ok", config=DriftConfig()),
    )


def _new_source_key(_w: World, _tenant: str) -> tuple[str, bytes]:
    _private, public = generate_source_keypair()
    return key_id_for_public_pem(public), public


def _accept_held_window(w: World, p: Principal | None, tenant: str, _: Any) -> object:
    """Accept the tenant's latest window, first held (as a scan whose data-quality checks fired would hold it)."""
    snapshot = w.services.snapshots.latest(Principal.system(tenant), tenant)
    assert snapshot is not None
    w.services.snapshot_holds.hold(
        Principal.system(tenant), tenant, snapshot.id, "dr-matrix", ["crop: renamed"]
    )
    return w.services.snapshot_holds.accept(p, tenant, snapshot.id, "matrix")  # type: ignore[arg-type]


def _checkpoint_beyond_the_chain(w: World, tenant: str) -> None:
    """What a restore to an earlier point leaves: the store holds a signed checkpoint of a longer chain."""
    pending = w.services.audit_checkpoints.pending_restore(tenant)
    if pending.needed:
        return  # left by a refused cell: still there to acknowledge
    epoch, size = pending.epoch - 1, pending.size + 1000
    lost = hashlib.sha256(w.rid("lost-history").encode()).hexdigest()
    checkpoint = AuditCheckpoint(tenant=tenant, size=size, root=lost, created_at=utcnow(), epoch=epoch)
    signed = SignedCheckpoint(
        checkpoint=checkpoint, signature=w.services.signer.sign(checkpoint.signed_payload())
    )
    w.services.store.put_object(tenant, checkpoint_key(size, epoch), signed.to_bytes())


DEFINITION = ModelDefinition()  # the built-in trainer: nothing the other cells train changes

APPROVALS_OWN = {
    Action.APPROVE: {Role.VIEWER: "appr-m", Role.MANAGER: "appr-m", Role.ADMIN: "appr-a"},
    Action.REJECT: {Role.VIEWER: "rej-m", Role.MANAGER: "rej-m", Role.ADMIN: "rej-a"},
}

TABLE: dict[Action, Row] = {
    Action.VIEW: Row(
        ServiceCall("registry.list_versions", lambda w, p, t, _: w.services.registry.list_versions(p, t)),  # type: ignore[arg-type]
        http=(
            HttpCall("GET", "/v1/tenants/{tenant_id}/models/{model_name}"),
            HttpCall("GET", "/v1/tenants/{tenant_id}/models/{model_name}/definition"),
        ),
        dashboard=(DashboardControl(None),),
    ),
    Action.PREDICT: Row(
        ServiceCall(
            "predictor.predict",
            lambda w, p, t, _: w.predictor.predict(p, t, "yield", [w.instance()]),  # type: ignore[arg-type]
        ),
        http=(HttpCall("POST", "/v1/tenants/{tenant_id}/models/{model_name}/predict", _predict_body),),
    ),
    Action.INGEST_EVENTS: Row(
        ServiceCall(
            "events.ingest_objects",
            lambda w, p, t, event: w.services.events.ingest_objects(p, t, [event], "rbac-matrix"),  # type: ignore[arg-type]
            prepare=lambda w, t: w.event(t),
        ),
        http=(HttpCall("POST", "/v1/tenants/{tenant_id}/events", _events_body),),
    ),
    Action.CREATE_SNAPSHOT: Row(
        ServiceCall(
            "snapshots.seal",
            lambda w, p, t, _: w.services.snapshots.seal(p, t, utcnow()),  # type: ignore[arg-type]
            prepare=lambda w, t: w.services.events.ingest_objects(
                Principal.system(t), t, [w.event(t)], "setup"
            ),
        )
    ),
    Action.WRITE_DRIFT_REPORT: Row(ServiceCall("drift_reports.write", _drift_report)),
    Action.START_RETRAINING: Row(
        ServiceCall(
            "orchestrator.start_retraining_as",
            lambda w, p, t, _: asyncio.run(
                start_retraining_as(
                    p, RecordingOrchestrator(), RetrainingInput(tenant_id=t, model_name="yield")
                )
            ),
        )
    ),
    Action.REGISTER_VERSION: Row(
        ServiceCall(
            "registry.register_version",
            lambda w, p, t, _: w.services.registry.register_version(p, t, "register-m", w.rid("reg")),  # type: ignore[arg-type]
        )
    ),
    Action.TRANSITION: Row(
        ServiceCall(
            "registry.transition",
            lambda w, p, t, v: w.services.registry.transition(
                p,  # type: ignore[arg-type]
                TransitionRequest(
                    version_id=v.id,
                    to_state=ModelState.TRAINING,
                    expected_version=v.lock_version,
                    request_id=w.rid("tr"),
                ),
            ),
            prepare=lambda w, t: w.services.registry.register_version(
                Principal.system(t), t, "transition-m", w.rid("reg")
            ),
        )
    ),
    Action.APPROVE: Row(
        ServiceCall(
            "registry.promote",
            lambda w, p, t, v: w.services.registry.promote(p, v.id, v.lock_version, w.rid("approve")),  # type: ignore[arg-type]
            prepare=lambda w, t: w.canary(t, "approve-m"),
        ),
        dashboard=(DashboardControl("Approve", own=APPROVALS_OWN[Action.APPROVE]),),
    ),
    Action.REJECT: Row(
        ServiceCall(
            "registry.reject",
            lambda w, p, t, v: w.services.registry.reject(p, v.id, v.lock_version, w.rid("reject"), "matrix"),  # type: ignore[arg-type]
            prepare=lambda w, t: w.canary(t, "reject-m"),
        ),
        dashboard=(DashboardControl("Reject", own=APPROVALS_OWN[Action.REJECT]),),
    ),
    Action.FORCE_ROLLBACK: Row(
        ServiceCall(
            "registry.force_rollback",
            lambda w, p, t, _: w.services.registry.force_rollback(p, t, "rollback-m", w.rid("rb"), "matrix"),  # type: ignore[arg-type]
            prepare=lambda w, t: w.rollback_ready(t, "rollback-m"),
        ),
        dashboard=(DashboardControl("Force rollback to the previous champion", model="rollback-m"),),
    ),
    Action.RESET_BASELINE: Row(
        ServiceCall(
            "baselines.reset",
            lambda w, p, t, _: w.services.baselines.reset(p, t, "yield", "matrix", w.services.keyring),  # type: ignore[arg-type]
        ),
        dashboard=(DashboardControl("Reset the drift baseline to the latest window", model="yield"),),
    ),
    Action.SET_QUOTA: Row(
        ServiceCall(
            "registry.set_quota",
            lambda w, p, t, _: w.services.tenants.set_quota(p, t, gpu_hours_quota=100.0, reason="matrix"),  # type: ignore[arg-type]
        )
    ),
    Action.MANAGE_TENANT: Row(
        ServiceCall(
            "registry.configure_tenant",
            lambda w, p, t, _: w.services.tenants.configure_tenant(p, t, {}),  # type: ignore[arg-type]
        )
    ),
    Action.REGISTER_SOURCE_KEY: Row(
        ServiceCall(
            "events.register_source_key",
            lambda w, p, t, key: w.services.events.register_source_key(p, t, key[0], key[1]),  # type: ignore[arg-type]
            prepare=_new_source_key,
        )
    ),
    Action.RECORD_USAGE: Row(
        ServiceCall(
            "quota.charge",
            lambda w, p, t, _: w.services.quota.charge(
                p,  # type: ignore[arg-type]
                t,
                run_id=w.rid("run"),
                version_id="mv-matrix",
                started_at=utcnow(),
                duration_s=1.0,
                outcome="succeeded",
            ),
        )
    ),
    Action.NOTIFY: Row(
        ServiceCall(
            "notify.notify_as",
            lambda w, p, t, _: notify_as(
                p,
                w.services.notifier,
                NotificationIn(tenant_id=t, severity="info", kind="matrix", subject="cell"),
            ),
        )
    ),
    Action.MANAGE_USERS: Row(
        ServiceCall(
            "users.add_user",
            lambda w, p, t, _: w.users.add_user(p, w.rid("user"), PASSWORD, Role.VIEWER, [t]),  # type: ignore[arg-type]
        )
    ),
    Action.DEFINE_MODEL: Row(
        ServiceCall(
            "model_definitions.define",
            lambda w, p, t, _: w.services.model_definitions.define(p, t, "defined-m", DEFINITION, "matrix"),  # type: ignore[arg-type]
        ),
        http=(
            HttpCall(
                "PUT",
                "/v1/tenants/{tenant_id}/models/{model_name}/definition",
                lambda _w, _t: {"reason": "matrix"},
            ),
        ),
    ),
    Action.ACKNOWLEDGE_RESTORE: Row(
        ServiceCall(
            "audit_checkpoints.acknowledge_restore",
            lambda w, p, t, _: w.services.audit_checkpoints.acknowledge_restore(p, t, "matrix: restored"),  # type: ignore[arg-type]
            prepare=_checkpoint_beyond_the_chain,
        )
    ),
    # `evolution snapshot accept` is its only door: the dashboard offers no control and the API no operation.
    Action.ACCEPT_SNAPSHOT: Row(ServiceCall("snapshot_holds.accept", _accept_held_window)),
    # The orchestrator's alone (its post-promotion watch): every person is refused, an admin included, and no API
    # operation or dashboard control performs it (a person rolls back with FORCE_ROLLBACK).
    Action.WATCH_ROLLBACK: Row(
        ServiceCall(
            "registry.watch_rollback",
            lambda w, p, t, _: w.services.registry.watch_rollback(
                p,  # type: ignore[arg-type]
                t,
                "rollback-m",
                ("mv-watched", "mv-previous"),
                w.rid("wr"),
                "matrix",
            ),
            prepare=lambda w, t: w.rollback_ready(t, "rollback-m"),
        )
    ),
}


def test_the_table_has_a_row_for_every_action_and_every_row_is_complete() -> None:
    assert set(TABLE) == set(Action), f"actions without a row: {sorted(set(Action) - set(TABLE))}"
    for action, row in TABLE.items():
        assert (row.service is None) == (row.gap is not None), f"{action}: a service call, or a named gap"


def test_every_http_operation_of_the_api_is_in_the_table(world: World) -> None:
    schema = create_app(
        world.predictor,
        world.services.events,
        world.services.token_authenticator(),
        definitions=world.services.model_definitions,
    )
    operations = {
        (method.upper(), path)
        for path, item in schema.openapi()["paths"].items()
        for method in item
        if path.startswith("/v1/")
    }
    named = {(call.method, call.path) for row in TABLE.values() for call in row.http}
    assert operations == named, (
        f"operations without a row: {operations - named}; rows naming none: {named - operations}"
    )


# ----------------------------------------------------------------------------------------------- service layer
def principal_of(actor: str) -> Principal | None:
    role = ACTORS[actor]
    return None if role is None else Principal.for_tenant(f"{actor}-of-own", role, OWN)


@pytest.mark.parametrize("action", list(Action))
def test_the_service_layer_enforces_the_table(world: World, tally: Tally, action: Action) -> None:
    row = TABLE[action]  # a new action without a row fails here
    if row.service is None:
        tally.gaps.append(("service", action, str(row.gap)))
        pytest.xfail(f"no service-layer call enforces {action}: {row.gap}")
    for actor, tenant in itertools.product(ACTORS, TENANTS):
        state = row.service.prepare(world, tenant)
        try:
            row.service.act(world, principal_of(actor), tenant, state)
        except PermissionDenied:
            got = "refused"
        except Exception as error:  # neither done nor refused: a broken cell, reported with the others
            got = f"error {type(error).__name__}: {error}"[:300]
        else:
            got = "allowed"
        tally.record("service", action, actor, tenant, got)
    assert not tally.mismatches("service", action), tally.mismatches("service", action)


# ----------------------------------------------------------------------------------------------- HTTP API
@pytest.fixture(scope="module")
def api(world: World) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    """The serving API over real HTTP, and the Authorization header of each actor (a user of tenant own)."""
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    for actor, role in ACTORS.items():
        if role is not None:
            world.users.add_user(ROOT, f"http-{actor}", PASSWORD, role, [OWN])
            issued = world.services.tokens.create_token(ROOT, f"http-{actor}", "rbac matrix")
            headers[actor] = {"Authorization": f"Bearer {issued.token.get_secret_value()}"}
    app = create_app(
        world.predictor,
        world.services.events,
        world.services.token_authenticator(),
        definitions=world.services.model_definitions,
    )
    with serving(app) as url:
        yield url, headers


@pytest.mark.parametrize("action", [a for a, row in TABLE.items() if row.http])
def test_the_http_api_enforces_the_table(
    world: World, tally: Tally, api: tuple[str, dict[str, dict[str, str]]], action: Action
) -> None:
    url, headers = api
    for call in TABLE[action].http:
        for actor, tenant in itertools.product(ACTORS, TENANTS):
            response = httpx.request(
                call.method,
                url + call.url(tenant),
                json=call.body(world, tenant),
                headers=headers[actor],
                timeout=60,
            )
            want_status = 401 if actor == "anonymous" else 403
            if response.status_code in (200, 201):  # 201: a definition's first revision
                got: Outcome = "allowed"
            else:
                assert response.status_code == want_status, (call.path, actor, tenant, response.text)
                got = "refused"
            tally.record("http", action, actor, tenant, got)
    assert not tally.mismatches("http", action), tally.mismatches("http", action)


# ----------------------------------------------------------------------------------------------- dashboard
TIMING = RolloutTiming(look_interval_s=0.5, approval_timeout_s=600)


@pytest.fixture
async def approvals_waiting(
    world: World,
    temporal_env: WorkflowEnvironment,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[None]:
    """A worker, and in each approval tenant a bootstrap candidate waiting for a manager's decision."""
    queue = f"rbac-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("EVOLUTION_HOME", str(world.services.settings.home))
    monkeypatch.setenv("EVOLUTION_DASHBOARD_METRICS_PORT", "0")
    monkeypatch.setenv("EVOLUTION_TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setenv("EVOLUTION_TASK_QUEUE", queue)
    orchestrator = TemporalOrchestrator(temporal_env.client, queue)
    tenants = sorted({t for own in APPROVALS_OWN.values() for t in own.values()})
    for tenant in tenants:
        seed_tenant(world.services, Scenario(tenant_id=tenant, history_rows=300))
        world.services.snapshots.seal(ROOT, tenant, utcnow())
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(temporal_env.client, world.services, queue, executor, max_cached_workflows=0):
            for tenant in tenants:
                await orchestrator.start_retraining(
                    RetrainingInput(tenant_id=tenant, model_name="yield", trigger="bootstrap", timing=TIMING)
                )
            await asyncio.gather(*(wait_for_approval(orchestrator, t) for t in tenants))
            yield


class Dashboard:
    """Signs actors in (real users with a role on one tenant) and looks at the governance page as they would."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._made: set[str] = set()

    async def open(self, role: Role | None, own: str, tenant: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120)
        if role is not None:
            username = f"dash-{role}-{own}"
            if username not in self._made:
                self._world.users.add_user(ROOT, username, PASSWORD, role, [own])
                self._made.add(username)
            at.session_state["signed_in"] = UserAccess(username=username, roles={own: role})
            at.session_state["tenant"] = tenant  # "other": what a tampered session would ask for
        await asyncio.to_thread(at.run)
        assert not at.exception, at.exception
        return at


def acts_on(at: AppTest) -> str | None:
    """The tenant the page acts for, from its title ("Governance · <tenant>"); None on the sign-in page."""
    titles = [t.value for t in at.title if t.value.startswith("Governance · ")]
    return titles[0].removeprefix("Governance · ") if titles else None


def button(at: AppTest, label: str) -> Any:
    return next((b for b in at.button if b.label == label), None)


async def dashboard_cell(
    world: World, dash: Dashboard, action: Action, control: DashboardControl, actor: str, tenant: str
) -> Outcome:
    role = ACTORS[actor]
    own = control.own[role] if role is not None else OWN
    target = own if tenant == OWN else OTHER
    restores = None
    if action == Action.FORCE_ROLLBACK and role is not None:
        restores = world.rollback_ready(own, "rollback-m")  # so that the model is there to pick
    at = await dash.open(role, own, target)
    if role is None:
        # Signed out: only the sign-in form, and no page to switch to.
        assert [t.label for t in at.text_input] == ["Username", "Password"]
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page("views/governance.py")
        return "refused"
    if acts_on(at) != target:
        assert acts_on(at) == own  # the tenant selector offers only the user's tenants
        return "refused"
    if control.label is None:
        return "allowed"  # the page renders for this tenant
    found = button(at, control.label)
    if found is None:
        return "refused"
    return await click(world, at, action, control, target, restores)


async def click(
    world: World,
    at: AppTest,
    action: Action,
    control: DashboardControl,
    tenant: str,
    restores: VersionView | None,
) -> Outcome:
    """Press the control with a reason, and check that its effect happened (or that it was refused)."""
    registry, system = world.services.registry, Principal.system(tenant)
    before = registry.current(system, tenant, "rollback-m", ModelState.CHAMPION)
    if action in (Action.APPROVE, Action.REJECT):
        at.text_input(key="approval_reason").input("rbac matrix")
    else:
        at.selectbox(key="admin_model").set_value(control.model)
        at.text_input(key="admin_reason").input("rbac matrix")
    assert control.label is not None
    button(at, control.label).click()
    await asyncio.to_thread(at.run)
    assert not at.exception, at.exception
    if at.error:
        assert "may not" in at.error[-1].value or "does not belong" in at.error[-1].value, at.error[-1].value
        return "refused"
    if action == Action.APPROVE:
        assert "→ CHAMPION" in at.success[-1].value
        assert registry.current(system, tenant, "yield", ModelState.CHAMPION) is not None
    elif action == Action.REJECT:
        assert "→ FAILED" in at.success[-1].value
        assert registry.list_versions(system, tenant, "yield")[-1].state == ModelState.FAILED
    elif action == Action.FORCE_ROLLBACK:
        now = registry.current(system, tenant, "rollback-m", ModelState.CHAMPION)
        assert before is not None and now is not None and restores is not None
        assert now.id == restores.id != before.id
    else:
        override = world.services.tenants.tenant_settings(system, tenant).baseline_overrides["yield"]
        assert override["reset_by"].startswith("dash-admin") and override["reason"] == "rbac matrix"
    return "allowed"


async def test_the_dashboard_offers_and_performs_only_what_the_table_allows(
    world: World, tally: Tally, approvals_waiting: None
) -> None:
    dash = Dashboard(world)
    rows = [(action, control) for action, row in TABLE.items() for control in row.dashboard]
    assert {a for a, _ in rows} >= {Action.VIEW, Action.APPROVE, Action.REJECT, Action.FORCE_ROLLBACK}
    # Refusals first (a viewer looks before a manager decides), then the actors who may act.
    order = sorted(
        itertools.product(rows, ACTORS, TENANTS),
        key=lambda cell: expected(cell[0][0], ACTORS[cell[1]], cell[2]) == "allowed",
    )
    for (action, control), actor, tenant in order:
        got = await dashboard_cell(world, dash, action, control, actor, tenant)
        tally.record("dashboard", action, actor, tenant, got)
    problems = [m for action, _ in rows for m in tally.mismatches("dashboard", action)]
    assert not problems, problems

"""Stateful fuzz of the lifecycle through the real ModelRegistryService on SQLite (hypothesis state machine).

Random actors (users of every role on their own or the other tenant, a global admin, anonymous callers, the system)
send random requests: register a version, move one to a random target state with its current or a stale lock
version, approve, reject, quarantine, force a rollback; with fresh request ids, or ids already used, with the same
content or other content. A plain-Python model of the rules (the lifecycle table, the permission table, the
optimistic lock, request-id idempotency, at most one CHAMPION and one CANARY per tenant and model) predicts each
outcome, and the service must agree exactly: applied, replayed, or refused with the predicted error.

After every step: the database holds exactly the model's versions, states and lock versions; lock versions only ever
grew, by one per applied transition; no tenant+model has two CHAMPIONs or two CANARYs; every tenant's audit rows are
exactly its registrations plus its applied transitions (and each applied request left rows naming its own
transitions); and periodically (and at the end of each run) each tenant's hash chain verifies.

Length: ``EVOLUTION_FUZZ_STEPS`` steps in all (default 1,000, ~20 s; ``make fuzz`` runs 10,000). Steps are
counted across hypothesis' examples and the total is asserted to reach the target. Figures of the run are printed
(``-s`` shows them): steps, applied transitions, refusals by kind, seconds.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import BaseModel
from sqlalchemy import func, select

from evolution.errors import (
    Conflict,
    EvolutionError,
    IdempotencyConflict,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StaleVersion,
)
from evolution.lifecycle import TRANSITIONS, ModelState, TransitionRequest, is_legal
from evolution.registry.db import make_engine, make_session_factory, upgrade_to_head
from evolution.registry.idempotency import payload_hash
from evolution.registry.schema import AuditEntry, ModelVersion
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import PERMISSIONS, Action, Principal, Role

S = ModelState
TENANTS = ("acme", "globex")
MODELS = ("yield", "yield", "yield", "moisture")  # mostly one model, so its versions meet
TARGET_STEPS = int(os.environ.get("EVOLUTION_FUZZ_STEPS", "1000"))
STEPS_PER_EXAMPLE = 100
CHAIN_CHECK_EVERY = 25

# Actors: (label, principal). Users hold one role on one tenant; "root" is an admin of every tenant.
ACTORS: list[tuple[str, Principal | None]] = [("anonymous", None)]
for _tenant in TENANTS:
    ACTORS.append((f"system@{_tenant}", Principal.system(_tenant)))
    for _role in (Role.VIEWER, Role.MANAGER, Role.ADMIN):
        ACTORS.append((f"{_role}@{_tenant}", Principal.for_tenant(f"{_role}-{_tenant}", _role, _tenant)))
ACTORS.append(("admin@*", Principal(user="root", role=Role.ADMIN, tenants=("*",))))
actors = st.sampled_from(ACTORS)
states = st.sampled_from(list(S))


def permitted(principal: Principal | None, action: Action, tenant: str) -> bool:
    return principal is not None and principal.role in PERMISSIONS[action] and principal.covers(tenant)


@dataclass
class V:
    """The model's view of one version."""

    id: str
    tenant: str
    model: str
    number: int
    state: S
    lock: int
    was_champion: bool = False


@dataclass
class Outcome:
    """What the model predicts: an error class, a replay of a stored answer, or transitions to apply."""

    error: type[EvolutionError] | None = None
    replay: Any = None
    moves: tuple[tuple[V, S], ...] = ()


@dataclass
class Stored:
    digest: str
    answer: BaseModel


class Stats:
    """Figures across every example of one test run."""

    def __init__(self) -> None:
        self.steps = 0
        self.examples = 0
        self.outcomes: Counter[str] = Counter()
        self.applied_transitions = 0
        self.registrations = 0
        self.chain_checks = 0
        self.by_request: Counter[tuple[str, str]] = Counter()


class LifecycleMachine(RuleBasedStateMachine):
    template: ClassVar[Path]
    workdir: ClassVar[Path]
    stats: ClassVar[Stats]
    initial_audit: ClassVar[dict[str, int]]

    def __init__(self) -> None:
        super().__init__()
        self.stats.examples += 1
        db = self.workdir / f"registry-{uuid.uuid4().hex}.db"
        shutil.copyfile(self.template, db)
        self.db = db
        self.engine = make_engine(f"sqlite:///{db}")
        self.factory = make_session_factory(self.engine)
        self.service = ModelRegistryService(self.factory)
        self.versions: dict[str, V] = {}
        self.keys: dict[tuple[str, str], Stored] = {}
        self.used_ids: list[str] = []
        self.history: list[tuple[str, tuple[Any, ...]]] = []  # calls, for exact repeats
        self.audit = dict(self.initial_audit)
        self.seen_locks: dict[str, int] = {}
        self.steps_here = 0

    def teardown(self) -> None:
        try:
            if self.steps_here:
                self._check_chains()
                self._every_audited_transition_is_legal()
        finally:
            self.engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.db}{suffix}").unlink(missing_ok=True)

    # ------------------------------------------------------------------ the model's rules
    def _request_id(self, data: st.DataObject) -> str:
        if self.used_ids and data.draw(st.integers(0, 4)) == 0:  # a fifth of requests reuse an id
            return data.draw(st.sampled_from(self.used_ids))
        rid = uuid.uuid4().hex
        self.used_ids.append(rid)
        return rid

    def _idempotency(self, tenant: str, rid: str, operation: str, payload: dict[str, Any]) -> Outcome | None:
        stored = self.keys.get((tenant, rid))
        if stored is None:
            return None
        if stored.digest != payload_hash(operation, payload):
            return Outcome(error=IdempotencyConflict)
        return Outcome(replay=stored.answer)

    def _current(self, tenant: str, model: str, state: S) -> V | None:
        found = [v for v in self.versions.values() if (v.tenant, v.model, v.state) == (tenant, model, state)]
        assert len(found) <= 1
        return found[0] if found else None

    def _some(self, *in_states: S) -> bool:
        """Whether a version is in one of ``in_states``: the requests that need one are mostly made then (a
        fuzz that rejected and quarantined everything early would never reach a canary or a champion)."""
        return any(v.state in in_states for v in self.versions.values())

    def _version(self, data: st.DataObject, target: S | None = None) -> V:
        """Mostly a version the request can apply to (FAILED ones pile up), else any; registration order keeps
        runs reproducible."""
        fitting = [
            vid
            for vid, v in self.versions.items()
            if (target in TRANSITIONS[v.state] if target is not None else TRANSITIONS[v.state])
        ]
        rising = [
            vid for vid in fitting if self.versions[vid].state in (S.DRAFT, S.TRAINING, S.VALIDATED, S.SHADOW)
        ]
        roll = data.draw(st.integers(0, 3))
        if target is None and rising and roll > 1:  # candidates on their way up: so that two of them meet
            return self.versions[data.draw(st.sampled_from(rising))]
        if fitting and roll > 0:
            return self.versions[data.draw(st.sampled_from(fitting))]
        return self.versions[data.draw(st.sampled_from(list(self.versions)))]

    @staticmethod
    def _actor(data: st.DataObject, tenant: str, action: Action) -> tuple[str, Principal | None]:
        """Mostly someone entitled to ``action`` on ``tenant``; a quarter of the time anyone at all."""
        entitled = [a for a in ACTORS if permitted(a[1], action, tenant)]
        if entitled and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(entitled))
        return data.draw(actors)

    def _expected_lock(self, data: st.DataObject, v: V) -> int:
        choice = data.draw(st.sampled_from(["current"] * 8 + ["stale", "future"]))
        if choice == "stale":
            return data.draw(st.integers(0, max(v.lock - 1, 0)))
        return v.lock + 1 if choice == "future" else v.lock

    def _target(self, data: st.DataObject, v: V) -> S:
        legal = sorted(TRANSITIONS[v.state])
        forward = [t for t in legal if t not in (S.FAILED, S.QUARANTINED)]
        roll = data.draw(st.integers(0, 9))
        if forward and roll < 6:  # mostly onwards, so runs reach SHADOW, CANARY and CHAMPION
            return data.draw(st.sampled_from(forward))
        if legal and roll < 8:
            return data.draw(st.sampled_from(legal))
        return data.draw(states)

    def _run(
        self,
        label: str,
        expected: Outcome,
        call: Any,
        key: tuple[str, str] | None,
        digest: str | None,
    ) -> None:
        """Make the call; check it did what the model predicted; apply the prediction to the model."""
        self.stats.steps += 1
        self.steps_here += 1
        try:
            answer = call()
        except EvolutionError as error:
            assert expected.error is not None, (
                f"{label}: refused with {error!r}, the model expected it to apply"
            )
            assert type(error) is expected.error, (
                f"{label}: {type(error).__name__} ({error}), expected {expected}"
            )
            self.stats.outcomes[f"refused: {type(error).__name__}"] += 1
            self.stats.by_request[(label.split(": ")[1].split()[0], type(error).__name__)] += 1
            return
        assert expected.error is None, f"{label}: applied, the model expected {expected.error.__name__}"
        if expected.replay is not None:
            assert answer == expected.replay, f"{label}: a replay must return the first answer"
            self.stats.outcomes["replayed (same request id, same content)"] += 1
            return
        if key is not None and digest is not None:
            self.keys[key] = Stored(digest, answer)
        self._apply(label, expected.moves, answer)

    def _apply(self, label: str, moves: tuple[tuple[V, S], ...], answer: Any) -> None:
        tenant = moves[0][0].tenant
        with self.factory() as session:
            rows = list(
                session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.tenant_id == tenant)
                    .order_by(AuditEntry.seq.desc())
                    .limit(len(moves))
                )
            )[::-1]
        expected_rows = [(v.id, v.state.value, target.value) for v, target in moves]
        assert [(r.subject_id, r.from_state, r.to_state) for r in rows] == expected_rows, label
        for v, target in moves:
            v.state, v.lock = target, v.lock + 1
            v.was_champion = v.was_champion or target == S.CHAMPION
        self.audit[tenant] += len(moves)
        self.stats.applied_transitions += len(moves)
        self.stats.outcomes["applied"] += 1
        assert answer.version.id == moves[-1][0].id and answer.version.state == moves[-1][1], label

    # ------------------------------------------------------------------ rules
    @initialize()
    def start(self) -> None:
        assert not self.versions

    @precondition(lambda self: len(self.versions) < 6 or self.steps_here % 6 == 0)  # enough to work with
    @rule(data=st.data(), tenant=st.sampled_from(TENANTS), model=st.sampled_from(MODELS))
    def register(self, data: st.DataObject, tenant: str, model: str) -> None:
        label, principal = self._actor(data, tenant, Action.REGISTER_VERSION)
        rid = self._request_id(data)
        payload = {"model_name": model, "parent_id": None, "reason": ""}
        expected = Outcome()
        if not permitted(principal, Action.REGISTER_VERSION, tenant):
            expected = Outcome(error=PermissionDenied)
        elif (idem := self._idempotency(tenant, rid, "register_version", payload)) is not None:
            expected = idem
        self.stats.steps += 1
        self.steps_here += 1
        try:
            view = self.service.register_version(principal, tenant, model, rid)  # type: ignore[arg-type]
        except EvolutionError as error:
            assert type(error) is expected.error, f"register by {label}: {error!r}, expected {expected}"
            self.stats.outcomes[f"refused: {type(error).__name__}"] += 1
            return
        assert expected.error is None, f"register by {label} applied, expected {expected.error}"
        if expected.replay is not None:
            assert view == expected.replay
            self.stats.outcomes["replayed (same request id, same content)"] += 1
            return
        numbers = [v.number for v in self.versions.values() if (v.tenant, v.model) == (tenant, model)]
        assert view.number == max(numbers, default=0) + 1, "version numbers strictly increase"
        assert view.state == S.DRAFT and view.lock_version == 1
        self.versions[view.id] = V(view.id, tenant, model, view.number, S.DRAFT, 1)
        self.keys[(tenant, rid)] = Stored(payload_hash("register_version", payload), view)
        self.audit[tenant] += 1
        self.stats.registrations += 1
        self.stats.outcomes["applied"] += 1

    @precondition(lambda self: self.versions)
    @rule(data=st.data())
    def transition(self, data: st.DataObject) -> None:
        v = self._version(data)
        label, principal = self._actor(data, v.tenant, Action.TRANSITION)
        target = self._target(data, v)
        lock = self._expected_lock(data, v)
        rid = self._request_id(data)
        reason = data.draw(st.sampled_from(["", "fuzz", "other reason"]))
        request = TransitionRequest(
            version_id=v.id, to_state=target, expected_version=lock, request_id=rid, reason=reason
        )
        payload = request.model_dump(mode="json", exclude={"request_id"})
        expected = Outcome(moves=((v, target),))
        if not permitted(principal, Action.TRANSITION, v.tenant):
            expected = Outcome(error=PermissionDenied)
        elif target == S.CHAMPION:
            expected = Outcome(error=IllegalTransition)
        elif (idem := self._idempotency(v.tenant, rid, "transition", payload)) is not None:
            expected = idem
        elif lock != v.lock:
            expected = Outcome(error=StaleVersion)
        elif not is_legal(v.state, target):
            expected = Outcome(error=IllegalTransition)
        elif target == S.CANARY and self._current(v.tenant, v.model, S.CANARY) is not None:
            expected = Outcome(error=Conflict)  # the database's one-CANARY index
        self._run(
            f"{label}: {v.state} -> {target} (lock {lock}/{v.lock})",
            expected,
            lambda: self.service.transition(principal, request),  # type: ignore[arg-type]
            (v.tenant, rid),
            payload_hash("transition", payload),
        )
        self.history.append(("transition", (principal, request)))

    @precondition(
        lambda self: self.versions and (self._some(S.CANARY, S.DEPRECATED) or self.steps_here % 7 == 0)
    )
    @rule(data=st.data())
    def approve(self, data: st.DataObject) -> None:
        v = self._version(data, S.CHAMPION)
        label, principal = self._actor(data, v.tenant, Action.APPROVE)
        lock = self._expected_lock(data, v)
        rid = self._request_id(data)
        reason = data.draw(st.sampled_from(["", "better MAE"]))
        payload = TransitionRequest(
            version_id=v.id,
            to_state=S.CHAMPION,
            expected_version=lock,
            request_id=rid,
            reason=reason or "approved",
        ).model_dump(mode="json", exclude={"request_id"})
        old = self._current(v.tenant, v.model, S.CHAMPION)
        moves = (
            ((old, S.DEPRECATED), (v, S.CHAMPION)) if old is not None and old is not v else ((v, S.CHAMPION),)
        )
        expected = Outcome(moves=moves)
        if not permitted(principal, Action.APPROVE, v.tenant):
            expected = Outcome(error=PermissionDenied)
        elif (idem := self._idempotency(v.tenant, rid, "promote", payload)) is not None:
            expected = idem
        elif not is_legal(v.state, S.CHAMPION):
            expected = Outcome(error=IllegalTransition)
        elif lock != v.lock:
            expected = Outcome(error=StaleVersion)
        self._run(
            f"{label}: approve {v.state} (lock {lock}/{v.lock})",
            expected,
            lambda: self.service.promote(principal, v.id, lock, rid, reason),  # type: ignore[arg-type]
            (v.tenant, rid),
            payload_hash("promote", payload),
        )

    @precondition(lambda self: self.versions and (self._some(S.CANARY, S.SHADOW) or self.steps_here % 7 == 0))
    @rule(data=st.data())
    def reject(self, data: st.DataObject) -> None:
        v = self._version(data, S.FAILED)
        label, principal = self._actor(data, v.tenant, Action.REJECT)
        lock = self._expected_lock(data, v)
        rid = self._request_id(data)
        reason = data.draw(st.sampled_from(["", "worse on the canary"]))
        payload = TransitionRequest(
            version_id=v.id,
            to_state=S.FAILED,
            expected_version=lock,
            request_id=rid,
            reason=reason or "rejected",
            details={"decision": "rejected"},
        ).model_dump(mode="json", exclude={"request_id"})
        expected = Outcome(moves=((v, S.FAILED),))
        if not permitted(principal, Action.REJECT, v.tenant):
            expected = Outcome(error=PermissionDenied)
        elif (idem := self._idempotency(v.tenant, rid, "reject", payload)) is not None:
            expected = idem
        elif lock != v.lock:
            expected = Outcome(error=StaleVersion)
        elif not is_legal(v.state, S.FAILED):
            expected = Outcome(error=IllegalTransition)
        self._run(
            f"{label}: reject {v.state} (lock {lock}/{v.lock})",
            expected,
            lambda: self.service.reject(principal, v.id, lock, rid, reason),  # type: ignore[arg-type]
            (v.tenant, rid),
            payload_hash("reject", payload),
        )

    @precondition(
        lambda self: self.versions and (self._some(S.CANARY, S.CHAMPION) or self.steps_here % 7 == 0)
    )
    @rule(data=st.data())
    def quarantine(self, data: st.DataObject) -> None:
        v = self._version(data, S.QUARANTINED)
        label, principal = self._actor(data, v.tenant, Action.TRANSITION)
        rid = self._request_id(data)
        reason = data.draw(st.sampled_from(["signature does not verify", "digest mismatch"]))
        payload = TransitionRequest(
            version_id=v.id,
            to_state=S.QUARANTINED,
            expected_version=v.lock,
            request_id=rid,
            reason=reason,
            details={"integrity_failure": reason},
        ).model_dump(mode="json", exclude={"request_id"})
        expected = Outcome(moves=((v, S.QUARANTINED),))
        if not permitted(principal, Action.TRANSITION, v.tenant):
            expected = Outcome(error=PermissionDenied)
        elif (idem := self._idempotency(v.tenant, rid, "quarantine", payload)) is not None:
            expected = idem
        elif not is_legal(v.state, S.QUARANTINED):
            expected = Outcome(error=IllegalTransition)
        self._run(
            f"{label}: quarantine {v.state}",
            expected,
            lambda: self.service.quarantine(principal, v.id, rid, reason),  # type: ignore[arg-type]
            (v.tenant, rid),
            payload_hash("quarantine", payload),
        )

    @precondition(lambda self: self._some(S.CHAMPION) or self.steps_here % 8 == 0)  # mostly with a champion
    @rule(
        data=st.data(),
        tenant=st.sampled_from(TENANTS),
        model=st.sampled_from(MODELS),
        reason=st.sampled_from(["", "  ", *["MAE doubled overnight"] * 4]),
    )
    def force_rollback(self, data: st.DataObject, tenant: str, model: str, reason: str) -> None:
        label, principal = self._actor(data, tenant, Action.FORCE_ROLLBACK)
        rid = self._request_id(data)
        payload = {"model_name": model, "reason": reason}
        champion = self._current(tenant, model, S.CHAMPION)
        previous = max(
            (
                v
                for v in self.versions.values()
                if (v.tenant, v.model, v.state) == (tenant, model, S.DEPRECATED)
                and v.was_champion
                and champion is not None
                and v.number < champion.number
            ),
            key=lambda v: v.number,
            default=None,
        )
        expected = Outcome()
        if not permitted(principal, Action.FORCE_ROLLBACK, tenant):
            expected = Outcome(error=PermissionDenied)
        elif not reason.strip():
            expected = Outcome(error=InvalidInput)
        elif (idem := self._idempotency(tenant, rid, "force_rollback", payload)) is not None:
            expected = idem
        elif champion is None or previous is None:
            expected = Outcome(error=NotFound)
        else:
            expected = Outcome(moves=((champion, S.DEPRECATED), (previous, S.CHAMPION)))
        self._run(
            f"{label}: force rollback of {tenant}/{model}",
            expected,
            lambda: self.service.force_rollback(principal, tenant, model, rid, reason),  # type: ignore[arg-type]
            (tenant, rid),
            payload_hash("force_rollback", payload),
        )

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def repeat_a_transition_exactly(self, data: st.DataObject) -> None:
        """The same call again, same request id: the first answer if it applied (else judged afresh)."""
        _, (principal, request) = data.draw(st.sampled_from(self.history))
        v = self.versions[request.version_id]
        payload = request.model_dump(mode="json", exclude={"request_id"})
        target = request.to_state
        expected = Outcome(moves=((v, target),))
        if not permitted(principal, Action.TRANSITION, v.tenant):
            expected = Outcome(error=PermissionDenied)
        elif target == S.CHAMPION:
            expected = Outcome(error=IllegalTransition)
        elif (idem := self._idempotency(v.tenant, request.request_id, "transition", payload)) is not None:
            expected = idem
        elif request.expected_version != v.lock:
            expected = Outcome(error=StaleVersion)
        elif not is_legal(v.state, target):
            expected = Outcome(error=IllegalTransition)
        elif target == S.CANARY and self._current(v.tenant, v.model, S.CANARY) is not None:
            expected = Outcome(error=Conflict)
        self._run(
            f"repeat: {v.state} -> {target}",
            expected,
            lambda: self.service.transition(principal, request),
            (v.tenant, request.request_id),
            payload_hash("transition", payload),
        )

    # ------------------------------------------------------------------ invariants
    @invariant()
    def database_equals_the_model(self) -> None:
        with self.factory() as session:
            rows = session.execute(
                select(
                    ModelVersion.id,
                    ModelVersion.tenant_id,
                    ModelVersion.model_name,
                    ModelVersion.number,
                    ModelVersion.state,
                    ModelVersion.lock_version,
                    ModelVersion.was_champion,
                )
            ).all()
            audit = dict(
                session.execute(
                    select(AuditEntry.tenant_id, func.count()).group_by(AuditEntry.tenant_id)
                ).all()
            )
        actual = {
            r.id: (r.tenant_id, r.model_name, r.number, r.state, r.lock_version, r.was_champion) for r in rows
        }
        model = {
            v.id: (v.tenant, v.model, v.number, v.state.value, v.lock, v.was_champion)
            for v in self.versions.values()
        }
        assert actual == model
        for vid, (_, _, _, _, lock, _) in actual.items():
            assert lock >= self.seen_locks.get(vid, 1), f"lock version of {vid} went backwards"
            self.seen_locks[vid] = lock
        serving = Counter((t, m, s) for t, m, _, s, _, _ in actual.values() if s in ("CHAMPION", "CANARY"))
        assert all(n == 1 for n in serving.values()), serving
        assert audit == {t: n for t, n in self.audit.items() if n}, (
            "audit rows != registrations + transitions"
        )
        if self.steps_here and self.steps_here % CHAIN_CHECK_EVERY == 0:
            self._check_chains()

    def _every_audited_transition_is_legal(self) -> None:
        """Read back independently of the model: each transition the audit log records is in the table."""
        with self.factory() as session:
            moves = session.execute(
                select(AuditEntry.from_state, AuditEntry.to_state).where(
                    AuditEntry.action == "version.transition"
                )
            ).all()
        illegal = [(a, b) for a, b in moves if a is None or b is None or not is_legal(S(a), S(b))]
        assert illegal == []
        assert len(moves) == sum(self.audit.values()) - sum(self.initial_audit.values()) - len(self.versions)

    def _check_chains(self) -> None:
        root = Principal(user="auditor", role=Role.ADMIN, tenants=("*",))
        for tenant in TENANTS:
            report = self.service.verify_audit(root, tenant)
            assert report.ok, (tenant, report)
        self.stats.chain_checks += 1


@pytest.fixture
def template(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A migrated registry with both tenants, copied afresh for every example (migrating each time is slow)."""
    db = tmp_path / "template.db"
    url = f"sqlite:///{db}"
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        service, tenants = ModelRegistryService(factory), TenantService(factory)
        root = Principal(user="root", role=Role.ADMIN, tenants=("*",))
        for tenant in TENANTS:
            tenants.ensure_tenant(root, tenant)
        audit = {tenant: len(service.audit_trail(root, tenant)) for tenant in TENANTS}
    finally:
        engine.dispose()
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    return db, audit


def test_random_actors_and_requests_only_ever_apply_legal_transitions_and_audit_each_one(
    template: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    stats = Stats()
    LifecycleMachine.template, LifecycleMachine.initial_audit = template
    LifecycleMachine.workdir = tmp_path
    LifecycleMachine.stats = stats
    examples = math.ceil(TARGET_STEPS / STEPS_PER_EXAMPLE * 1.3)  # hypothesis ends many runs early
    started = time.perf_counter()
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=STEPS_PER_EXAMPLE,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    seconds = time.perf_counter() - started
    refusals = {
        k.removeprefix("refused: "): n for k, n in sorted(stats.outcomes.items()) if k.startswith("refused")
    }
    print(  # the figures of the run, for the README (make fuzz)
        f"\nlifecycle fuzz: {stats.steps} steps in {stats.examples} runs, {seconds:.1f} s; "
        f"{stats.registrations} registrations, {stats.applied_transitions} applied transitions "
        f"({stats.outcomes['applied']} applied requests), "
        f"{stats.outcomes['replayed (same request id, same content)']} replays; refusals {refusals}; "
        f"{stats.chain_checks} chain verifications"
    )
    assert stats.steps >= TARGET_STEPS, f"only {stats.steps} of {TARGET_STEPS} steps ran"
    # The run explored what it is for: transitions applied and every kind of refusal met.
    assert stats.applied_transitions > stats.steps // 10
    for kind in ("PermissionDenied", "IllegalTransition", "StaleVersion", "IdempotencyConflict", "NotFound"):
        assert refusals.get(kind, 0) > 0, f"no {kind} in {stats.steps} steps"
    assert stats.outcomes["replayed (same request id, same content)"] > 0

"""Concurrent writers on a real PostgreSQL: the optimistic lock and request_id idempotency hold under races."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import StaleVersion
from evolution.lifecycle import ModelState, TransitionRequest
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal, Role

pytestmark = pytest.mark.postgres
WRITERS = 50
ROUNDS = 20
SYSTEM = Principal.system("acme")


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once (released together by a barrier); return each result or exception."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as error:  # the outcome under test
            return error

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def service(pg_factory: sessionmaker[Session]) -> ModelRegistryService:
    TenantService(pg_factory).ensure_tenant(Principal.for_tenant("root", Role.ADMIN, "acme"), "acme")
    return ModelRegistryService(pg_factory)


def test_fifty_concurrent_transitions_exactly_one_applies_every_round(service: ModelRegistryService) -> None:
    for _ in range(ROUNDS):
        version = service.register_version(SYSTEM, "acme", "yield", request_id=uuid.uuid4().hex)
        calls = [
            (
                lambda version_id=version.id: service.transition(
                    SYSTEM,
                    TransitionRequest(
                        version_id=version_id,
                        to_state=ModelState.TRAINING,
                        expected_version=1,
                        request_id=uuid.uuid4().hex,
                    ),
                )
            )
            for _ in range(WRITERS)
        ]
        outcomes = Counter(type(o).__name__ for o in race(calls))
        assert outcomes == {"TransitionResult": 1, StaleVersion.__name__: WRITERS - 1}
        audit = service.audit_trail(SYSTEM, "acme", subject_id=version.id)
        assert [e.to_state for e in audit] == ["DRAFT", "TRAINING"]
    assert service.verify_audit(SYSTEM, "acme").ok


def test_fifty_concurrent_requests_with_one_request_id_have_one_effect(service: ModelRegistryService) -> None:
    version = service.register_version(SYSTEM, "acme", "yield", request_id=uuid.uuid4().hex)
    request = TransitionRequest(
        version_id=version.id, to_state=ModelState.TRAINING, expected_version=1, request_id="one-request"
    )
    results = race([lambda: service.transition(SYSTEM, request) for _ in range(WRITERS)])
    assert all(not isinstance(r, Exception) for r in results), [
        r for r in results if isinstance(r, Exception)
    ][:3]
    assert len({r.model_dump_json() for r in results}) == 1
    assert [e.to_state for e in service.audit_trail(SYSTEM, "acme", subject_id=version.id)] == [
        "DRAFT",
        "TRAINING",
    ]
    assert service.get_version(SYSTEM, version.id).lock_version == 2


def test_concurrent_audit_writers_keep_the_chain_intact(service: ModelRegistryService) -> None:
    calls = [
        (lambda name=f"m{i % 5}": service.register_version(SYSTEM, "acme", name, request_id=uuid.uuid4().hex))
        for i in range(WRITERS)
    ]
    assert not [r for r in race(calls) if isinstance(r, Exception)]
    report = service.verify_audit(SYSTEM, "acme")
    assert report.ok and report.entries == WRITERS + 1

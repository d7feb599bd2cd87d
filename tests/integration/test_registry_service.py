"""ModelRegistryService on SQLite and on a real PostgreSQL: lock, idempotency, audit, database guarantees."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import (
    Conflict,
    IdempotencyConflict,
    IllegalTransition,
    NotFound,
    PermissionDenied,
    StaleVersion,
)
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.registry.db import tenant_session
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal, Role

S = ModelState
ADMIN = Principal.for_tenant("root", Role.ADMIN, "acme")
SYSTEM = Principal.system("acme")
MANAGER = Principal.for_tenant("maria", Role.MANAGER, "acme")


def rid() -> str:
    return uuid.uuid4().hex


def walk(service: ModelRegistryService, version: VersionView, *states: ModelState) -> VersionView:
    for state in states:
        result = service.transition(
            SYSTEM,
            TransitionRequest(
                version_id=version.id, to_state=state, expected_version=version.lock_version, request_id=rid()
            ),
        )
        version = result.version
    return version


@pytest.fixture
def service(registry_factory: sessionmaker[Session]) -> ModelRegistryService:
    TenantService(registry_factory).ensure_tenant(ADMIN, "acme")
    return ModelRegistryService(registry_factory)


def new_candidate(service: ModelRegistryService) -> VersionView:
    return service.register_version(SYSTEM, "acme", "yield", request_id=rid())


def test_full_lifecycle_to_champion_demotes_the_old_one_and_audits_every_step(
    service: ModelRegistryService,
) -> None:
    first = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
    first = service.promote(MANAGER, first.id, first.lock_version, rid()).version
    second = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
    result = service.promote(MANAGER, second.id, second.lock_version, rid(), reason="better MAE")
    assert result.version.state == S.CHAMPION
    assert result.demoted is not None and result.demoted.id == first.id
    assert result.demoted.state == S.DEPRECATED
    trail = service.audit_trail(ADMIN, "acme", subject_id=second.id)
    assert [(e.from_state, e.to_state) for e in trail] == [
        (None, "DRAFT"),
        ("DRAFT", "TRAINING"),
        ("TRAINING", "VALIDATED"),
        ("VALIDATED", "SHADOW"),
        ("SHADOW", "CANARY"),
        ("CANARY", "CHAMPION"),
    ]
    assert trail[-1].actor == "maria" and trail[-1].details["reason"] == "better MAE"
    assert service.verify_audit(ADMIN, "acme").ok


def test_changes_recorded_with_the_transition(service: ModelRegistryService) -> None:
    version = walk(service, new_candidate(service), S.TRAINING)
    changes = VersionChanges(model_hash="ab" * 32, manifest={"k": 1}, metrics={"mae": 1.5})
    result = service.transition(
        SYSTEM,
        TransitionRequest(
            version_id=version.id,
            to_state=S.VALIDATED,
            expected_version=version.lock_version,
            request_id=rid(),
            changes=changes,
        ),
    )
    assert result.version.model_hash == "ab" * 32 and result.version.metrics == {"mae": 1.5}


def test_stale_version_is_refused(service: ModelRegistryService) -> None:
    version = new_candidate(service)
    walk(service, version, S.TRAINING)
    with pytest.raises(StaleVersion, match="expected lock version 1"):
        service.transition(
            SYSTEM,
            TransitionRequest(version_id=version.id, to_state=S.FAILED, expected_version=1, request_id=rid()),
        )


def test_illegal_transition_is_refused_and_leaves_no_audit_row(service: ModelRegistryService) -> None:
    version = walk(service, new_candidate(service), S.FAILED)
    before = len(service.audit_trail(ADMIN, "acme"))
    with pytest.raises(IllegalTransition, match="FAILED -> TRAINING"):
        walk(service, version, S.TRAINING)
    with pytest.raises(IllegalTransition):
        service.promote(MANAGER, version.id, version.lock_version, rid())
    assert len(service.audit_trail(ADMIN, "acme")) == before


def test_same_request_id_same_payload_returns_the_first_answer(service: ModelRegistryService) -> None:
    version = new_candidate(service)
    request = TransitionRequest(
        version_id=version.id, to_state=S.TRAINING, expected_version=1, request_id=rid()
    )
    first = service.transition(SYSTEM, request)
    again = service.transition(SYSTEM, request)
    assert again == first
    assert len(service.audit_trail(ADMIN, "acme", subject_id=version.id)) == 2


def test_same_request_id_other_payload_is_a_conflict(service: ModelRegistryService) -> None:
    version = new_candidate(service)
    request_id = rid()
    service.transition(
        SYSTEM,
        TransitionRequest(
            version_id=version.id, to_state=S.TRAINING, expected_version=1, request_id=request_id
        ),
    )
    with pytest.raises(IdempotencyConflict, match=request_id):
        service.transition(
            SYSTEM,
            TransitionRequest(
                version_id=version.id, to_state=S.FAILED, expected_version=1, request_id=request_id
            ),
        )


def test_manager_cannot_transition_and_viewer_cannot_approve(service: ModelRegistryService) -> None:
    version = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
    with pytest.raises(PermissionDenied):
        walk_as = TransitionRequest(
            version_id=version.id, to_state=S.FAILED, expected_version=5, request_id=rid()
        )
        service.transition(MANAGER, walk_as)
    with pytest.raises(PermissionDenied):
        service.promote(
            Principal.for_tenant("ana", Role.VIEWER, "acme"), version.id, version.lock_version, rid()
        )
    with pytest.raises(PermissionDenied):
        service.promote(
            Principal.for_tenant("bob", Role.MANAGER, "other"), version.id, version.lock_version, rid()
        )


def test_force_rollback_restores_the_previous_champion(service: ModelRegistryService) -> None:
    first = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
    service.promote(MANAGER, first.id, first.lock_version, rid())
    second = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
    service.promote(MANAGER, second.id, second.lock_version, rid())
    result = service.force_rollback(
        ADMIN, "acme", "yield", rid(), reason="agronomists report bad maize forecasts"
    )
    assert result.version.id == first.id and result.version.state == S.CHAMPION
    assert result.demoted is not None and result.demoted.id == second.id
    assert service.audit_trail(ADMIN, "acme", subject_id=first.id)[-1].details["forced_rollback"] is True
    with pytest.raises(PermissionDenied):
        service.force_rollback(MANAGER, "acme", "yield", rid(), reason="x")


def test_the_watch_rolls_back_only_the_champion_it_watches_and_only_to_the_one_it_replaced(
    service: ModelRegistryService,
) -> None:
    first = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
    service.promote(MANAGER, first.id, first.lock_version, rid())
    second = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
    service.promote(MANAGER, second.id, second.lock_version, rid())
    with pytest.raises(PermissionDenied):  # a person, even an admin, rolls back by force_rollback
        service.watch_rollback(ADMIN, "acme", "yield", (second.id, first.id), rid(), "harm")
    with pytest.raises(Conflict, match="is the champion now"):
        service.watch_rollback(SYSTEM, "acme", "yield", (first.id, second.id), rid(), "harm")
    with pytest.raises(Conflict, match="the previous champion is"):
        service.watch_rollback(SYSTEM, "acme", "yield", (second.id, "mv-elsewhere"), rid(), "harm")
    result = service.watch_rollback(
        SYSTEM, "acme", "yield", (second.id, first.id), rid(), "harm test: q = 0.001"
    )
    assert result.version.id == first.id and result.demoted is not None and result.demoted.id == second.id
    restored = service.audit_trail(ADMIN, "acme", subject_id=first.id)[-1]
    assert restored.details["watch_rollback"] is True
    assert restored.details["reason"] == "post-promotion watch: harm test: q = 0.001"


def test_database_allows_one_champion_and_one_canary_per_model(
    registry_factory: sessionmaker[Session],
) -> None:
    TenantService(registry_factory).ensure_tenant(ADMIN, "acme")
    service = ModelRegistryService(registry_factory)
    a = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY)
    b = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW)
    with tenant_session(registry_factory, "acme") as session, pytest.raises(sa.exc.IntegrityError):
        session.execute(sa.text("UPDATE model_versions SET state='CANARY' WHERE id=:id"), {"id": b.id})
        session.commit()
    service.promote(MANAGER, a.id, a.lock_version, rid())
    with tenant_session(registry_factory, "acme") as session, pytest.raises(sa.exc.IntegrityError):
        session.execute(sa.text("UPDATE model_versions SET state='CHAMPION' WHERE id=:id"), {"id": b.id})
        session.commit()


def test_database_allows_one_shadow_per_model(registry_factory: sessionmaker[Session]) -> None:
    TenantService(registry_factory).ensure_tenant(ADMIN, "acme")
    service = ModelRegistryService(registry_factory)
    walk(service, new_candidate(service), S.TRAINING, S.VALIDATED, S.SHADOW)
    second = walk(service, new_candidate(service), S.TRAINING, S.VALIDATED)
    with tenant_session(registry_factory, "acme") as session, pytest.raises(sa.exc.IntegrityError):
        session.execute(sa.text("UPDATE model_versions SET state='SHADOW' WHERE id=:id"), {"id": second.id})
        session.commit()


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET actor='mallory'", "DELETE FROM audit_log"])
def test_audit_rows_refuse_update_and_delete(
    service: ModelRegistryService, registry_factory, statement
) -> None:  # type: ignore[no-untyped-def]
    new_candidate(service)
    with (
        tenant_session(registry_factory, "acme") as session,
        pytest.raises(sa.exc.DBAPIError, match=r"append-only|permission denied"),
    ):
        session.execute(sa.text(statement))
        session.commit()
    assert service.verify_audit(ADMIN, "acme").ok


def test_tenant_settings_are_validated_and_audited(
    service: ModelRegistryService, registry_factory: sessionmaker[Session]
) -> None:
    from evolution.errors import InvalidInput

    tenants = TenantService(registry_factory)
    after = tenants.configure_tenant(ADMIN, "acme", {"drift": {"alpha": 0.05, "warn_psi": 0.2}})
    assert after.drift.alpha == 0.05 and tenants.tenant_settings(ADMIN, "acme").drift.warn_psi == 0.2
    with pytest.raises(InvalidInput, match="alert_psi"):
        tenants.configure_tenant(ADMIN, "acme", {"drift": {"alert_psi": 0.1}})
    with pytest.raises(InvalidInput, match="alpha"):
        tenants.configure_tenant(ADMIN, "acme", {"drift": {"alpha": 2}})
    with pytest.raises(PermissionDenied):
        tenants.configure_tenant(MANAGER, "acme", {"drift": {"alpha": 0.05}})
    last = service.audit_trail(ADMIN, "acme")[-1]
    assert last.action == "tenant.configured" and last.details["after"]["drift"]["alpha"] == 0.05


def test_a_strict_listing_says_which_of_tenant_or_model_is_unknown(service: ModelRegistryService) -> None:
    walk(service, new_candidate(service), S.TRAINING)
    assert [v.model_name for v in service.list_versions(ADMIN, "acme", "yield", strict=True)] == ["yield"]
    with pytest.raises(NotFound, match="tenant 'acme' has no model 'yeild'"):
        service.list_versions(ADMIN, "acme", "yeild", strict=True)
    assert service.list_versions(ADMIN, "acme", "yeild") == []  # not strict: an empty list, as before
    ghost = Principal.for_tenant("root", Role.ADMIN, "ghost")
    with pytest.raises(NotFound, match="tenant 'ghost' does not exist"):
        service.list_versions(ghost, "ghost", strict=True)

"""The model-definition service on SQLite and PostgreSQL: revisions never changed, each audited with the one before,
admins only, unknown tenants refused, and on PostgreSQL one tenant's definitions invisible to another's session."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import InvalidInput, NotFound, PermissionDenied
from evolution.registry.db import make_engine, reading, transaction
from evolution.registry.model_definitions import (
    DEFAULT_DEFINITION,
    CommandTrainer,
    FeatureSpec,
    ModelDefinition,
    ModelDefinitions,
)
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal, Role

ROOT = Principal(user="root", role=Role.ADMIN, tenants=("*",))
ANN = Principal.for_tenant("ann", Role.ADMIN, "farm-a")
BYO = ModelDefinition(
    features=[FeatureSpec(name="rain_mm"), FeatureSpec(name="crop", type="categorical")],
    target="yield_t_ha",
    hyperparameters={"max_depth": 4},
    trainer=CommandTrainer(argv=["python", "train.py"], code_files=["train.py"], timeout_s=5400),
)


@pytest.fixture
def definitions(registry_factory: sessionmaker[Session]) -> ModelDefinitions:
    tenants = TenantService(registry_factory)
    for tenant in ("farm-a", "farm-b"):
        tenants.ensure_tenant(ROOT, tenant)
    return ModelDefinitions(registry_factory)


def _count(factory: sessionmaker[Session], tenant: str) -> int:
    with reading(factory, tenant) as session:
        return int(session.scalar(sa.text("SELECT count(*) FROM model_definitions")) or 0)


def test_a_model_never_defined_reads_revision_0_the_builtin_default(definitions: ModelDefinitions) -> None:
    view = definitions.current(ANN, "farm-a", "yield")
    assert (view.revision, view.definition, view.defined_by, view.defined_at) == (
        0,
        DEFAULT_DEFINITION,
        None,
        None,
    )
    assert definitions.history(ANN, "farm-a", "yield") == []
    assert definitions.defined_models(ANN, "farm-a") == []


def test_each_definition_is_a_new_revision_and_the_latest_is_in_force(definitions: ModelDefinitions) -> None:
    first = definitions.define(ANN, "farm-a", "yield", BYO, "bring our own model")
    second = definitions.define(ANN, "farm-a", "yield", DEFAULT_DEFINITION, "back to the built-in trainer")
    third = definitions.define(ANN, "farm-a", "yield", BYO)
    assert [first.revision, second.revision, third.revision] == [1, 2, 3]
    assert first.defined_by == "ann" and first.defined_at is not None
    current = definitions.current(ANN, "farm-a", "yield")
    assert (current.revision, current.definition) == (3, BYO)
    assert [v.definition for v in definitions.history(ANN, "farm-a", "yield")] == [
        BYO,
        DEFAULT_DEFINITION,
        BYO,
    ]
    definitions.define(ANN, "farm-a", "quality", DEFAULT_DEFINITION)
    assert definitions.defined_models(ANN, "farm-a") == ["quality", "yield"]
    assert definitions.current(ANN, "farm-a", "quality").revision == 1  # revisions count per model


def test_every_revision_is_audited_with_the_one_before_and_the_chain_verifies(
    registry_factory: sessionmaker[Session], definitions: ModelDefinitions
) -> None:
    definitions.define(ANN, "farm-a", "yield", BYO, "bring our own model")
    definitions.define(ANN, "farm-a", "yield", DEFAULT_DEFINITION, "back to the built-in trainer")
    registry = ModelRegistryService(registry_factory)
    trail = [
        e for e in registry.audit_trail(ANN, "farm-a", subject_id="yield") if e.action == "model.defined"
    ]
    assert [(e.actor, e.role, e.subject_type) for e in trail] == [("ann", "admin", "model_definition")] * 2
    first, second = (e.details for e in trail)
    assert (first["revision"], first["before"], first["reason"]) == (1, None, "bring our own model")
    assert first["after"] == BYO.model_dump(mode="json")
    assert (second["revision"], second["before"], second["after"]) == (
        2,
        BYO.model_dump(mode="json"),
        DEFAULT_DEFINITION.model_dump(mode="json"),
    )
    assert registry.verify_audit(ANN, "farm-a").ok


def test_only_an_admin_of_the_tenant_defines_and_nothing_is_stored_otherwise(
    registry_factory: sessionmaker[Session], definitions: ModelDefinitions
) -> None:
    refused = [
        Principal.for_tenant("mia", Role.MANAGER, "farm-a"),
        Principal.for_tenant("vic", Role.VIEWER, "farm-a"),
        Principal.system("farm-a"),
        Principal.for_tenant("bob", Role.ADMIN, "farm-b"),
    ]
    for principal in refused:
        with pytest.raises(PermissionDenied, match="define_model"):
            definitions.define(principal, "farm-a", "yield", BYO)
    with pytest.raises(PermissionDenied):
        definitions.define(None, "farm-a", "yield", BYO)  # type: ignore[arg-type]
    assert _count(registry_factory, "farm-a") == 0
    viewer = Principal.for_tenant("vic", Role.VIEWER, "farm-a")
    assert definitions.current(viewer, "farm-a", "yield").revision == 0  # any role of the tenant may read


def test_an_unknown_tenant_a_bad_model_name_or_reason_are_refused(definitions: ModelDefinitions) -> None:
    with pytest.raises(NotFound, match="tenant 'ghost' does not exist"):
        definitions.define(ROOT, "ghost", "yield", BYO)
    with pytest.raises(NotFound, match="tenant 'ghost' does not exist"):
        definitions.current(ROOT, "ghost", "yield")
    with pytest.raises(NotFound, match="tenant 'ghost' does not exist"):
        definitions.history(ROOT, "ghost", "yield")
    for name in ("", "has space", "yield\n", "-leading-dash", "x" * 101):
        with pytest.raises(InvalidInput, match="model name"):
            definitions.define(ANN, "farm-a", name, BYO)
    with pytest.raises(InvalidInput, match="reason: at most 500"):
        definitions.define(ANN, "farm-a", "yield", BYO, "x" * 501)
    with pytest.raises(InvalidInput, match="reason: contains a NUL"):
        definitions.define(ANN, "farm-a", "yield", BYO, "why\x00")
    assert definitions.history(ANN, "farm-a", "yield") == []


def test_a_model_name_of_the_full_hundred_characters_is_defined_and_audited(
    definitions: ModelDefinitions,
) -> None:
    name = "m" * 100  # the longest name a model version takes, and the audit log's subject column holds
    assert definitions.define(ANN, "farm-a", name, BYO).revision == 1
    assert definitions.current(ANN, "farm-a", name).definition == BYO


def test_the_database_refuses_to_change_or_delete_a_revision(
    request: pytest.FixtureRequest, registry_factory: sessionmaker[Session], definitions: ModelDefinitions
) -> None:
    definitions.define(ANN, "farm-a", "yield", BYO)
    changes = (
        "UPDATE model_definitions SET definition = '{}' WHERE tenant_id = 'farm-a'",
        "DELETE FROM model_definitions WHERE tenant_id = 'farm-a'",
    )
    for statement in changes:  # as the application connects (on PostgreSQL: the fenced application role)
        with (
            pytest.raises(sa.exc.DBAPIError, match=r"append-only|permission denied"),
            transaction(registry_factory, "farm-a") as session,
        ):
            session.execute(sa.text(statement))
    if registry_factory.kw["bind"].dialect.name == "postgresql":
        owner = make_engine(
            request.getfixturevalue("pg_url")
        )  # the schema's owner: the trigger still refuses
        try:
            for statement in changes:
                with pytest.raises(sa.exc.DBAPIError, match="model_definitions"), owner.begin() as connection:
                    connection.execute(sa.text(statement))
        finally:
            owner.dispose()
    assert definitions.current(ANN, "farm-a", "yield").definition == BYO
    assert _count(registry_factory, "farm-a") == 1


@pytest.mark.postgres
def test_a_session_for_one_tenant_sees_and_writes_none_of_another_tenants_definitions(
    pg_factory: sessionmaker[Session],
) -> None:
    tenants = TenantService(pg_factory)
    for tenant in ("farm-a", "farm-b"):
        tenants.ensure_tenant(ROOT, tenant)
    definitions = ModelDefinitions(pg_factory)
    definitions.define(ROOT, "farm-a", "yield", BYO)
    definitions.define(ROOT, "farm-b", "yield", DEFAULT_DEFINITION)
    definitions.define(ROOT, "farm-b", "secret-model", BYO)
    with reading(pg_factory, "farm-a") as session:
        seen = session.execute(sa.text("SELECT tenant_id, model_name FROM model_definitions")).all()
        assert [tuple(r) for r in seen] == [("farm-a", "yield")]
    with reading(pg_factory, None) as session:
        assert session.scalar(sa.text("SELECT count(*) FROM model_definitions")) == 0
    with (
        pytest.raises(sa.exc.ProgrammingError, match="row-level security"),
        transaction(pg_factory, "farm-a") as session,
    ):
        session.execute(
            sa.text(
                "INSERT INTO model_definitions (tenant_id, model_name, revision, definition, defined_by, defined_at) "
                "VALUES ('farm-b', 'yield', 2, '{}', 'intruder', now())"
            )
        )
    assert definitions.current(ROOT, "farm-b", "yield").definition == DEFAULT_DEFINITION
    assert definitions.defined_models(ROOT, "farm-b") == ["secret-model", "yield"]
    assert definitions.defined_models(ROOT, "farm-a") == ["yield"]

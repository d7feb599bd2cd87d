"""PostgreSQL row-level security: a transaction acting for tenant A reads and writes nothing of tenant B.

The registry here connects as the application's login role (tests/conftest.py ``pg_factory``): a member of
``evolution_app`` that owns no table and has neither SUPERUSER nor BYPASSRLS.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evolution.data.events import EventIngestor
from evolution.errors import NotFound, PermissionDenied
from evolution.notifications.outbox import OutboxNotifier
from evolution.notifications.port import NotificationIn
from evolution.registry.db import reading, transaction
from evolution.registry.row_security import APP_ROLE, IDENTITY_TABLES
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal, Role
from tests.support.postgres import APP_LOGIN_ROLE

pytestmark = pytest.mark.postgres

ADMIN = Principal(user="root", role=Role.ADMIN, tenants=("*",))


def _owner(pg_url: str) -> psycopg.Connection:
    return psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.fixture
def two_tenants(pg_factory: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    registry = ModelRegistryService(pg_factory)
    tenants = TenantService(pg_factory)
    for tenant in ("farm-a", "farm-b"):
        tenants.ensure_tenant(ADMIN, tenant)
        registry.register_version(ADMIN, tenant, "yield", request_id=f"{tenant}-v1")
        OutboxNotifier(pg_factory).notify(
            NotificationIn(tenant_id=tenant, severity="info", kind="test", subject=f"hello {tenant}")
        )
    EventIngestor(pg_factory).register_source_key(
        ADMIN, "farm-b", "gateway-b", b"-----BEGIN PUBLIC KEY-----\nx\n"
    )
    yield pg_factory


def _tenant_tables(pg_url: str) -> list[str]:
    with _owner(pg_url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND (column_name = 'tenant_id' OR table_name = 'tenants')"
        ).fetchall()
    return sorted(r[0] for r in rows if r[0] not in IDENTITY_TABLES)


def test_application_role_owns_nothing_and_cannot_bypass(
    pg_url: str, pg_factory: sessionmaker[Session]
) -> None:
    with _owner(pg_url) as conn:
        superuser, bypass = conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (APP_LOGIN_ROLE,)
        ).fetchone()  # type: ignore[misc]
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
            "WHERE r.rolname IN (%s, %s)",
            (APP_LOGIN_ROLE, APP_ROLE),
        ).fetchone()
    assert (superuser, bypass) == (False, False)
    assert owned == (0,)
    with reading(pg_factory, None) as session:
        assert session.scalar(sa.text("SELECT current_user")) == APP_LOGIN_ROLE


def test_every_tenant_table_has_forced_row_level_security(
    pg_url: str, pg_factory: sessionmaker[Session]
) -> None:
    tables = _tenant_tables(pg_url)
    assert {"audit_log", "model_versions", "learning_events", "predictions", "tenants"} <= set(tables)
    with _owner(pg_url) as conn:
        flags = dict(
            (name, (enabled, forced))
            for name, enabled, forced in conn.execute(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relname = ANY(%s) AND relkind = 'r'",
                (tables,),
            ).fetchall()
        )
        policies = {r[0] for r in conn.execute("SELECT tablename FROM pg_policies").fetchall()}
    assert {t: flags[t] for t in tables} == {t: (True, True) for t in tables}
    assert set(tables) <= policies


def test_a_session_for_one_tenant_sees_only_its_rows(pg_url: str, two_tenants: sessionmaker[Session]) -> None:
    tables = _tenant_tables(pg_url)
    with reading(two_tenants, "farm-a") as session:
        for table in tables:
            column = "id" if table == "tenants" else "tenant_id"
            seen = set(session.scalars(sa.text(f'SELECT DISTINCT {column} FROM "{table}"')))
            assert seen <= {"farm-a"}, table
        assert session.scalar(sa.text("SELECT count(*) FROM model_versions")) == 1
        assert session.scalar(sa.text("SELECT count(*) FROM source_keys")) == 0  # farm-b's key is invisible
    with reading(two_tenants, None) as session:
        for table in tables:
            assert session.scalar(sa.text(f'SELECT count(*) FROM "{table}"')) == 0, table


def test_a_session_for_one_tenant_changes_nothing_of_another(two_tenants: sessionmaker[Session]) -> None:
    with transaction(two_tenants, "farm-a") as session:
        updated = session.connection().execute(
            sa.text("UPDATE model_versions SET state = 'FAILED' WHERE tenant_id = 'farm-b'")
        )
        deleted = session.connection().execute(
            sa.text("DELETE FROM notifications WHERE tenant_id = 'farm-b'")
        )
        assert (updated.rowcount, deleted.rowcount) == (0, 0)
    with (
        pytest.raises(sa.exc.ProgrammingError, match="row-level security"),
        transaction(two_tenants, "farm-a") as s,
    ):
        s.execute(
            sa.text(
                "INSERT INTO notifications (tenant_id, severity, kind, subject, body, created_at) "
                "VALUES ('farm-b', 'info', 'x', 'planted', '{}', now())"
            )
        )
    with (
        pytest.raises(sa.exc.ProgrammingError, match="row-level security"),
        transaction(two_tenants, "farm-a") as s,
    ):
        s.execute(sa.text("UPDATE model_versions SET tenant_id = 'farm-b' WHERE tenant_id = 'farm-a'"))
    with reading(two_tenants, "farm-b") as session:
        assert session.scalar(sa.text("SELECT count(*) FROM model_versions WHERE state = 'FAILED'")) == 0
        assert session.scalar(sa.text("SELECT count(*) FROM notifications")) == 1


def test_the_application_may_not_rewrite_or_truncate_the_audit_log(
    two_tenants: sessionmaker[Session],
) -> None:
    for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with (
            pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
            transaction(two_tenants, "farm-a") as s,
        ):
            s.execute(sa.text(statement))


def test_services_work_across_tenants_through_ids_only(two_tenants: sessionmaker[Session]) -> None:
    registry = ModelRegistryService(two_tenants)
    assert TenantService(two_tenants).tenant_ids() == ["farm-a", "farm-b"]
    version_b = registry.list_versions(ADMIN, "farm-b")[0]
    assert registry.get_version(ADMIN, version_b.id).tenant_id == "farm-b"
    with pytest.raises(PermissionDenied):
        registry.get_version(Principal.for_tenant("ann", Role.ADMIN, "farm-a"), version_b.id)
    with pytest.raises(NotFound):
        registry.get_version(ADMIN, "no-such-version")
    assert registry.verify_audit(ADMIN, "farm-b").ok

"""row-level security per tenant on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 12:00:00.000000

Every table that holds a tenant's rows gets ENABLE + FORCE ROW LEVEL SECURITY and one policy: a row is visible and
writable only while the transaction's ``evolution.tenant_id`` setting names its tenant. The application's role
(``evolution_app``) owns nothing and is granted only what it uses; append-only tables get no UPDATE or DELETE.
Three SECURITY DEFINER functions answer the only cross-tenant questions, with ids alone. SQLite has no row-level
security: there this migration does nothing and the service layer's checks are the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from evolution.registry.row_security import APP_ROLE, IDENTITY_TABLES, create_app_role, fence_table

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID_FUNCTIONS = {
    "evolution_version_tenant": "model_versions",
    "evolution_snapshot_tenant": "dataset_snapshots",
}


def _tenant_tables(bind: sa.engine.Connection) -> list[str]:
    inspector = sa.inspect(bind)
    tables = []
    for table in inspector.get_table_names():
        if table in IDENTITY_TABLES:
            continue
        columns = {c["name"] for c in inspector.get_columns(table)}
        if table == "tenants" or "tenant_id" in columns:
            tables.append(table)
    return sorted(tables)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    create_app_role(op.execute)
    op.execute(f"GRANT USAGE ON SCHEMA {_schema()} TO {APP_ROLE}")
    for table in _tenant_tables(bind):
        fence_table(op.execute, table)
    for table in IDENTITY_TABLES - {"alembic_version"}:
        if sa.inspect(bind).has_table(table):
            op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO {APP_ROLE}')
    op.execute(f"GRANT SELECT ON alembic_version TO {APP_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {_schema()} TO {APP_ROLE}")
    op.execute(
        "CREATE OR REPLACE FUNCTION evolution_tenant_ids() RETURNS SETOF text "
        "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public "
        "AS $$ SELECT id FROM tenants ORDER BY id $$"
    )
    for function, table in _ID_FUNCTIONS.items():
        op.execute(
            f"CREATE OR REPLACE FUNCTION {function}(object_id text) RETURNS text "
            "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public "
            f"AS $$ SELECT tenant_id FROM {table} WHERE id = object_id $$"
        )
    for function in ["evolution_tenant_ids()", *(f"{f}(text)" for f in _ID_FUNCTIONS)]:
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {APP_ROLE}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for function in ["evolution_tenant_ids()", *(f"{f}(text)" for f in _ID_FUNCTIONS)]:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    for table in _tenant_tables(bind):
        op.execute(f'DROP POLICY IF EXISTS tenant_isolation ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')


def _schema() -> str:
    return str(op.get_bind().execute(sa.text("SELECT current_schema()")).scalar())

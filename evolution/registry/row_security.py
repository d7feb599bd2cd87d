"""Row-level security on PostgreSQL: which tables are tenant tables, and the SQL that fences them.

Used by the migrations (0006 and any later one that adds a tenant table) and by ``evolution doctor``.
The application connects as a member of :data:`APP_ROLE`, which owns no table and has neither SUPERUSER nor
BYPASSRLS; every transaction names its tenant in the ``evolution.tenant_id`` setting (evolution.registry.db).
"""

from __future__ import annotations

from collections.abc import Callable

APP_ROLE = "evolution_app"
TENANT_SETTING = "evolution.tenant_id"
POLICY = "tenant_isolation"

# Identity spans tenants by nature: a user holds roles on several of them. These tables carry no tenant data.
IDENTITY_TABLES = frozenset({"users", "user_roles", "api_tokens", "alembic_version"})
# Rows that are never changed once written: the application may not even ask.
APPEND_ONLY_TABLES = frozenset(
    {
        "audit_log",
        "dataset_snapshots",
        "drift_reports",
        "learning_events",
        "model_definitions",
        "snapshot_quality_marks",
        "baseline_quality",
    }
)

_CURRENT_TENANT = f"current_setting('{TENANT_SETTING}', true)"


def tenant_column(table: str) -> str:
    return "id" if table == "tenants" else "tenant_id"


def fence_table(execute: Callable[[str], object], table: str) -> None:
    """ENABLE and FORCE row-level security on ``table`` with the one tenant policy, and grant the app role."""
    column = tenant_column(table)
    execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
    execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
    execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
    execute(
        f'CREATE POLICY {POLICY} ON "{table}" USING ({column} = {_CURRENT_TENANT}) '
        f"WITH CHECK ({column} = {_CURRENT_TENANT})"
    )
    privileges = "SELECT, INSERT" if table in APPEND_ONLY_TABLES else "SELECT, INSERT, UPDATE, DELETE"
    execute(f'REVOKE ALL ON "{table}" FROM {APP_ROLE}')
    execute(f'GRANT {privileges} ON "{table}" TO {APP_ROLE}')


def create_app_role(execute: Callable[[str], object]) -> None:
    """The group role the application's login role is a member of (created once per cluster)."""
    execute(
        "DO $$ BEGIN "
        f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN "
        f"CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; "
        "END IF; END $$"
    )

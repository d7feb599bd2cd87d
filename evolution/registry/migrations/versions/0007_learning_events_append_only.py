"""learning events are append-only

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 16:00:00.000000

Nothing ever changed a stored learning event, and sealing now relies on it: a window is read without the tenant's
lock, then committed only if its event count is unchanged, which proves the same rows only when rows are never
updated or deleted. The database now refuses UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) on
``learning_events``, as it does on the audit log, snapshots and drift reports, and the application role on
PostgreSQL keeps only SELECT and INSERT on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from evolution.registry.row_security import APP_ROLE

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "learning_events"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # evolution_refuse_change() is migration 0001's trigger function for the other append-only tables.
        op.execute(
            f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
            f"FOR EACH ROW EXECUTE FUNCTION evolution_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION evolution_refuse_change()"
        )
        op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {TABLE} FROM {APP_ROLE}")
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_{verb.lower()} BEFORE {verb} ON {TABLE} "
            f"BEGIN SELECT RAISE(ABORT, '{verb} on {TABLE} refused: the table is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}")
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}")
        op.execute(f"GRANT UPDATE, DELETE ON {TABLE} TO {APP_ROLE}")
        return
    for verb in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_{verb}")

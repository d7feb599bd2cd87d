"""model definitions per tenant and model name, in revisions never changed

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:00:00.000000

A tenant declares what its model is and who trains it (the built-in trainer, a command, or an image pinned by
digest); each change is a new revision, audited, and the table refuses UPDATE and DELETE like the other
append-only tables. On PostgreSQL it is a tenant table under row-level security, the application role keeping
SELECT and INSERT only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from evolution.registry.row_security import fence_table

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "model_definitions"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("tenant_id", sa.String(length=64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("defined_by", sa.String(length=200), nullable=False),
        sa.Column("defined_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "model_name", "revision"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # evolution_refuse_change() is migration 0001's trigger function for the append-only tables.
        op.execute(
            f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
            f"FOR EACH ROW EXECUTE FUNCTION evolution_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION evolution_refuse_change()"
        )
        fence_table(op.execute, TABLE)
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_{verb.lower()} BEFORE {verb} ON {TABLE} "
            f"BEGIN SELECT RAISE(ABORT, '{verb} on {TABLE} refused: the table is append-only'); END"
        )


def downgrade() -> None:
    op.drop_table(TABLE)

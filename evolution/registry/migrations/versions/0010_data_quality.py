"""data-quality marks of windows and quality data computed for older baselines, in rows never changed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14 00:00:00.000000

``snapshot_quality_marks``: a window whose data-quality checks fired is marked 'held' (a retraining started by drift
on it waits), and an admin's acceptance is a second row, 'accepted', with its reason. ``baseline_quality``: the
quality data of a baseline made before the checks, computed once from its snapshot and signed, or the plain
statement that it could not be. Both refuse UPDATE and DELETE like the other append-only tables; on PostgreSQL they
are tenant tables under row-level security, the application role keeping SELECT and INSERT only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from evolution.registry.row_security import fence_table

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKS = "snapshot_quality_marks"
BASELINE_QUALITY = "baseline_quality"


def upgrade() -> None:
    op.create_table(
        MARKS,
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("snapshot_id", sa.String(length=40), sa.ForeignKey("dataset_snapshots.id"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("report_id", sa.String(length=40), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot_quality_marks")),
        sa.UniqueConstraint(
            "tenant_id", "snapshot_id", "kind", name=op.f("uq_snapshot_quality_marks_tenant_id_snapshot_id_kind")
        ),
        sa.CheckConstraint("kind IN ('held', 'accepted')", name=op.f("ck_snapshot_quality_marks_kind_known")),
    )
    op.create_table(
        BASELINE_QUALITY,
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("baseline_digest", sa.String(length=64), nullable=False),
        sa.Column("snapshot_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=True),
        sa.Column("quality_digest", sa.String(length=64), nullable=True),
        sa.Column("signature", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_baseline_quality")),
        sa.UniqueConstraint(
            "tenant_id", "baseline_digest", name=op.f("uq_baseline_quality_tenant_id_baseline_digest")
        ),
    )
    for table in (MARKS, BASELINE_QUALITY):
        _append_only(table)


def _append_only(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # evolution_refuse_change() is migration 0001's trigger function for the append-only tables.
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION evolution_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION evolution_refuse_change()"
        )
        fence_table(op.execute, table)
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{verb} on {table} refused: the table is append-only'); END"
        )


def downgrade() -> None:
    op.drop_table(BASELINE_QUALITY)
    op.drop_table(MARKS)

"""post-promotion watches: a promoted champion watched against the one it replaced

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-21 00:00:00.000000

``post_promotion_watches``: one row per watch, with the harm test (its configuration, state and cursor) and its
progress (labels, q, the last look) updated at every look, and how it ended. A tenant table under row-level security on PostgreSQL; rows change as the watch
progresses, so the application role may update them (the audit log records the start and the end).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from evolution.registry.row_security import fence_table

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "post_promotion_watches"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column(
            "champion_version_id", sa.String(length=40), sa.ForeignKey("model_versions.id"), nullable=False
        ),
        sa.Column(
            "previous_version_id", sa.String(length=40), sa.ForeignKey("model_versions.id"), nullable=False
        ),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("min_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("min_labels", sa.Integer(), nullable=False),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("q_harm", sa.Float(), nullable=False),
        sa.Column("theta_hat", sa.Float(), nullable=False),
        sa.Column("guard_config", sa.JSON(), nullable=False),
        sa.Column("guard_state", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("last_look_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_post_promotion_watches")),
        sa.CheckConstraint(
            "status IN ('watching', 'kept', 'rolled_back', 'superseded', 'expired')",
            name=op.f("ck_post_promotion_watches_status_known"),
        ),
    )
    op.create_index(
        "ix_post_promotion_watches_tenant_model_status", TABLE, ["tenant_id", "model_name", "status"]
    )
    if op.get_bind().dialect.name == "postgresql":
        fence_table(op.execute, TABLE)


def downgrade() -> None:
    op.drop_index("ix_post_promotion_watches_tenant_model_status", table_name=TABLE)
    op.drop_table(TABLE)

"""circuit breaker, quota overrides and retention state

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 12:00:00.000000

Reserved in sequence so that parallel work keeps one linear history; filled in by its owner.

``circuit_breakers``: one row per tenant with its streak of consecutive technical retraining failures and whether
retraining is disabled (``open``) until an admin resets it. It carries ``tenant_id``, so migration 0006 fences it
with the tenant row-level security policy on PostgreSQL like every other tenant table. Quota raises need no new
column (they change ``tenants.gpu_hours_quota`` / ``budget_cap_usd``, audited).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "circuit_breakers",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_by_run", sa.String(length=100), nullable=True),
        sa.Column("last_run_id", sa.String(length=100), nullable=True),
        sa.Column("last_outcome", sa.String(length=32), nullable=True),
        sa.Column("last_failure_reason", sa.String(length=500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('closed', 'open')", name=op.f("ck_circuit_breakers_state_known")),
        sa.CheckConstraint(
            "consecutive_failures >= 0", name=op.f("ck_circuit_breakers_failures_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_circuit_breakers_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_circuit_breakers")),
    )


def downgrade() -> None:
    op.drop_table("circuit_breakers")

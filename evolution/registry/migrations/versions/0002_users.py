"""users and their per-tenant roles

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_username"), ["username"], unique=True)

    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        # "system" is never a person's role: the database refuses it even if a caller skips the service.
        sa.CheckConstraint(
            "role IN ('viewer', 'manager', 'admin')", name=op.f("ck_user_roles_role_is_human")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_user_roles_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", "tenant_id", name=op.f("pk_user_roles")),
    )
    with op.batch_alter_table("user_roles", schema=None) as batch_op:
        batch_op.create_index("ix_user_roles_tenant", ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("user_roles", schema=None) as batch_op:
        batch_op.drop_index("ix_user_roles_tenant")
    op.drop_table("user_roles")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_username"))
    op.drop_table("users")

"""at most one SHADOW per tenant and model

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 22:30:00.000000

The database already keeps one CHAMPION and one CANARY per tenant and model; a second SHADOW could only be a
candidate a retraining terminated from outside left behind (the stranded-candidate reconciler now fails those), and
serving would shadow-score both. A database that holds two is refused with the versions named, rather than changed
behind the audit trail's back: `evolution status --tenant T` reconciles stranded candidates, then migrate again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_model_versions_one_shadow"


def upgrade() -> None:
    doubled = op.get_bind().execute(
        sa.text(
            "SELECT tenant_id, model_name, COUNT(*) FROM model_versions WHERE state = 'SHADOW' "
            "GROUP BY tenant_id, model_name HAVING COUNT(*) > 1"
        )
    ).all()
    if doubled:
        named = ", ".join(f"{tenant}/{model} ({count} in SHADOW)" for tenant, model, count in doubled)
        raise RuntimeError(
            f"cannot keep one SHADOW per model: {named}; run `evolution status --tenant <tenant>` for each (it fails "
            "the candidates of retrainings that ended from outside), then `evolution db upgrade` again"
        )
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.create_index(
            INDEX,
            ["tenant_id", "model_name"],
            unique=True,
            sqlite_where=sa.text("state = 'SHADOW'"),
            postgresql_where=sa.text("state = 'SHADOW'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.drop_index(INDEX, sqlite_where=sa.text("state = 'SHADOW'"), postgresql_where=sa.text("state = 'SHADOW'"))

"""per-source event sequence numbers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:00:00.000000

Each source key keeps the highest event sequence accepted from it, so that a replayed or out-of-order event
(same source, sequence not above the last one) is refused as stale. NULL: the source never sent a sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("source_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_sequence", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("source_keys", schema=None) as batch_op:
        batch_op.drop_column("last_sequence")

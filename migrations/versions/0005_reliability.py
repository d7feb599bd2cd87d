"""circuit breaker, quota overrides and retention state

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 12:00:00.000000

Reserved in sequence so that parallel work keeps one linear history; filled in by its owner.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

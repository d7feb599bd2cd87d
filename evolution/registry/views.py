"""Read models the registry hands out: its rows turned into plain pydantic (the version record is the lifecycle's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from evolution.lifecycle import ModelState, VersionView
from evolution.registry.schema import AuditEntry, ModelVersion
from evolution.timeutil import as_utc


def version_view(row: ModelVersion) -> VersionView:
    return VersionView(
        id=row.id,
        tenant_id=row.tenant_id,
        model_name=row.model_name,
        number=row.number,
        state=ModelState(row.state),
        lock_version=row.lock_version,
        parent_id=row.parent_id,
        dataset_snapshot_id=row.dataset_snapshot_id,
        model_hash=row.model_hash,
        manifest=row.manifest,
        metrics=dict(row.metrics or {}),
        was_champion=row.was_champion,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


class AuditView(BaseModel):
    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    subject_type: str
    subject_id: str
    from_state: str | None
    to_state: str | None
    request_id: str | None
    details: dict[str, Any]
    entry_hash: str

    @classmethod
    def of(cls, row: AuditEntry) -> AuditView:
        return cls(
            seq=row.seq,
            at=as_utc(row.at),
            actor=row.actor,
            role=row.role,
            action=row.action,
            subject_type=row.subject_type,
            subject_id=row.subject_id,
            from_state=row.from_state,
            to_state=row.to_state,
            request_id=row.request_id,
            details=dict(row.details or {}),
            entry_hash=row.entry_hash,
        )

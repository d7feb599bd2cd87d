"""The two questions that cross tenants: which tenants exist, and which tenant owns a model version.

Under PostgreSQL row-level security no session sees another tenant's rows, so these go through two narrow
``SECURITY DEFINER`` functions (migration 0006) that answer with ids only. The embedded SQLite registry has no
row-level security; there the service layer's checks are the only boundary, and these are plain queries.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from evolution.registry.schema import DatasetSnapshot, ModelVersion, Tenant

TENANT_IDS_FUNCTION = "evolution_tenant_ids"
VERSION_TENANT_FUNCTION = "evolution_version_tenant"
SNAPSHOT_TENANT_FUNCTION = "evolution_snapshot_tenant"


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def tenant_ids_visible(factory: sessionmaker[Session]) -> list[str]:
    """Every tenant's id, sorted."""
    with factory() as session:
        if _postgres(session):
            return list(session.scalars(text(f"SELECT id FROM {TENANT_IDS_FUNCTION}() AS id ORDER BY id")))
        return list(session.scalars(select(Tenant.id).order_by(Tenant.id)))


def tenant_of_version(factory: sessionmaker[Session], version_id: str) -> str | None:
    """The tenant that owns ``version_id``, or None; callers authorise against it before reading the version."""
    with factory() as session:
        if _postgres(session):
            return session.scalar(text(f"SELECT {VERSION_TENANT_FUNCTION}(:id)"), {"id": version_id})
        return session.scalar(select(ModelVersion.tenant_id).where(ModelVersion.id == version_id))


def tenant_of_snapshot(factory: sessionmaker[Session], snapshot_id: str) -> str | None:
    """The tenant that owns dataset snapshot ``snapshot_id``, or None."""
    with factory() as session:
        if _postgres(session):
            return session.scalar(text(f"SELECT {SNAPSHOT_TENANT_FUNCTION}(:id)"), {"id": snapshot_id})
        return session.scalar(select(DatasetSnapshot.tenant_id).where(DatasetSnapshot.id == snapshot_id))

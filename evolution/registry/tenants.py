"""TenantService: tenants, their settings and their quota limits, each change audited in its own transaction."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import InvalidInput, NotFound
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.quota import check_limit
from evolution.registry.schema import Tenant
from evolution.registry.tenancy import tenant_ids_visible
from evolution.registry.tenant_settings import TenantSettings
from evolution.security import Action, Principal, authorize
from evolution.timeutil import utcnow

TENANT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID_PATTERN.match(tenant_id):
        raise InvalidInput(f"tenant id {tenant_id!r}: use 1-63 lowercase letters, digits, '-' or '_'")
    return tenant_id


class TenantService:
    def __init__(self, factory: sessionmaker[Session], clock: Callable[[], datetime] = utcnow) -> None:
        self._factory = factory
        self._clock = clock

    def ensure_tenant(
        self,
        principal: Principal,
        tenant_id: str,
        name: str | None = None,
        gpu_hours_quota: float = 100.0,
        budget_cap_usd: float = 500.0,
        config: dict[str, Any] | None = None,
    ) -> bool:
        """Create the tenant if it does not exist; returns True when it was created."""
        check_tenant_id(tenant_id)
        authorize(principal, Action.MANAGE_TENANT, tenant_id)
        with transaction(self._factory, tenant_id) as session:
            if session.get(Tenant, tenant_id) is not None:
                return False
            session.add(
                Tenant(
                    id=tenant_id,
                    name=name or tenant_id,
                    created_at=self._clock(),
                    gpu_hours_quota=gpu_hours_quota,
                    budget_cap_usd=budget_cap_usd,
                    config=config or {},
                )
            )
            session.flush()
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="tenant.created",
                subject_type="tenant",
                subject_id=tenant_id,
                at=self._clock(),
                details={"gpu_hours_quota": gpu_hours_quota, "budget_cap_usd": budget_cap_usd},
            )
            return True

    def tenant_settings(self, principal: Principal, tenant_id: str) -> TenantSettings:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
            return TenantSettings.parse(tenant.config)

    def configure_tenant(self, principal: Principal, tenant_id: str, patch: dict[str, Any]) -> TenantSettings:
        """Admin: change a tenant's settings (validated, audited with the old and new values)."""
        authorize(principal, Action.MANAGE_TENANT, tenant_id)
        with transaction(self._factory, tenant_id) as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
            before = TenantSettings.parse(tenant.config)
            after = before.merged(patch)
            tenant.config = after.model_dump(mode="json")
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="tenant.configured",
                subject_type="tenant",
                subject_id=tenant_id,
                at=self._clock(),
                details={"before": before.model_dump(mode="json"), "after": tenant.config},
            )
            return after

    def set_quota(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        gpu_hours_quota: float | None = None,
        budget_cap_usd: float | None = None,
        reason: str = "",
    ) -> dict[str, float]:
        """Admin: change a tenant's monthly GPU-hours quota and/or budget cap (audited with old and new values).

        Returns the limits now in force. A negative, NaN or infinite value is refused and nothing changes.
        """
        authorize(principal, Action.SET_QUOTA, tenant_id)
        if gpu_hours_quota is None and budget_cap_usd is None:
            raise InvalidInput("nothing to change: give a GPU-hours quota, a budget cap, or both")
        if gpu_hours_quota is not None:
            gpu_hours_quota = check_limit("GPU-hours quota", gpu_hours_quota)
        if budget_cap_usd is not None:
            budget_cap_usd = check_limit("budget cap (USD)", budget_cap_usd)
        if len(reason) > 500:
            raise InvalidInput("reason: at most 500 characters")
        with transaction(self._factory, tenant_id) as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
            before = {"gpu_hours_quota": tenant.gpu_hours_quota, "budget_cap_usd": tenant.budget_cap_usd}
            if gpu_hours_quota is not None:
                tenant.gpu_hours_quota = gpu_hours_quota
            if budget_cap_usd is not None:
                tenant.budget_cap_usd = budget_cap_usd
            after = {"gpu_hours_quota": tenant.gpu_hours_quota, "budget_cap_usd": tenant.budget_cap_usd}
            session.flush()
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="tenant.quota_set",
                subject_type="tenant",
                subject_id=tenant_id,
                at=self._clock(),
                details={"before": before, "after": after, "reason": reason},
            )
            return after

    def tenant_ids(self) -> list[str]:
        """Every tenant's id (only the ids: under row-level security no session sees other tenants' rows)."""
        return tenant_ids_visible(self._factory)

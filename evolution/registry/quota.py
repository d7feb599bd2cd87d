"""QuotaManager: GPU-hours and budget per tenant per calendar month, checked before and charged after a run.

A run is charged from its measured wall time: GPU-hours = hours x the GPUs it held (a CPU-only run, e.g. the
embedded local backend, counts ``cpu_gpu_hour_factor`` GPU-hours per hour), and its cost = GPU-hours x the
configured price per GPU-hour. Reaching either monthly limit blocks retraining with the reason BLOCK_RETRAINING.
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import InvalidInput, NotFound, QuotaExceeded
from evolution.observability import metrics
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import Tenant, TrainingRun
from evolution.security import Action, Principal, authorize
from evolution.timeutil import utcnow

BLOCK_RETRAINING = "BLOCK_RETRAINING"
# The embedded backend trains on CPU; a CPU-hour is charged as this fraction of a GPU-hour, at this price.
CPU_TO_GPU_HOUR = 0.25
PRICE_PER_GPU_HOUR_USD = 2.5


class QuotaStatus(BaseModel):
    tenant_id: str
    month: str
    gpu_hours_used: float
    gpu_hours_quota: float
    cost_usd: float
    budget_cap_usd: float

    @property
    def blocked_reason(self) -> str | None:
        if self.gpu_hours_used >= self.gpu_hours_quota:
            return f"{BLOCK_RETRAINING}: {self.gpu_hours_used:.2f} of {self.gpu_hours_quota:.2f} GPU-hours used in {self.month}"
        if self.cost_usd >= self.budget_cap_usd:
            return f"{BLOCK_RETRAINING}: ${self.cost_usd:.2f} of the ${self.budget_cap_usd:.2f} budget spent in {self.month}"
        return None


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def check_limit(name: str, value: float) -> float:
    """An admin-entered limit or price: a clear error for a negative, NaN or infinite value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{name}: {value!r} is not a finite, non-negative number")
    return float(value)


def gpu_hours_of(duration_s: float, gpus: int, cpu_gpu_hour_factor: float = CPU_TO_GPU_HOUR) -> float:
    """GPU-hours a run of ``duration_s`` seconds used: wall hours x GPUs (CPU-only: x the CPU factor)."""
    hours = duration_s / 3600.0
    return hours * gpus if gpus else hours * cpu_gpu_hour_factor


class QuotaManager:
    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        price_per_gpu_hour_usd: float = PRICE_PER_GPU_HOUR_USD,
        cpu_gpu_hour_factor: float = CPU_TO_GPU_HOUR,
    ) -> None:
        self._factory = factory
        self.price_per_gpu_hour_usd = check_limit("price per GPU-hour (USD)", price_per_gpu_hour_usd)
        self.cpu_gpu_hour_factor = check_limit("CPU-hour to GPU-hour factor", cpu_gpu_hour_factor)

    def status(self, principal: Principal, tenant_id: str, now: datetime | None = None) -> QuotaStatus:
        authorize(principal, Action.VIEW, tenant_id)
        now = now or utcnow()
        with reading(self._factory, tenant_id) as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
            used, cost = session.execute(
                select(
                    func.coalesce(func.sum(TrainingRun.gpu_hours), 0.0),
                    func.coalesce(func.sum(TrainingRun.cost_usd), 0.0),
                ).where(TrainingRun.tenant_id == tenant_id, TrainingRun.started_at >= month_start(now))
            ).one()
            metrics.QUOTA_GPU_HOURS.labels(tenant_id).set(float(used))
            metrics.QUOTA_GPU_HOURS_LIMIT.labels(tenant_id).set(tenant.gpu_hours_quota)
            return QuotaStatus(
                tenant_id=tenant_id,
                month=now.strftime("%Y-%m"),
                gpu_hours_used=float(used),
                gpu_hours_quota=tenant.gpu_hours_quota,
                cost_usd=float(cost),
                budget_cap_usd=tenant.budget_cap_usd,
            )

    def check(self, principal: Principal, tenant_id: str) -> QuotaStatus:
        """Raise QuotaExceeded (BLOCK_RETRAINING) when either limit is reached."""
        status = self.status(principal, tenant_id)
        reason = status.blocked_reason
        if reason:
            raise QuotaExceeded(reason)
        return status

    def charge(
        self,
        principal: Principal,
        tenant_id: str,
        run_id: str,
        version_id: str,
        started_at: datetime,
        duration_s: float,
        outcome: str,
        gpus: int = 0,
    ) -> TrainingRun:
        """Charge a finished run from its measured duration (idempotent by run id: one id per compute job)."""
        authorize(principal, Action.RECORD_USAGE, tenant_id)
        if not run_id or len(run_id) > 60:
            raise InvalidInput(f"training run id {run_id!r}: 1-60 characters")
        check_limit("run duration (s)", duration_s)
        if gpus < 0:
            raise InvalidInput(f"gpus: {gpus} is negative")
        gpu_hours = gpu_hours_of(duration_s, gpus, self.cpu_gpu_hour_factor)
        with transaction(self._factory, tenant_id) as session:
            existing = session.get(TrainingRun, run_id)
            if existing is not None:
                return existing
            run = TrainingRun(
                id=run_id,
                tenant_id=tenant_id,
                model_version_id=version_id,
                started_at=started_at,
                duration_s=duration_s,
                gpu_hours=gpu_hours,
                cost_usd=gpu_hours * self.price_per_gpu_hour_usd,
                outcome=outcome[:16],
            )
            session.add(run)
            metrics.QUOTA_GPU_HOURS.labels(tenant_id).inc(gpu_hours)
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="quota.charged",
                subject_type="training_run",
                subject_id=run_id,
                at=utcnow(),
                details={
                    "duration_s": round(duration_s, 3),
                    "gpus": gpus,
                    "gpu_hours": round(gpu_hours, 6),
                    "cost_usd": round(run.cost_usd, 4),
                    "price_per_gpu_hour_usd": self.price_per_gpu_hour_usd,
                    "outcome": outcome,
                },
            )
            return run

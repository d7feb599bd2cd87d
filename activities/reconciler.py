"""The stranded-candidate reconciler as an activity: the drift scan and each retraining run it first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import ReconcileIn, ReconcileOut

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.registry.stranded import CandidateReconciler, RunLiveness


class ReconcilerActivities:
    def __init__(self, reconciler: CandidateReconciler, liveness: RunLiveness) -> None:
        self._reconciler = reconciler
        self._liveness = liveness

    @activity.defn(name="reconcile_candidates")
    @domain_errors_are_final
    @heartbeats
    async def reconcile_candidates(self, inp: ReconcileIn) -> ReconcileOut:
        failed = await self._reconciler.reconcile(inp.tenant_id, self._liveness, except_run=inp.except_run)
        return ReconcileOut(failed=[v.id for v in failed])

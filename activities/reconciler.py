"""The reconcilers as activities: the drift scan and each retraining fail stranded candidates first, and the drift
scan names the post-promotion watches whose workflow ended from outside so it can start them again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.canary.watch_models import StrandedWatchesIn, StrandedWatchesOut
from evolution.contracts import ReconcileIn, ReconcileOut

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.canary.watch_resume import StrandedWatches
    from evolution.registry.stranded import CandidateReconciler, RunLiveness


class ReconcilerActivities:
    def __init__(
        self, reconciler: CandidateReconciler, watches: StrandedWatches, liveness: RunLiveness
    ) -> None:
        self._reconciler = reconciler
        self._watches = watches
        self._liveness = liveness

    @activity.defn(name="reconcile_candidates")
    @domain_errors_are_final
    @heartbeats
    async def reconcile_candidates(self, inp: ReconcileIn) -> ReconcileOut:
        failed = await self._reconciler.reconcile(inp.tenant_id, self._liveness, except_run=inp.except_run)
        return ReconcileOut(failed=[v.id for v in failed])

    @activity.defn(name="stranded_watches")
    @domain_errors_are_final
    @heartbeats
    async def stranded_watches(self, inp: StrandedWatchesIn) -> StrandedWatchesOut:
        return StrandedWatchesOut(resume=await self._watches.find(inp.tenant_id, self._liveness))

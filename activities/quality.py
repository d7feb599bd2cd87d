"""The data-quality hold as an activity: may a retraining started by drift on a window train yet?"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import HoldCheckIn, HoldCheckOut
from evolution.security import Principal

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.data.quality_holds import SnapshotHolds


class QualityHoldActivities:
    def __init__(self, holds: SnapshotHolds) -> None:
        self._holds = holds

    @activity.defn(name="check_quality_hold")
    @domain_errors_are_final
    @heartbeats
    def check_quality_hold(self, inp: HoldCheckIn) -> HoldCheckOut:
        """The held windows among the drift's window and the latest one (the one training would read)."""
        tenant = inp.tenant_id
        waiting = self._holds.waiting_on(Principal.system(tenant), tenant, [inp.snapshot_id, None])
        if not waiting:
            return HoldCheckOut()
        parts = [f"window {w.snapshot_id} ({'; '.join(w.checks)[:200]})" for w in waiting]
        accept = " and ".join(
            f"evolution snapshot accept {tenant} {w.snapshot_id} --reason '...'" for w in waiting
        )
        return HoldCheckOut(
            held=[w.snapshot_id for w in waiting],
            reason=f"data-quality alerts hold {', '.join(parts)}: an admin must accept it before training "
            f"({accept})",
        )

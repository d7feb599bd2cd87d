"""Shadow and canary looks."""

from __future__ import annotations

from temporalio import activity

from activities.errors import domain_errors_are_final
from evolution.canary_service import CanaryService
from evolution.contracts import LookIn, LookOut, PairsIn, ShadowOut


class CanaryActivities:
    def __init__(self, canary: CanaryService) -> None:
        self._canary = canary

    @activity.defn(name="collect_shadow")
    @domain_errors_are_final
    def collect_shadow(self, inp: PairsIn) -> ShadowOut:
        return self._canary.collect_shadow(inp.tenant_id, inp.candidate_version_id, inp.min_pairs)

    @activity.defn(name="canary_look")
    @domain_errors_are_final
    def canary_look(self, inp: LookIn) -> LookOut:
        return self._canary.look(
            inp.tenant_id,
            inp.candidate_version_id,
            inp.cursor,
            inp.config,
            inp.state,
            inp.elapsed_s,
            inp.window_s,
        )

"""Shadow and canary looks: each is traced as the candidate's "Serving" stage, in the retraining's trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import LookIn, LookOut, PairsIn, ShadowOut
from evolution.observability.tracing import span

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.canary.service import CanaryService


class CanaryActivities:
    def __init__(self, canary: CanaryService) -> None:
        self._canary = canary

    @activity.defn(name="collect_shadow")
    @domain_errors_are_final
    @heartbeats
    def collect_shadow(self, inp: PairsIn) -> ShadowOut:
        with span(
            "Serving",
            tenant=inp.tenant_id,
            model=inp.model_name,
            version_id=inp.candidate_version_id,
            role="shadow",
        ):
            return self._canary.collect_shadow(inp.tenant_id, inp.candidate_version_id, inp.min_pairs)

    @activity.defn(name="canary_look")
    @domain_errors_are_final
    @heartbeats
    def canary_look(self, inp: LookIn) -> LookOut:
        with span(
            "Serving",
            tenant=inp.tenant_id,
            model=inp.model_name,
            version_id=inp.candidate_version_id,
            role="canary",
        ):
            return self._canary.look(
                inp.tenant_id,
                inp.model_name,
                inp.candidate_version_id,
                inp.cursor,
                inp.config,
                inp.state,
                inp.elapsed_s,
                inp.window_s,
            )

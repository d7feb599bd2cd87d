"""Training and validation activities: both heartbeat while they run (activities/heartbeat.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeating_async, heartbeats, marks_heartbeats
from evolution.contracts import TrainIn, TrainOut, ValidateIn, ValidateOut
from evolution.observability.tracing import span

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.training.candidates import CandidateBuilder


class TrainingActivities:
    def __init__(self, builder: CandidateBuilder) -> None:
        self._builder = builder

    @activity.defn(name="train_candidate")
    @domain_errors_are_final
    @marks_heartbeats
    async def train_candidate(self, inp: TrainIn) -> TrainOut:
        # Cancellation (including the 24 h SLO timeout) reaches the compute backend, which kills the job.
        # The span is a child of this activity's RunActivity span, hence in the retraining workflow's trace.
        # The builder reports the slot wait and the job's progress through the beat; the side beats cover the
        # steps around the job (reading the snapshot, signing the model), which report nothing.
        with span("Training", tenant=inp.tenant_id, model=inp.model_name, version_id=inp.version_id):
            async with heartbeating_async("training") as beat:
                return await self._builder.train(
                    inp.tenant_id,
                    inp.model_name,
                    inp.version_id,
                    inp.seed,
                    inp.run_id,
                    heartbeat=beat,
                    attempt=activity.info().attempt,
                )

    @activity.defn(name="validate_candidate")
    @domain_errors_are_final
    @heartbeats
    async def validate_candidate(self, inp: ValidateIn) -> ValidateOut:
        with span(
            "Validation", tenant=inp.tenant_id, model=inp.model_name, version_id=inp.candidate_version_id
        ):
            return await asyncio.to_thread(
                self._builder.validate,
                inp.tenant_id,
                inp.model_name,
                inp.candidate_version_id,
                inp.signed_manifest,
                inp.model_hash,
            )

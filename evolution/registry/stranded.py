"""Stranded candidates: a version a retraining left in a working state when its run ended without a decision.

A retraining terminated, reset or timed out from outside (the Temporal CLI or Web UI) never runs its own clean-up,
so its candidate would stay in TRAINING, SHADOW or CANARY for ever: served in shadow or canary, and blocking the
next candidate (the database keeps one SHADOW and one CANARY per tenant and model). The run that owns a candidate
is named by the request id it registered the version with (``retrain/{tenant}/{run id}/register``);
:meth:`CandidateReconciler.reconcile` asks the workflow engine whether that run is still open and, when it is not,
moves the version to FAILED with the reason "retraining ended without a decision", audited. Versions registered any
other way (by hand, by tests) have no owning run and are left alone. The drift scan and each retraining run it
first; ``evolution status`` runs it too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol

from evolution.lifecycle import ModelState, TransitionRequest, VersionView
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal

log = logging.getLogger(__name__)

STRANDED_REASON = "retraining ended without a decision"
WORKING_STATES = (
    ModelState.DRAFT,
    ModelState.TRAINING,
    ModelState.VALIDATED,
    ModelState.SHADOW,
    ModelState.CANARY,
)
_REGISTERED_BY_RUN = re.compile(r"^(?P<workflow>retrain/[^/]+)/(?P<run>[^/]+)/register$")


class RunLiveness(Protocol):
    """Port: whether a workflow run is still open (the Temporal adapter is workers/orchestrator.py); ``run_id`` None
    asks about the id's latest run (a workflow that continues as new changes runs but stays open)."""

    async def run_is_open(self, workflow_id: str, run_id: str | None) -> bool: ...


@dataclass(frozen=True)
class OwnedCandidate:
    version: VersionView
    workflow_id: str
    run_id: str


class CandidateReconciler:
    def __init__(self, registry: ModelRegistryService) -> None:
        self._registry = registry

    def owned_candidates(self, tenant_id: str) -> list[OwnedCandidate]:
        """Every version of the tenant in a working state, with the retraining run that registered it."""
        system = Principal.system(tenant_id, "reconciler")
        working = [v for v in self._registry.list_versions(system, tenant_id) if v.state in WORKING_STATES]
        owned = []
        for version in working:  # a handful at most: one retraining per tenant runs at a time
            for entry in self._registry.audit_trail(system, tenant_id, subject_id=version.id):
                found = entry.action == "version.registered" and _REGISTERED_BY_RUN.match(
                    entry.request_id or ""
                )
                if found:
                    owned.append(OwnedCandidate(version, found["workflow"], found["run"]))
        return owned

    async def reconcile(
        self, tenant_id: str, liveness: RunLiveness, *, except_run: str | None = None
    ) -> list[VersionView]:
        """Fail every candidate whose run has ended; returns the versions failed (``except_run``: the caller's own)."""
        failed = []
        for owned in self.owned_candidates(tenant_id):
            if owned.run_id == except_run or await liveness.run_is_open(owned.workflow_id, owned.run_id):
                continue
            version = owned.version
            result = self._registry.transition(
                Principal.system(tenant_id, "reconciler"),
                TransitionRequest(
                    version_id=version.id,
                    to_state=ModelState.FAILED,
                    expected_version=version.lock_version,
                    request_id=f"reconcile/{version.id}",
                    reason=STRANDED_REASON,
                    details={
                        "workflow_id": owned.workflow_id,
                        "run_id": owned.run_id,
                        "was": version.state.value,
                    },
                ),
            )
            log.warning(
                "candidate v%d (%s) was left in %s by %s run %s: failed",
                version.number,
                version.id,
                version.state.value,
                owned.workflow_id,
                owned.run_id,
                extra={"tenantId": tenant_id},
            )
            failed.append(result.version)
        return failed

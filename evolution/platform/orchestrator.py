"""The orchestration port: what the CLI, the demo and the dashboard ask of the workflow engine.

The Temporal adapter lives in ``workers/orchestrator.py`` and is found through the ``evolution.orchestrators`` entry
point, so that ``evolution`` itself never imports Temporal.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol

from evolution.contracts import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    DriftScanInput,
    DriftScanResult,
    RetrainingInput,
    RetrainingResult,
    RetrainingStatus,
)
from evolution.errors import EvolutionError
from evolution.governance.approval_tickets import ApprovalTickets
from evolution.platform.settings import Settings
from evolution.security import Action, Principal, authorize


class RetrainingAlreadyRunning(EvolutionError):
    """``retrain/{tenant}`` is the per-tenant mutex: a second start while one runs is refused."""

    error_type = "RetrainingAlreadyRunning"


class OrchestratorUnavailable(EvolutionError):
    """The workflow engine cannot be reached."""

    error_type = "OrchestratorUnavailable"


_connected = False


def orchestrator_was_used() -> bool:
    """True once this process has connected to the workflow engine (the CLI exits differently then)."""
    return _connected


class Orchestrator(Protocol):
    async def ensure_drift_schedule(self, scan: DriftScanInput, interval_s: float) -> str:
        """Create the tenant's ``drift-scan/{tenant}`` schedule, or give the existing one this scan and interval
        (its paused state kept); returns its id."""
        ...

    async def ensure_gc_schedule(self, tenant_id: str) -> str:
        """Create the tenant's daily ``gc/{tenant}`` retention schedule if it does not exist; returns its id."""
        ...

    async def ensure_escalation_schedule(self) -> str:
        """Create the installation's ``notify-escalations`` schedule if it does not exist; returns its id."""
        ...

    async def trigger_drift_scan(self, tenant_id: str) -> None: ...

    async def run_drift_scan(self, scan: DriftScanInput) -> DriftScanResult: ...

    async def start_retraining(self, request: RetrainingInput) -> str: ...

    async def retraining_status(self, tenant_id: str) -> RetrainingStatus | None: ...

    async def retraining_result(self, tenant_id: str) -> RetrainingResult: ...

    async def send_approval(self, tenant_id: str, request: ApprovalRequest) -> ApprovalResponse: ...

    async def run_is_open(self, workflow_id: str, run_id: str | None) -> bool:
        """Whether that workflow run (None: the id's latest) still runs (the reconcilers' question)."""
        ...

    async def close(self) -> None: ...


async def connect_orchestrator(settings: Settings, name: str = "temporal") -> Orchestrator:
    """Load the named adapter from the ``evolution.orchestrators`` entry points and connect it."""
    found = [ep for ep in entry_points(group="evolution.orchestrators") if ep.name == name]
    if not found:
        raise EvolutionError(f"no orchestrator adapter named {name!r} is installed (reinstall the package)")
    global _connected
    factory = found[0].load()
    _connected = True
    return await factory(settings)  # type: ignore[no-any-return]


class RetrainingStarter(Protocol):
    async def start_retraining(self, request: RetrainingInput) -> str: ...


class ApprovalSender(Protocol):
    async def retraining_status(self, tenant_id: str) -> RetrainingStatus | None: ...

    async def send_approval(self, tenant_id: str, request: ApprovalRequest) -> ApprovalResponse: ...


async def decide_as(
    principal: Principal | None,
    orchestrator: ApprovalSender,
    tickets: ApprovalTickets,
    tenant_id: str,
    decision: ApprovalDecision,
    reason: str = "",
    model_name: str | None = None,
) -> ApprovalResponse:
    """Approve or reject the candidate waiting, on a principal's behalf: the service layer issues a signed ticket for
    the principal (checking the permission table) and the workflow decides only on that ticket."""
    status = await orchestrator.retraining_status(tenant_id)
    ticket = tickets.ticket_for(principal, tenant_id, status, decision, reason, model_name)
    return await orchestrator.send_approval(tenant_id, ApprovalRequest.of(ticket))


async def start_retraining_as(
    principal: Principal | None, orchestrator: RetrainingStarter, request: RetrainingInput
) -> str:
    """Start a retraining on a principal's behalf: the permission table is checked here, before the engine is asked."""
    authorize(principal, Action.START_RETRAINING, request.tenant_id)
    return await orchestrator.start_retraining(request)

"""Deciding on a candidate as a person would: a ticket the service layer signs for them, sent by the update."""

from __future__ import annotations

from evolution.contracts import ApprovalDecision, ApprovalResponse
from evolution.platform.orchestrator import ApprovalSender, decide_as
from evolution.platform.wiring import Services
from evolution.security import Principal, Role


async def decide(
    services: Services,
    orchestrator: ApprovalSender,
    tenant: str,
    decision: ApprovalDecision = "approve",
    *,
    user: str = "maria",
    role: Role = Role.MANAGER,
    reason: str = "looks right",
) -> ApprovalResponse:
    person = Principal.for_tenant(user, role, tenant)
    return await decide_as(person, orchestrator, services.approval_tickets, tenant, decision, reason)

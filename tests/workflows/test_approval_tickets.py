"""Approvals that nobody can forge, sent the way an outsider would: through the raw Temporal client, by the
``approval`` update and by the ``approve``/``reject`` signals, as the Temporal CLI and Web UI send them.

Every forgery is refused with a reason, audited (``approval.refused``), notified, and counted in the status; the
candidate does not move. A ticket the service layer issued decides, by the update or by a signal, and the audit
row of the decision names the person the ticket names.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import (
    ApprovalRequest,
    ApprovalTicket,
    RetrainingInput,
    RetrainingStatus,
    RolloutTiming,
    TicketClaims,
    TicketSignature,
)
from evolution.demo.scenario import Scenario
from evolution.errors import PermissionDenied
from evolution.governance.approval_tickets import signed_bytes
from evolution.integrity.signing import LocalEd25519Signer, Signer
from evolution.lifecycle import ModelState
from evolution.notifications.outbox import OutboxNotifier
from evolution.platform.wiring import Services
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from tests.support.histories import replay_and_keep
from tests.support.scenario import seed_tenant
from tests.workflows.test_retraining_approval import wait_for_approval
from workers.orchestrator import TemporalOrchestrator
from workflows.retraining import retraining_workflow_id

SCENARIO = Scenario(tenant_id="acme", history_rows=1200)
TIMING = RolloutTiming(look_interval_s=0.5, approval_timeout_s=600)
WORKFLOW_ID = retraining_workflow_id("acme")
MANAGER = Principal.for_tenant("maria", Role.MANAGER, "acme")


def signed(signer: Signer, claims: TicketClaims) -> dict[str, Any]:
    signature = signer.sign(signed_bytes(claims))
    ticket = ApprovalTicket(
        claims=claims, signature=TicketSignature(**signature.model_dump(exclude_none=True))
    )
    return ticket.model_dump(mode="json")


def as_request(ticket: dict[str, Any]) -> dict[str, Any]:
    return {"ticket": ticket}


async def waiting_candidate(services: Services, orchestrator: TemporalOrchestrator) -> RetrainingStatus:
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=TIMING)
    )
    await wait_for_approval(orchestrator, "acme")
    status = await orchestrator.retraining_status("acme")
    assert status is not None and status.run_id and status.version_id
    return status


def genuine_claims(status: RetrainingStatus, **changes: Any) -> TicketClaims:
    """What the service would issue to maria (a manager) for this run and candidate, with ``changes`` applied."""
    now = utcnow()
    claims = {
        "tenant_id": "acme",
        "model_name": "yield",
        "workflow_id": WORKFLOW_ID,
        "run_id": status.run_id,
        "candidate_version_id": status.version_id,
        "decision": "approve",
        "user": "maria",
        "role": "manager",
        "reason": "looks right",
        "nonce": secrets.token_hex(16),
        "issued_at": now,
        "expires_at": now + timedelta(minutes=10),
        **changes,
    }
    return TicketClaims.model_validate(claims)


def forgeries(services: Services, status: RetrainingStatus, tmp_path: Path) -> dict[str, tuple[Any, str]]:
    """Each forgery: the request an outsider sends, and what the refusal must say."""
    signer = services.signer
    attacker = LocalEd25519Signer(tmp_path / "attacker-keys")
    tampered = signed(signer, genuine_claims(status, user="maria"))
    tampered["claims"]["user"] = "mallory"
    long_ago = utcnow() - timedelta(minutes=30)
    return {
        "claimed role": (
            {"decision": "approve", "user": "nobody-at-all", "role": "manager", "tenant_id": "acme"},
            "no approval ticket",
        ),
        "unknown user, own key": (
            as_request(signed(attacker, genuine_claims(status, user="nobody-at-all"))),
            "signature does not verify",
        ),
        "viewer": (as_request(signed(signer, genuine_claims(status, role="viewer"))), "may not approve"),
        "other tenant": (
            as_request(signed(signer, genuine_claims(status, tenant_id="globex"))),
            "for tenant 'globex'",
        ),
        "other run": (as_request(signed(signer, genuine_claims(status, run_id="an-older-run"))), "for run"),
        "other candidate": (
            as_request(signed(signer, genuine_claims(status, candidate_version_id="mv-another"))),
            "for candidate",
        ),
        "expired": (
            as_request(
                signed(
                    signer,
                    genuine_claims(status, issued_at=long_ago, expires_at=long_ago + timedelta(minutes=10)),
                )
            ),
            "expired",
        ),
        "bad signature": (as_request(tampered), "signature does not verify"),
        "malformed": ({"ticket": {"claims": "approve please"}}, "malformed ticket"),
    }


def refusals(services: Services) -> list[dict[str, Any]]:
    trail = services.registry.audit_trail(Principal.system("acme"), "acme")
    return [e.details for e in trail if e.action == "approval.refused"]


async def refusals_once_there_are(
    services: Services, count: int, timeout_s: float = 30
) -> list[dict[str, Any]]:
    """A signal has no answer: its refusal shows in the audit trail once the workflow has checked it."""
    for _ in range(int(timeout_s / 0.2)):
        found = refusals(services)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"expected {count} refusals in the audit trail, found {len(refusals(services))}")


async def test_forged_approvals_by_update_and_signal_are_refused_audited_and_move_nothing(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
) -> None:
    status = await waiting_candidate(services, orchestrator)
    client: Client = temporal_env.client
    handle = client.get_workflow_handle(WORKFLOW_ID)
    cases = forgeries(services, status, tmp_path)
    for name, (payload, reason) in cases.items():
        answer = await handle.execute_update("approval", payload, result_type=dict)
        assert answer["accepted"] is False and reason in answer["message"], (name, answer)
    # The same forgeries made afresh (a ticket counts once, even a refused one), sent as signals.
    for count, (name, (payload, reason)) in enumerate(forgeries(services, status, tmp_path).items(), 1):
        await handle.signal("approve", payload)
        audited = await refusals_once_there_are(services, len(cases) + count)
        assert reason in audited[-1]["reason"], (name, audited[-1])
        assert audited[-1]["channel"] == "approve", name
    expected = 2 * len(cases)

    now = await orchestrator.retraining_status("acme")
    assert now is not None and now.awaiting_approval and now.state == ModelState.CANARY.value
    assert now.refused_approvals == expected
    assert now.last_refusal and now.last_refusal.startswith("approve: ")
    assert services.registry.get_version(MANAGER, status.version_id or "").state == ModelState.CANARY
    claimed = [r for r in refusals(services) if r["claimed_user"] == "nobody-at-all"]
    assert {r["claimed_role"] for r in claimed} == {"manager"}
    notified = OutboxNotifier(services.factory).recent(
        "acme", limit=100
    )  # every notifier writes the outbox first
    assert sum(1 for n in notified if n["kind"] == "approval.refused") == expected

    # A genuine ticket decides; the same ticket again is a replay, refused and audited.
    ticket = services.approval_tickets.ticket_for(MANAGER, "acme", now, "approve", "first model")
    request = ApprovalRequest.of(ticket).model_dump(mode="json")
    await handle.signal("approve", request)
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "promoted" and result.final_state == "CHAMPION"
    promoted = services.registry.audit_trail(MANAGER, "acme", subject_id=status.version_id)[-1]
    assert (promoted.actor, promoted.role, promoted.to_state) == ("maria", "manager", "CHAMPION")


async def test_a_replayed_ticket_counts_once(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    status = await waiting_candidate(services, orchestrator)
    handle = temporal_env.client.get_workflow_handle(WORKFLOW_ID)
    ticket = services.approval_tickets.ticket_for(MANAGER, "acme", status, "reject", "not yet")
    request = ApprovalRequest.of(ticket).model_dump(mode="json")
    await handle.signal("approve", request)  # the wrong signal: refused, and the ticket is spent
    await refusals_once_there_are(services, 1)
    answer = await handle.execute_update("approval", request, result_type=dict)
    assert answer["accepted"] is False and "already used" in answer["message"], answer
    assert [r["reason"].split(":")[0] for r in refusals(services)] == [
        "a ticket to reject was sent as the 'approve' signal",
        "ticket " + ticket.claims.nonce[:8] + " was already used",
    ]
    assert services.registry.get_version(MANAGER, status.version_id or "").state == ModelState.CANARY
    fresh = services.approval_tickets.ticket_for(MANAGER, "acme", status, "reject", "not yet")
    await handle.signal("reject", ApprovalRequest.of(fresh).model_dump(mode="json"))
    assert (await orchestrator.retraining_result("acme")).outcome == "rejected"


async def test_one_ticket_sent_twice_at_once_decides_once_and_the_other_is_a_replay(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    status = await waiting_candidate(services, orchestrator)
    handle = temporal_env.client.get_workflow_handle(WORKFLOW_ID)
    ticket = services.approval_tickets.ticket_for(MANAGER, "acme", status, "approve", "ship it")
    request = ApprovalRequest.of(ticket).model_dump(mode="json")
    answers = await asyncio.gather(
        *(handle.execute_update("approval", request, result_type=dict) for _ in range(2))
    )
    accepted = [a for a in answers if a["accepted"]]
    refused = [a for a in answers if not a["accepted"]]
    assert len(accepted) == 1 and accepted[0]["final_state"] == "CHAMPION", answers
    assert len(refused) == 1 and "already used" in refused[0]["message"], answers
    assert [r["reason"].split(":")[0] for r in refusals(services)] == [
        "ticket " + ticket.claims.nonce[:8] + " was already used"
    ]
    assert (await orchestrator.retraining_result("acme")).outcome == "promoted"
    await replay_and_keep(await handle.fetch_history(), "retraining-ticket-checked-once")


async def test_a_signal_rejection_with_a_ticket_fails_the_candidate_and_names_the_manager(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    status = await waiting_candidate(services, orchestrator)
    ticket = services.approval_tickets.ticket_for(MANAGER, "acme", status, "reject", "holdout too small")
    handle = temporal_env.client.get_workflow_handle(WORKFLOW_ID, run_id=ticket.claims.run_id)
    await handle.signal("reject", ApprovalRequest.of(ticket).model_dump(mode="json"))
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "rejected" and result.final_state == "FAILED"
    rejected = services.registry.audit_trail(MANAGER, "acme", subject_id=status.version_id)[-1]
    assert (rejected.actor, rejected.role, rejected.to_state) == ("maria", "manager", "FAILED")
    assert "holdout too small" in result.reason
    assert refusals(services) == []
    await replay_and_keep(await handle.fetch_history(), "retraining-ticket-signal-rejected")


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SYSTEM])
async def test_the_service_issues_no_ticket_to_a_role_that_may_not_decide(
    services: Services, role: Role
) -> None:
    status = RetrainingStatus(
        awaiting_approval=True, workflow_id=WORKFLOW_ID, run_id="r", version_id="mv", model_name="yield"
    )
    with pytest.raises(PermissionDenied):
        services.approval_tickets.ticket_for(
            Principal.for_tenant("ana", role, "acme"), "acme", status, "approve"
        )

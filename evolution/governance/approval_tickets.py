"""Approval tickets: a decision on a candidate counts only when the system's signature vouches for who took it.

The service layer issues a ticket after it authenticated the person (the CLI's configured operator, a dashboard
sign-in) and checked the permission table. The ticket names the tenant, the model, the workflow run and the
candidate it decides, the decision, the person and role, a nonce and an expiry (minutes), and is signed by the
system's signer (the local key, or KMS in production) over the canonical JSON of those claims.

The retraining workflow hands every approval it receives, by the ``approval`` update or the ``approve``/``reject``
signals, to :meth:`ApprovalTickets.check` (through an activity). Anything but a ticket that verifies, names this run
and this candidate, is unexpired, unused and within its role's permissions is refused with the reason; every refusal
is audited (``approval.refused``) and raises a notification, and nothing about the candidate moves. Whoever holds the
Temporal namespace but not the signing key cannot approve.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.contracts import (
    ApprovalDecision,
    ApprovalTicket,
    PrincipalRef,
    RetrainingStatus,
    TicketCheckIn,
    TicketCheckOut,
    TicketClaims,
    TicketSignature,
)
from evolution.errors import IntegrityViolation, InvalidInput, NotFound, PermissionDenied
from evolution.integrity.signing import KeyRing, Signature, Signer
from evolution.notifications.port import NotificationIn, Notifier
from evolution.registry.audit import append_audit
from evolution.registry.db import transaction
from evolution.security import Action, Principal, Role, authorize
from evolution.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

TICKET_TTL = timedelta(minutes=10)
MAX_TICKET_TTL = timedelta(hours=1)
# A ticket issued by a machine whose clock runs a little ahead is still accepted.
CLOCK_SKEW = timedelta(minutes=2)
REFUSED = "approval.refused"
ACTION_OF: dict[str, Action] = {"approve": Action.APPROVE, "reject": Action.REJECT}


class TicketRefused(Exception):
    """Why an approval does not count (becomes the audited reason)."""


def signed_bytes(claims: TicketClaims) -> bytes:
    """What a ticket's signature covers: the canonical JSON of its claims."""
    return canonical_json(claims.model_dump(mode="json"))


class ApprovalTickets:
    def __init__(
        self,
        factory: sessionmaker[Session],
        signer: Signer,
        keyring: KeyRing,
        notifier: Notifier,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._factory = factory
        self._signer = signer
        self._keyring = keyring
        self._notifier = notifier
        self._clock = clock

    # ------------------------------------------------------------------ issuing
    def issue(
        self,
        principal: Principal | None,
        *,
        tenant_id: str,
        model_name: str,
        workflow_id: str,
        run_id: str,
        candidate_version_id: str,
        decision: ApprovalDecision,
        reason: str = "",
        ttl: timedelta = TICKET_TTL,
    ) -> ApprovalTicket:
        """A signed ticket for ``principal``'s decision, once the permission table allows it."""
        principal = authorize(principal, ACTION_OF[decision], tenant_id)
        if not timedelta(0) < ttl <= MAX_TICKET_TTL:
            raise InvalidInput(f"ticket lifetime: between 1 s and {MAX_TICKET_TTL}, not {ttl}")
        now = self._clock()
        try:
            claims = TicketClaims(
                tenant_id=tenant_id,
                model_name=model_name,
                workflow_id=workflow_id,
                run_id=run_id,
                candidate_version_id=candidate_version_id,
                decision=decision,
                user=principal.user,
                role=principal.role.value,
                reason=reason,
                nonce=secrets.token_hex(16),
                issued_at=now,
                expires_at=now + ttl,
            )
        except ValidationError as error:
            first = error.errors()[0]
            raise InvalidInput(f"ticket {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        signature = self._signer.sign(signed_bytes(claims))
        return ApprovalTicket(
            claims=claims, signature=TicketSignature(**signature.model_dump(exclude_none=True))
        )

    def ticket_for(
        self,
        principal: Principal | None,
        tenant_id: str,
        status: RetrainingStatus | None,
        decision: ApprovalDecision,
        reason: str = "",
        model_name: str | None = None,
    ) -> ApprovalTicket:
        """A ticket for the candidate that ``status`` (the tenant's live retraining) says waits for a decision."""
        if status is None or not status.awaiting_approval:
            raise NotFound(f"nothing of tenant {tenant_id!r} is waiting for approval")
        if not (status.workflow_id and status.run_id and status.version_id and status.model_name):
            raise NotFound(
                f"the retraining of tenant {tenant_id!r} predates approval tickets: it cannot be approved with one"
            )
        if model_name and model_name != status.model_name:
            raise InvalidInput(f"the candidate waiting is of model {status.model_name!r}, not {model_name!r}")
        return self.issue(
            principal,
            tenant_id=tenant_id,
            model_name=status.model_name,
            workflow_id=status.workflow_id,
            run_id=status.run_id,
            candidate_version_id=status.version_id,
            decision=decision,
            reason=reason,
        )

    # ------------------------------------------------------------------ checking
    def check(self, inp: TicketCheckIn) -> TicketCheckOut:
        """Accept the approval ``inp`` carries, or refuse it with the reason (audited and notified)."""
        claims: TicketClaims | None = None
        try:
            claims = self._verified_claims(inp)
            self._check_binding(inp, claims)
            principal = self._check_authority(claims)
        except TicketRefused as refused:
            self._record_refusal(inp, claims, str(refused))
            return TicketCheckOut(
                accepted=False,
                reason=str(refused),
                decision=claims.decision if claims else None,
                nonce=claims.nonce if claims else None,
            )
        log.info(
            "approval ticket accepted: %s by %s (%s)",
            claims.decision,
            claims.user,
            claims.role,
            extra={"tenantId": inp.tenant_id, "workflowId": inp.workflow_id},
        )
        return TicketCheckOut(
            accepted=True,
            reason=f"{claims.decision} by {claims.user} ({claims.role}), ticket {claims.nonce[:8]}",
            decision=claims.decision,
            approver=PrincipalRef(user=principal.user, role=principal.role.value, tenant_id=inp.tenant_id),
            nonce=claims.nonce,
            note=claims.reason,
        )

    def _verified_claims(self, inp: TicketCheckIn) -> TicketClaims:
        request = inp.request
        if request.ticket is None:
            claimed = f"{request.user or 'nobody'} ({request.role or 'no role'})"
            raise TicketRefused(
                f"no approval ticket: {claimed} is only a claim; a manager gets a signed ticket from "
                "`evolution approve`/`reject` (or --ticket-only) or the dashboard"
            )
        try:
            ticket = ApprovalTicket.model_validate(request.ticket)
        except ValidationError as error:
            first = error.errors()[0]
            raise TicketRefused(
                f"malformed ticket: {'.'.join(map(str, first['loc'])) or 'ticket'}: {first['msg']}"
            ) from None
        try:
            signature = Signature.model_validate(ticket.signature.model_dump(exclude_none=True))
            self._keyring.verify(signed_bytes(ticket.claims), signature)
        except (ValidationError, IntegrityViolation) as error:
            detail = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
            raise TicketRefused(f"the ticket's signature does not verify: {detail}") from None
        return ticket.claims

    def _check_binding(self, inp: TicketCheckIn, claims: TicketClaims) -> None:
        if claims.nonce in inp.used_nonces:
            raise TicketRefused(f"ticket {claims.nonce[:8]} was already used: a ticket counts once")
        expected = {
            "tenant": (claims.tenant_id, inp.tenant_id),
            "model": (claims.model_name, inp.model_name),
            "workflow": (claims.workflow_id, inp.workflow_id),
            "run": (claims.run_id, inp.run_id),
            "candidate": (claims.candidate_version_id, inp.candidate_version_id),
        }
        for what, (named, actual) in expected.items():
            if named != actual:
                raise TicketRefused(f"the ticket is for {what} {named!r}, not this {what} {actual!r}")
        if inp.channel != "update" and inp.channel != claims.decision:
            raise TicketRefused(f"a ticket to {claims.decision} was sent as the {inp.channel!r} signal")
        now = self._clock()
        issued, expires = as_utc(claims.issued_at), as_utc(claims.expires_at)
        if expires - issued > MAX_TICKET_TTL:
            raise TicketRefused(f"the ticket is valid for {expires - issued}, longer than {MAX_TICKET_TTL}")
        if issued > now + CLOCK_SKEW:
            raise TicketRefused(f"the ticket was issued in the future ({issued.isoformat()})")
        if now >= expires:
            raise TicketRefused(f"the ticket expired at {expires.isoformat()}")
        if not inp.waiting:
            raise TicketRefused("nothing is waiting for a decision: the candidate has not passed its canary")

    @staticmethod
    def _check_authority(claims: TicketClaims) -> Principal:
        try:
            principal = Principal.for_tenant(claims.user, Role(claims.role), claims.tenant_id)
            return authorize(principal, ACTION_OF[claims.decision], claims.tenant_id)
        except (ValueError, PermissionDenied):
            raise TicketRefused(f"role {claims.role!r} may not {claims.decision}") from None

    def _record_refusal(self, inp: TicketCheckIn, claims: TicketClaims | None, reason: str) -> None:
        request = inp.request
        details = {
            "channel": inp.channel,
            "reason": reason,
            "run_id": inp.run_id,
            "claimed_user": claims.user if claims else request.user,
            "claimed_role": claims.role if claims else request.role,
            "ticket_nonce": claims.nonce if claims else None,
        }
        with transaction(self._factory, inp.tenant_id) as session:
            append_audit(
                session,
                tenant_id=inp.tenant_id,
                principal=Principal.system(inp.tenant_id, "approvals"),
                action=REFUSED,
                subject_type="model_version" if inp.candidate_version_id else "workflow",
                subject_id=inp.candidate_version_id or inp.workflow_id,
                at=self._clock(),
                details=details,
            )
        self._notifier.notify(
            NotificationIn(
                tenant_id=inp.tenant_id,
                severity="warning",
                kind=REFUSED,
                subject=f"An approval sent by {inp.channel} to {inp.workflow_id} was refused: {reason}"[:300],
                body=details,
            )
        )
        log.warning(
            "approval refused: %s", reason, extra={"tenantId": inp.tenant_id, "workflowId": inp.workflow_id}
        )

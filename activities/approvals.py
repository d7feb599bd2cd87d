"""The approval-ticket check: every approval or rejection the retraining receives is verified (and every refusal
audited and notified) here, with the system's keys, which the workflow never sees."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import TicketCheckIn, TicketCheckOut

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.governance.approval_tickets import ApprovalTickets


class ApprovalActivities:
    def __init__(self, tickets: ApprovalTickets) -> None:
        self._tickets = tickets

    @activity.defn(name="check_approval_ticket")
    @domain_errors_are_final
    @heartbeats
    def check_approval_ticket(self, inp: TicketCheckIn) -> TicketCheckOut:
        return self._tickets.check(inp)

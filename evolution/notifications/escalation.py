"""Routing and escalation: which channels a notification reaches, and what is escalated when nobody acts.

Everything here is stateless. Routing depends on the message alone. Escalation reads the outbox: a request is
pending while no later row of its tenant resolves it, is due once it is older than the rule's threshold, and is
escalated once, because the escalation itself is written to the outbox (``escalation.<kind>``, with
``body.escalation_of`` naming the request's row) before anyone is told — the next run sees it and skips.

Scheduling is the caller's: run :meth:`FanOutNotifier.run_escalations` periodically (every 10-15 minutes) from one
place only, e.g. a Temporal schedule whose activity calls it, so two workers do not escalate the same row at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.notifications.config import EscalationConfig, EscalationRule, Route
from evolution.notifications.port import NotificationIn, Severity
from evolution.registry.db import reading
from evolution.registry.lineage_outbox import LINEAGE_KIND_PREFIX
from evolution.registry.schema import Notification
from evolution.registry.tenancy import tenant_ids_visible
from evolution.timeutil import as_utc

ESCALATION_PREFIX = "escalation."


def _matches(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


class Routing(BaseModel):
    """Where one notification goes besides the outbox (which always gets it)."""

    email: list[str] = Field(default_factory=list)
    webhook: bool = False

    @property
    def channels(self) -> list[str]:
        return (["email"] if self.email else []) + (["webhook"] if self.webhook else [])


class OutboxRow(BaseModel):
    """One row of the ``notifications`` table, as escalation reads it."""

    id: int
    tenant_id: str
    severity: str
    kind: str
    subject: str
    body: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class Escalation(BaseModel):
    """A pending request that has waited past a rule's threshold, and the message that escalates it."""

    rule: EscalationRule
    row: OutboxRow
    due_at: datetime

    def message(self) -> NotificationIn:
        hours = self.rule.after_hours
        return NotificationIn(
            tenant_id=self.row.tenant_id,
            severity=self.rule.severity,
            kind=(ESCALATION_PREFIX + self.row.kind)[:64],
            subject=f"Not acted on for {hours:g} h: {self.row.subject}"[:300],
            body={
                **{k: v for k, v in self.row.body.items() if k in ("model_name", "model", "version")},
                "escalation_of": self.row.id,
                "escalation_rule": self.rule.name,
                "original_kind": self.row.kind,
                "original_at": as_utc(self.row.created_at).isoformat(),
            },
        )

    def routing(self) -> Routing:
        return Routing(email=list(self.rule.recipients), webhook=self.rule.webhook)


class EscalationPolicy:
    """The routing and escalation rules of an :class:`EscalationConfig`.

    ``severity_recipients`` are the SMTP config's recipients per severity: they receive e-mail whenever a message's
    severity, or a matching route without its own recipients, calls for e-mail.
    """

    def __init__(
        self, config: EscalationConfig, severity_recipients: dict[Severity, list[str]] | None = None
    ) -> None:
        self._config = config
        self._recipients = severity_recipients or {}

    @property
    def config(self) -> EscalationConfig:
        return self._config

    def _route_matches(self, route: Route, message: NotificationIn) -> bool:
        return (
            _matches(message.kind, route.kinds)
            and _matches(message.tenant_id, route.tenants)
            and (not route.severities or message.severity in route.severities)
        )

    def route(self, message: NotificationIn) -> Routing:
        channels = set(self._config.severity_channels.get(message.severity, []))
        extra: list[str] = []
        wants_defaults = "email" in channels
        for route in self._config.routes:
            if not self._route_matches(route, message):
                continue
            channels.update(route.channels)
            if "email" in route.channels:
                if route.recipients:
                    extra += route.recipients
                else:
                    wants_defaults = True
        email = (list(self._recipients.get(message.severity, [])) if wants_defaults else []) + extra
        return Routing(email=list(dict.fromkeys(email)), webhook="webhook" in channels)

    @property
    def lookback(self) -> timedelta:
        """How far back :func:`due_escalations` needs rows (the longest window of any rule, plus a day)."""
        hours = [r.stop_after_hours or r.after_hours for r in self._config.escalations]
        return timedelta(hours=max(hours, default=0.0) + 24)

    def due(self, rows: Sequence[OutboxRow], now: datetime) -> list[Escalation]:
        return due_escalations(rows, now, self._config.escalations)


def due_escalations(
    rows: Sequence[OutboxRow], now: datetime, rules: Sequence[EscalationRule]
) -> list[Escalation]:
    """The requests in ``rows`` (outbox rows, any order) that ``rules`` say must be escalated at ``now``.

    A row is due under a rule when its kind and tenant match, it is at least ``after_hours`` old (and younger than
    ``stop_after_hours`` if set), no later row of its tenant has a kind in ``resolved_by``, and no row escalates it
    under this rule yet. Pass every row since ``now - policy.lookback`` so the resolutions are seen.
    """
    now = as_utc(now)
    ordered = sorted(rows, key=lambda r: r.id)
    done = {
        (r.body.get("escalation_of"), r.body.get("escalation_rule"))
        for r in ordered
        if r.kind.startswith(ESCALATION_PREFIX)
    }
    due: list[Escalation] = []
    for rule in rules:
        for index, row in enumerate(ordered):
            if row.kind.startswith(ESCALATION_PREFIX) or not fnmatchcase(row.kind, rule.kind):
                continue
            if not _matches(row.tenant_id, rule.tenants) or (row.id, rule.name) in done:
                continue
            age = now - as_utc(row.created_at)
            if age < timedelta(hours=rule.after_hours):
                continue
            if rule.stop_after_hours is not None and age >= timedelta(hours=rule.stop_after_hours):
                continue
            resolved = any(
                later.tenant_id == row.tenant_id
                and not later.kind.startswith(ESCALATION_PREFIX)
                and _matches(later.kind, rule.resolved_by)
                for later in ordered[index + 1 :]
            )
            if not resolved:
                due.append(
                    Escalation(
                        rule=rule, row=row, due_at=as_utc(row.created_at) + timedelta(hours=rule.after_hours)
                    )
                )
    return due


def read_outbox(
    factory: sessionmaker[Session], since: datetime, tenant_ids: Iterable[str] | None = None
) -> list[OutboxRow]:
    """Outbox rows created at or after ``since`` for ``tenant_ids`` (default: every tenant), oldest first.

    Each tenant's rows are read in a session acting for that tenant (PostgreSQL row-level security).
    """
    since = as_utc(since)
    tenants = list(tenant_ids) if tenant_ids is not None else tenant_ids_visible(factory)
    rows: list[OutboxRow] = []
    for tenant_id in tenants:
        query = (
            select(Notification)
            .where(
                Notification.tenant_id == tenant_id,
                Notification.created_at >= since,
                ~Notification.kind.startswith(
                    LINEAGE_KIND_PREFIX, autoescape=True
                ),  # machine events, not requests
            )
            .order_by(Notification.id)
        )
        with reading(factory, tenant_id) as session:
            rows += [
                OutboxRow(
                    id=r.id,
                    tenant_id=r.tenant_id,
                    severity=r.severity,
                    kind=r.kind,
                    subject=r.subject,
                    body=r.body or {},
                    created_at=as_utc(r.created_at),
                )
                for r in session.scalars(query)
            ]
    return sorted(rows, key=lambda r: r.id)

"""The production notifier: the outbox row first (nothing is lost), then every channel the policy routes to.

A channel that fails is logged and reported in the :class:`DeliveryResult`; it never raises into the caller, so a
mail relay or a webhook receiver being down cannot fail a drift scan, an activity or a workflow. Only a failure to
write the outbox row itself propagates (then nothing was recorded, and the caller's retry is the right answer).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime

import httpx
from sqlalchemy.orm import Session, sessionmaker

from evolution.notifications.base import ChannelResult, DeliveryFailed, DeliveryResult
from evolution.notifications.config import NotificationsConfig
from evolution.notifications.escalation import EscalationPolicy, Routing, read_outbox
from evolution.notifications.outbox import OutboxNotifier
from evolution.notifications.port import NotificationIn, Notifier
from evolution.notifications.smtp import SmtpNotifier
from evolution.notifications.webhook import WebhookNotifier
from evolution.observability.checks import CheckResult
from evolution.timeutil import utcnow

log = logging.getLogger(__name__)


class FanOutNotifier:
    """Implements the :class:`~evolution.notifications.outbox.Notifier` port over the outbox, e-mail and a webhook."""

    def __init__(
        self,
        outbox: Notifier,
        policy: EscalationPolicy,
        *,
        smtp: SmtpNotifier | None = None,
        webhook: WebhookNotifier | None = None,
        factory: sessionmaker[Session] | None = None,
    ) -> None:
        self._outbox = outbox
        self._policy = policy
        self._smtp = smtp
        self._webhook = webhook
        self._factory = factory
        config = policy.config
        if smtp is None and (
            any(r.recipients for r in config.routes) or any(r.recipients for r in config.escalations)
        ):
            log.warning("notification routes name e-mail recipients but no SMTP server is configured")
        if webhook is None and any(r.webhook and not r.recipients for r in config.escalations):
            log.warning("an escalation rule relies on the webhook alone but no webhook is configured")

    @classmethod
    def from_config(
        cls,
        config: NotificationsConfig,
        factory: sessionmaker[Session],
        *,
        webhook_transport: httpx.BaseTransport | None = None,
    ) -> FanOutNotifier:
        """Everything from configuration: the outbox on ``factory``, plus SMTP and webhook when configured."""
        smtp = SmtpNotifier(config.smtp, link_base_url=config.link_base_url) if config.smtp else None
        webhook = (
            WebhookNotifier(config.webhook, link_base_url=config.link_base_url, transport=webhook_transport)
            if config.webhook
            else None
        )
        policy = EscalationPolicy(config.policy, config.smtp.recipients if config.smtp else {})
        return cls(OutboxNotifier(factory), policy, smtp=smtp, webhook=webhook, factory=factory)

    @property
    def policy(self) -> EscalationPolicy:
        return self._policy

    def notify(self, message: NotificationIn) -> None:
        """The port: never raises for a channel failure (see :meth:`deliver` for the outcome)."""
        self.deliver(message)

    def deliver(self, message: NotificationIn, routing: Routing | None = None) -> DeliveryResult:
        """Outbox first, then each routed channel; returns what happened on each."""
        routing = routing if routing is not None else self._policy.route(message)
        created_at = utcnow()
        self._outbox.notify(message)  # raises only if nothing could be recorded
        result = DeliveryResult(
            tenant_id=message.tenant_id,
            kind=message.kind,
            severity=message.severity,
            channels=[ChannelResult(channel="outbox", ok=True, detail="recorded")],
        )
        # A channel the policy names but the deployment does not configure is skipped (warned about at start).
        if routing.email and self._smtp is not None:
            result.channels.append(self._email(self._smtp, message, routing.email, created_at))
        if routing.webhook and self._webhook is not None:
            result.channels.append(self._push(self._webhook, message, created_at))
        for failed in result.failed:
            log.error(
                "notification %s for tenant %s not delivered by %s: %s",
                message.kind,
                message.tenant_id,
                failed.channel,
                failed.detail,
                extra={"tenantId": message.tenant_id, "kind": message.kind, "channel": failed.channel},
            )
        return result

    def run_escalations(
        self, now: datetime | None = None, tenant_ids: Iterable[str] | None = None
    ) -> list[DeliveryResult]:
        """Escalate every request that is due at ``now``; call periodically from one place (see escalation.py)."""
        if self._factory is None:
            raise RuntimeError(
                "run_escalations needs the registry's session factory (FanOutNotifier(factory=…))"
            )
        now = now or utcnow()
        if not self._policy.config.escalations:
            return []
        rows = read_outbox(self._factory, now - self._policy.lookback, tenant_ids)
        results = []
        for escalation in self._policy.due(rows, now):
            log.warning(
                "escalating %s #%d of tenant %s under rule %s",
                escalation.row.kind,
                escalation.row.id,
                escalation.row.tenant_id,
                escalation.rule.name,
                extra={"tenantId": escalation.row.tenant_id, "kind": escalation.row.kind},
            )
            results.append(self.deliver(escalation.message(), escalation.routing()))
        return results

    @staticmethod
    def _email(
        smtp: SmtpNotifier, message: NotificationIn, recipients: list[str], created_at: datetime
    ) -> ChannelResult:
        try:
            accepted = smtp.send(message, recipients, created_at=created_at)
        except DeliveryFailed as error:
            return ChannelResult(channel="email", ok=False, detail=error.detail, permanent=error.permanent)
        except Exception as error:  # a channel must never break the caller
            log.exception("unexpected e-mail failure")
            return ChannelResult(channel="email", ok=False, detail=f"unexpected {type(error).__name__}")
        return ChannelResult(channel="email", ok=True, detail=f"{accepted} of {len(recipients)} recipient(s)")

    @staticmethod
    def _push(webhook: WebhookNotifier, message: NotificationIn, created_at: datetime) -> ChannelResult:
        try:
            attempts = webhook.send(message, event_id=str(uuid.uuid4()), created_at=created_at)
        except DeliveryFailed as error:
            return ChannelResult(
                channel="webhook",
                ok=False,
                detail=error.detail,
                attempts=error.attempts,
                permanent=error.permanent,
            )
        except Exception as error:  # a channel must never break the caller
            log.exception("unexpected webhook failure")
            return ChannelResult(channel="webhook", ok=False, detail=f"unexpected {type(error).__name__}")
        return ChannelResult(channel="webhook", ok=True, detail="accepted", attempts=attempts)

    def check(self) -> list[CheckResult]:
        """For ``evolution doctor``: each configured channel's reachability (the outbox is the registry's)."""
        results: list[CheckResult] = []
        if self._smtp is not None:
            results += self._smtp.check()
        if self._webhook is not None:
            results += self._webhook.check()
        return results

    def close(self) -> None:
        if self._webhook is not None:
            self._webhook.close()

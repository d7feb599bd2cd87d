"""Notifications behind the one :class:`~evolution.notifications.outbox.Notifier` port.

* ``OutboxNotifier`` (in :mod:`evolution.notifications.outbox`): the embedded default, a row in ``notifications`` plus the log.
* :class:`SmtpNotifier`: plain-text e-mail over SMTP (STARTTLS or implicit TLS, optional login).
* :class:`WebhookNotifier`: JSON POST signed with HMAC-SHA256 over timestamp and body; receivers check it with
  :func:`verify_webhook_signature`.
* :class:`FanOutNotifier`: the outbox first, then the channels an :class:`EscalationPolicy` routes to; escalates
  requests nobody acted on with :meth:`FanOutNotifier.run_escalations`.
"""

from __future__ import annotations

from evolution.notifications.base import (
    ChannelResult,
    DeliveryFailed,
    DeliveryResult,
    render_text,
)
from evolution.notifications.config import (
    EscalationConfig,
    EscalationRule,
    NotificationsConfig,
    Route,
    SmtpConfig,
    WebhookConfig,
)
from evolution.notifications.escalation import (
    Escalation,
    EscalationPolicy,
    OutboxRow,
    Routing,
    due_escalations,
    read_outbox,
)
from evolution.notifications.fanout import FanOutNotifier
from evolution.notifications.outbox import NotificationIn, Notifier, OutboxNotifier
from evolution.notifications.smtp import SmtpNotifier
from evolution.notifications.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookNotifier,
    sign_webhook,
    verify_webhook_signature,
)
from evolution.observability.checks import CheckResult

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ChannelResult",
    "CheckResult",
    "DeliveryFailed",
    "DeliveryResult",
    "Escalation",
    "EscalationConfig",
    "EscalationPolicy",
    "EscalationRule",
    "FanOutNotifier",
    "NotificationIn",
    "NotificationsConfig",
    "Notifier",
    "OutboxNotifier",
    "OutboxRow",
    "Route",
    "Routing",
    "SmtpConfig",
    "SmtpNotifier",
    "WebhookConfig",
    "WebhookNotifier",
    "due_escalations",
    "read_outbox",
    "render_text",
    "sign_webhook",
    "verify_webhook_signature",
]

"""The Notifier port's contract, proved by every implementation against a real receiver.

outbox: the embedded default (SQLite registry); smtp: a real aiosmtpd server requiring a login; webhook: a real
HTTP receiver that verifies each HMAC signature; fanout: the production composite over all three.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.notifications.config import EscalationConfig, NotificationsConfig, SmtpConfig, WebhookConfig
from evolution.notifications.fanout import FanOutNotifier
from evolution.notifications.outbox import OutboxNotifier
from evolution.notifications.port import NotificationIn, Notifier
from evolution.notifications.smtp import SmtpNotifier
from evolution.notifications.webhook import WebhookNotifier
from evolution.registry.schema import Notification
from tests.support.notification_servers import SmtpSink, WebhookReceiver, smtp_server, webhook_server

SMTP_PASSWORD = "smtp-password-7f3a9c1e"
WEBHOOK_SECRET = "whsec-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
SEVERITIES = ("info", "warning", "alert", "critical")
# The test server requires a login over plain SMTP on loopback (the TLS path is in the integration tests).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
ALL = {s: ["ops@example.com", "agronomist@example.com"] for s in SEVERITIES}


@dataclass
class Delivered:
    tenant_id: str
    kind: str
    severity: str
    text: str  # what a person or a receiving program reads


@dataclass
class Harness:
    notifier: Notifier
    delivered: Callable[[], list[Delivered]]
    raw: Callable[[], list[bytes]]  # every byte that left the notifier, to search for secrets
    secrets: list[str] = field(default_factory=list)


def _outbox_rows(factory: sessionmaker[Session]) -> list[Delivered]:
    with factory() as session:
        rows = session.scalars(select(Notification).order_by(Notification.id)).all()
        return [Delivered(r.tenant_id, r.kind, r.severity, f"{r.subject}\n{r.body}") for r in rows]


def _mails(sink: SmtpSink) -> list[Delivered]:
    return [
        Delivered(
            str(m.message["X-Evolution-Tenant"]),
            str(m.message["X-Evolution-Kind"]),
            str(m.message["X-Evolution-Severity"]),
            f"{m.message['Subject']}\n{m.text}",
        )
        for m in sink.mails
    ]


def _pushes(receiver: WebhookReceiver) -> list[Delivered]:
    import json

    out = []
    for request in receiver.delivered:
        doc = json.loads(request.body)
        out.append(
            Delivered(doc["tenant_id"], doc["kind"], doc["severity"], f"{doc['subject']}\n{doc['text']}")
        )
    return out


def _smtp_config(port: int) -> SmtpConfig:
    return SmtpConfig(
        host="127.0.0.1",
        port=port,
        starttls=False,
        username="evolution",
        password=SecretStr(SMTP_PASSWORD),
        sender="evolution@example.com",
        recipients=ALL,
        timeout_s=5,
    )


def _webhook_config(receiver: WebhookReceiver) -> WebhookConfig:
    return WebhookConfig(
        url=receiver.url, secret=SecretStr(WEBHOOK_SECRET), timeout_s=5, retries=1, backoff_s=0.01
    )


@pytest.fixture(params=["outbox", "smtp", "webhook", "fanout"])
def harness(request: pytest.FixtureRequest, sqlite_factory: sessionmaker[Session]) -> Iterator[Harness]:
    with ExitStack() as stack:
        if request.param == "outbox":
            yield Harness(
                OutboxNotifier(sqlite_factory),
                lambda: _outbox_rows(sqlite_factory),
                lambda: [d.text.encode() for d in _outbox_rows(sqlite_factory)],
            )
            return
        sink, port = stack.enter_context(smtp_server(credentials=("evolution", SMTP_PASSWORD)))
        receiver = stack.enter_context(webhook_server(WEBHOOK_SECRET))
        if request.param == "smtp":
            yield Harness(
                SmtpNotifier(_smtp_config(port), link_base_url="https://evolution.example.com/"),
                lambda: _mails(sink),
                lambda: [m.raw for m in sink.mails],
                [SMTP_PASSWORD],
            )
            assert sink.logins, "the SMTP notifier never logged in"
        elif request.param == "webhook":
            webhook = WebhookNotifier(
                _webhook_config(receiver), link_base_url="https://evolution.example.com/"
            )
            stack.callback(webhook.close)
            yield Harness(
                webhook,
                lambda: _pushes(receiver),
                lambda: [r.body + repr(r.headers).encode() for r in receiver.requests],
                [WEBHOOK_SECRET],
            )
        else:
            fanout = FanOutNotifier.from_config(
                NotificationsConfig(
                    link_base_url="https://evolution.example.com/",
                    smtp=_smtp_config(port),
                    webhook=_webhook_config(receiver),
                    policy=EscalationConfig(severity_channels={s: ["email", "webhook"] for s in SEVERITIES}),
                ),
                sqlite_factory,
            )
            stack.callback(fanout.close)

            def everything() -> list[bytes]:
                return (
                    [d.text.encode() for d in _outbox_rows(sqlite_factory)]
                    + [m.raw for m in sink.mails]
                    + [r.body + repr(r.headers).encode() for r in receiver.requests]
                )

            yield Harness(
                fanout, lambda: _outbox_rows(sqlite_factory), everything, [SMTP_PASSWORD, WEBHOOK_SECRET]
            )
            # The composite delivered each message once on each channel, too.
            assert len(sink.mails) == len(receiver.delivered) == len(_outbox_rows(sqlite_factory))


MESSAGES = [
    NotificationIn(
        tenant_id="acme-farms",
        severity="critical",
        kind="integrity.quarantined",
        subject="Candidate v4 quarantined: manifest digest mismatch",
        body={"model_name": "yield", "version": 4},
    ),
    NotificationIn(
        tenant_id="beta-agro",
        severity="warning",
        kind="drift.warn",
        subject="Drift warn for yield: ndvi, rain_mm",
        body={"report_id": 17, "alerts": [], "warnings": ["ndvi", "rain_mm"]},
    ),
    NotificationIn(
        tenant_id="acme-farms",
        severity="info",
        kind="approval.requested",
        subject="Candidate v5 of yield passed the canary; approval needed",
    ),
]


def test_every_notification_is_delivered_once_with_its_tenant_kind_severity_and_text(
    harness: Harness,
) -> None:
    for message in MESSAGES:
        harness.notifier.notify(message)

    delivered = harness.delivered()
    assert len(delivered) == len(MESSAGES)
    for message in MESSAGES:
        matches = [
            d
            for d in delivered
            if (d.tenant_id, d.kind, d.severity) == (message.tenant_id, message.kind, message.severity)
        ]
        assert len(matches) == 1, f"{message.kind} delivered {len(matches)} times"
        assert message.subject in matches[0].text


def test_unicode_in_subject_and_body_survives_delivery(harness: Harness) -> None:
    subject = "Засуха на поле №7 — прогноз урожая ↓ 12 % (Ølby, São João) 🌾"
    harness.notifier.notify(
        NotificationIn(
            tenant_id="agro-sibir",
            severity="alert",
            kind="drift.alert",
            subject=subject,
            body={"поле": "Ключевое", "alerts": ["влажность_почвы"]},
        )
    )

    [delivered] = harness.delivered()
    assert delivered.tenant_id == "agro-sibir"
    assert subject in delivered.text
    assert "влажность_почвы" in delivered.text


def test_no_secret_reaches_the_delivered_content_or_the_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    if not harness.secrets:
        pytest.skip("this implementation holds no secret")
    caplog.set_level(logging.DEBUG)
    for message in MESSAGES:
        harness.notifier.notify(message)

    sent = harness.raw()
    assert len(harness.delivered()) == len(MESSAGES)
    for secret in harness.secrets:
        for blob in sent:
            assert secret.encode() not in blob
            assert secret.encode("utf-8").hex() not in blob.decode("utf-8", "replace")
        assert secret not in caplog.text

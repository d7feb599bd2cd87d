"""Notification delivery end to end: routing, signatures, retries, failures and escalation.

Every test talks to real servers on free loopback ports: aiosmtpd for e-mail, an HTTP receiver that verifies each
webhook signature, and the registry's outbox (SQLite; the escalation read also on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import IntegrityViolation
from evolution.notifications.base import DeliveryFailed
from evolution.notifications.config import (
    EscalationConfig,
    EscalationRule,
    NotificationsConfig,
    Route,
    SmtpConfig,
    WebhookConfig,
)
from evolution.notifications.escalation import EscalationPolicy, OutboxRow, due_escalations
from evolution.notifications.fanout import FanOutNotifier
from evolution.notifications.outbox import OutboxNotifier
from evolution.notifications.port import NotificationIn
from evolution.notifications.smtp import SmtpNotifier
from evolution.notifications.webhook import WebhookNotifier, sign_webhook, verify_webhook_signature
from evolution.registry.db import reading
from evolution.registry.schema import Notification
from evolution.registry.tenants import TenantService
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from tests.support.notification_servers import WebhookReceiver, smtp_server, webhook_server

SECRET = "whsec-integration-5b6c7d8e9f00112233"
SMTP_PASSWORD = "relay-password-91c2d3"
OPS = ["ops@example.com"]
ROOT = Principal(user="root", role=Role.ADMIN, tenants=("*",))

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _smtp(port: int, **overrides: object) -> SmtpConfig:
    fields: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "sender": "evolution@example.com",
        "recipients": {"alert": OPS, "critical": OPS},
        "timeout_s": 5,
    }
    fields.update(overrides)
    return SmtpConfig.model_validate(fields)


def _webhook(url: str, **overrides: object) -> WebhookConfig:
    fields: dict[str, object] = {
        "url": url,
        "secret": SECRET,
        "timeout_s": 5,
        "retries": 2,
        "backoff_s": 0.01,
    }
    fields.update(overrides)
    return WebhookConfig.model_validate(fields)


def _outbox(factory: sessionmaker[Session], tenant: str = "acme") -> list[Notification]:
    with reading(factory, tenant) as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def _message(
    severity: str = "critical", kind: str = "integrity.quarantined", tenant: str = "acme"
) -> NotificationIn:
    return NotificationIn.model_validate(
        {"tenant_id": tenant, "severity": severity, "kind": kind, "subject": f"{kind} for {tenant}"}
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_server(SECRET) as r:
        yield r


# ------------------------------------------------------------------------------------------ routing


def test_critical_goes_to_email_and_webhook_while_info_stays_in_the_outbox(
    sqlite_factory: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    with smtp_server() as (sink, port):
        fanout = FanOutNotifier.from_config(
            NotificationsConfig(smtp=_smtp(port), webhook=_webhook(receiver.url)), sqlite_factory
        )
        critical = fanout.deliver(_message("critical"))
        info = fanout.deliver(_message("info", "candidate.promoted"))
        fanout.close()

    assert [c.channel for c in critical.channels] == ["outbox", "email", "webhook"] and critical.ok
    assert [c.channel for c in info.channels] == ["outbox"] and info.ok
    assert [row.kind for row in _outbox(sqlite_factory)] == ["integrity.quarantined", "candidate.promoted"]
    assert [m.message["X-Evolution-Kind"] for m in sink.mails] == ["integrity.quarantined"]
    assert sink.mails[0].recipients == OPS
    assert [json.loads(r.body)["kind"] for r in receiver.delivered] == ["integrity.quarantined"]


def test_a_route_sends_a_tenants_approval_requests_to_its_managers_only() -> None:
    policy = EscalationPolicy(
        EscalationConfig(
            routes=[
                Route(kinds=["approval.*"], tenants=["acme"], channels=["email"], recipients=["boss@acme.io"])
            ]
        ),
        {"info": ["ops@example.com"]},
    )

    acme = policy.route(_message("info", "approval.requested", "acme"))
    other = policy.route(_message("info", "approval.requested", "beta"))
    drift = policy.route(_message("info", "drift.warn", "acme"))

    assert acme.email == ["boss@acme.io"] and not acme.webhook  # a route's own list, not the operators'
    assert other.email == [] and not other.webhook
    assert drift.email == []


def test_a_route_without_recipients_uses_the_severity_recipients_and_adds_the_webhook() -> None:
    policy = EscalationPolicy(
        EscalationConfig(routes=[Route(kinds=["slo.*"], channels=["email", "webhook"])]),
        {"warning": ["sre@example.com"]},
    )

    routing = policy.route(_message("warning", "slo.drift_detection_latency"))

    assert routing.email == ["sre@example.com"] and routing.webhook


# ------------------------------------------------------------------------------------------ signatures


def test_the_receiver_accepts_the_real_request_and_rejects_tampering_wrong_secret_and_stale_timestamps(
    receiver: WebhookReceiver,
) -> None:
    notifier = WebhookNotifier(_webhook(receiver.url))
    notifier.notify(_message())
    notifier.close()
    [request] = receiver.delivered
    body, headers = request.body, request.headers
    stamp = int(headers["X-Evolution-Timestamp"])

    verify_webhook_signature(SECRET, body, headers, max_age=300)  # the genuine request verifies
    tampered = body.replace(b'"critical"', b'"info"')
    assert tampered != body
    with pytest.raises(IntegrityViolation, match="does not match"):
        verify_webhook_signature(SECRET, tampered, headers, max_age=300)
    with pytest.raises(IntegrityViolation, match="does not match"):
        verify_webhook_signature("whsec-someone-elses-secret", body, headers, max_age=300)
    with pytest.raises(IntegrityViolation, match="outside the accepted"):
        verify_webhook_signature(SECRET, body, headers, max_age=300, now=stamp + 301)
    with pytest.raises(IntegrityViolation, match="outside the accepted"):
        verify_webhook_signature(SECRET, body, headers, max_age=300, now=stamp - 301)
    # Moving the timestamp forward to look fresh breaks the signature: it is part of the signed material.
    replayed = {**headers, "X-Evolution-Timestamp": str(stamp + 3600)}
    with pytest.raises(IntegrityViolation, match="does not match"):
        verify_webhook_signature(SECRET, body, replayed, max_age=300, now=stamp + 3600)
    with pytest.raises(IntegrityViolation, match="required"):
        verify_webhook_signature(SECRET, body, {"Content-Type": "application/json"}, max_age=300)
    # Header names are case-insensitive, as HTTP says.
    verify_webhook_signature(SECRET, body, {k.lower(): v for k, v in headers.items()}, max_age=300)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = '{"subject":"Засуха"}'.encode()
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()

    assert sign_webhook(SECRET, body, 1700000000) == f"sha256={expected}"


def test_a_request_signed_with_the_wrong_secret_is_refused_by_the_receiver_and_not_retried(
    receiver: WebhookReceiver,
) -> None:
    notifier = WebhookNotifier(_webhook(receiver.url, secret="whsec-not-the-receivers-secret"))

    with pytest.raises(DeliveryFailed) as failure:
        notifier.notify(_message())
    notifier.close()

    assert failure.value.permanent and failure.value.attempts == 1
    assert [r.status for r in receiver.requests] == [401]
    assert receiver.delivered == []


# ------------------------------------------------------------------------------------------ retries


def test_a_5xx_is_retried_with_backoff_and_then_delivered_once() -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    with webhook_server(SECRET, script=[503, 502]) as receiver:
        notifier = WebhookNotifier(_webhook(receiver.url, retries=3), sleep=sleep)
        attempts = notifier.send(_message(), event_id="evt-1")
        notifier.close()

    assert attempts == 3
    assert [r.status for r in receiver.requests] == [503, 502, 200]
    assert sleeps == [0.01, 0.02]
    # Every attempt was signed afresh and carried the same event id, so the receiver can deduplicate.
    assert all(r.verified for r in receiver.requests)
    assert {r.headers["X-Evolution-Event"] for r in receiver.requests} == {"evt-1"}
    assert len(receiver.delivered) == 1


def test_a_4xx_is_a_permanent_failure_and_is_not_retried() -> None:
    with webhook_server(SECRET, script=[422]) as receiver:
        notifier = WebhookNotifier(_webhook(receiver.url, retries=3))
        with pytest.raises(DeliveryFailed, match="HTTP 422") as failure:
            notifier.notify(_message())
        notifier.close()

    assert failure.value.permanent and failure.value.attempts == 1
    assert len(receiver.requests) == 1


def test_a_receiver_that_stays_down_is_retried_then_reported_without_its_url_path() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/hooks/token-abc123"
    notifier = WebhookNotifier(_webhook(url, retries=2), sleep=lambda _s: None)

    with pytest.raises(DeliveryFailed) as failure:
        notifier.notify(_message())
    notifier.close()

    assert not failure.value.permanent and failure.value.attempts == 3
    assert "ConnectError" in str(failure.value)
    assert "token-abc123" not in str(failure.value)


# ------------------------------------------------------------------------------------------ failures


def test_smtp_down_still_writes_the_outbox_row_delivers_the_webhook_and_reports_the_failure(
    sqlite_factory: sessionmaker[Session], receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    fanout = FanOutNotifier.from_config(
        NotificationsConfig(smtp=_smtp(_closed_port()), webhook=_webhook(receiver.url)), sqlite_factory
    )

    fanout.notify(_message())  # the port never raises for a channel
    result = fanout.deliver(_message(kind="slo.retraining_duration"))
    fanout.close()

    assert [row.kind for row in _outbox(sqlite_factory)] == [
        "integrity.quarantined",
        "slo.retraining_duration",
    ]
    assert not result.ok
    [email] = result.failed
    assert email.channel == "email" and not email.permanent and "ConnectionRefused" in email.detail
    assert [c.ok for c in result.channels if c.channel == "webhook"] == [True]
    assert len(receiver.delivered) == 2
    assert "not delivered by email" in caplog.text


def test_a_refused_smtp_login_is_a_permanent_failure_and_the_password_is_not_reported(
    sqlite_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server(credentials=("evolution", SMTP_PASSWORD)) as (sink, port):
        wrong = "not-the-relay-password-4410"
        fanout = FanOutNotifier.from_config(
            NotificationsConfig(smtp=_smtp(port, username="evolution", password=wrong)), sqlite_factory
        )
        result = fanout.deliver(_message())

    [email] = result.failed
    assert email.permanent and "SMTPAuthenticationError" in email.detail
    assert sink.mails == []
    assert len(_outbox(sqlite_factory)) == 1
    assert wrong not in caplog.text and wrong not in result.model_dump_json()


def test_starttls_with_a_private_ca_delivers_after_login_and_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    with smtp_server(
        credentials=("evolution", SMTP_PASSWORD), tls_context=server_tls, require_starttls=True
    ) as (sink, port):
        trusted = SmtpNotifier(
            _smtp(port, starttls=True, username="evolution", password=SMTP_PASSWORD, ca_file=str(cert))
        )
        trusted.notify(_message())
        checks = trusted.check()
        untrusted = SmtpNotifier(_smtp(port, starttls=True, username="evolution", password=SMTP_PASSWORD))
        with pytest.raises(DeliveryFailed, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.notify(_message())

    assert len(sink.mails) == 1 and sink.logins == ["evolution", "evolution"]
    assert [(c.name, c.ok) for c in checks] == [
        ("smtp.connect", True),
        ("smtp.ehlo", True),
        ("smtp.login", True),
    ]
    assert "STARTTLS" in checks[0].detail


def test_check_reports_reachability_of_both_channels(receiver: WebhookReceiver) -> None:
    with smtp_server() as (_sink, port):
        smtp_ok = SmtpNotifier(_smtp(port)).check()
    smtp_down = SmtpNotifier(_smtp(_closed_port())).check()
    webhook_ok = WebhookNotifier(_webhook(receiver.url)).check()
    webhook_down = WebhookNotifier(_webhook(f"http://127.0.0.1:{_closed_port()}/x")).check()

    assert [(c.name, c.ok) for c in smtp_ok] == [("smtp.connect", True), ("smtp.ehlo", True)]
    assert [(c.name, c.ok) for c in smtp_down] == [("smtp.connect", False)]
    assert [(c.name, c.ok) for c in webhook_ok] == [("webhook.dns", True), ("webhook.tcp", True)]
    assert [(c.name, c.ok) for c in webhook_down] == [("webhook.dns", True), ("webhook.tcp", False)]
    assert receiver.requests == []  # a check never posts a notification


def test_configuration_refuses_what_would_fail_later() -> None:
    with pytest.raises(ValidationError, match="ssl"):
        SmtpConfig(host="h", sender="a@b.c", ssl=True, starttls=True)
    with pytest.raises(ValidationError, match="go together"):
        SmtpConfig(host="h", sender="a@b.c", username="u")
    with pytest.raises(ValidationError, match="e-mail address"):
        SmtpConfig(host="h", sender="a@b.c", recipients={"critical": ["not an address"]})
    with pytest.raises(ValidationError, match="at least 16"):
        WebhookConfig(url="https://hooks.example.com/x", secret=SecretStr("short"))
    with pytest.raises(ValidationError, match="reach nobody"):
        EscalationRule(name="r", after_hours=1, webhook=False)
    assert "whsec" not in repr(_webhook("https://hooks.example.com/x"))  # SecretStr never prints


# ------------------------------------------------------------------------------------------ escalation


def _row(id: int, kind: str, age_h: float, now: dt.datetime, tenant: str = "acme") -> OutboxRow:
    return OutboxRow(
        id=id,
        tenant_id=tenant,
        severity="info",
        kind=kind,
        subject=kind,
        created_at=now - timedelta(hours=age_h),
    )


def test_due_escalations_picks_only_unanswered_requests_past_the_threshold() -> None:
    now = utcnow()
    rule = EscalationRule(
        name="managers", after_hours=4, stop_after_hours=24, recipients=["director@acme.io"]
    )
    rows = [
        _row(1, "approval.requested", 30, now, "late"),  # past stop_after_hours: the deadline is gone
        _row(2, "approval.requested", 6, now, "acme"),  # due
        _row(3, "approval.requested", 6, now, "beta"),
        _row(4, "candidate.promoted", 5, now, "beta"),  # beta's request was answered
        _row(5, "approval.requested", 2, now, "gamma"),  # too young
        _row(6, "approval.requested", 8, now, "delta"),
        _row(7, "approval.requested", 5, now, "delta"),  # supersedes 6 and is itself due
        _row(8, "drift.warn", 9, now, "acme"),  # another kind
    ]

    due = due_escalations(rows, now, [rule])

    assert [(e.row.id, e.row.tenant_id) for e in due] == [(2, "acme"), (7, "delta")]
    message = due[0].message()
    assert message.kind == "escalation.approval.requested" and message.severity == "alert"
    assert message.body["escalation_of"] == 2 and message.subject.startswith("Not acted on for 4 h")
    # Once its escalation is in the outbox, the request is not escalated again.
    escalated = OutboxRow(
        id=9,
        tenant_id="acme",
        severity="alert",
        kind=message.kind,
        subject="",
        body=message.body,
        created_at=now,
    )
    assert [e.row.id for e in due_escalations([*rows, escalated], now, [rule])] == [7]


def test_run_escalations_tells_the_second_list_once_and_records_it_in_the_outbox(
    registry_factory: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    config = NotificationsConfig(
        webhook=_webhook(receiver.url),
        policy=EscalationConfig(
            escalations=[EscalationRule(name="directors", after_hours=4, recipients=["director@acme.io"])]
        ),
    )
    tenants = TenantService(registry_factory)
    for tenant in ("acme", "beta"):
        tenants.ensure_tenant(ROOT, tenant)
    with smtp_server() as (sink, port):
        fanout = FanOutNotifier.from_config(config.model_copy(update={"smtp": _smtp(port)}), registry_factory)
        outbox = OutboxNotifier(registry_factory)
        outbox.notify(_message("info", "approval.requested", "acme"))
        outbox.notify(_message("info", "approval.requested", "beta"))
        outbox.notify(_message("info", "candidate.rejected", "beta"))

        assert fanout.run_escalations(utcnow() + timedelta(hours=1)) == []  # not yet
        later = utcnow() + timedelta(hours=5)
        first = fanout.run_escalations(later)
        second = fanout.run_escalations(later + timedelta(minutes=15))
        fanout.close()

    assert [(r.tenant_id, r.kind, r.ok) for r in first] == [("acme", "escalation.approval.requested", True)]
    assert second == []
    assert [m.recipients for m in sink.mails] == [["director@acme.io"]]
    assert "Nobody has acted" in sink.mails[0].text
    assert [json.loads(r.body)["kind"] for r in receiver.delivered] == ["escalation.approval.requested"]
    escalation_rows = [r for r in _outbox(registry_factory) if r.kind.startswith("escalation.")]
    assert len(escalation_rows) == 1 and escalation_rows[0].body["escalation_rule"] == "directors"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evolution-test-smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.pem", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path

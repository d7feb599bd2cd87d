"""Webhook notifications: each notification POSTed as JSON, signed with HMAC-SHA256.

The signing scheme (what a receiver must check; :func:`verify_webhook_signature` does it):

* The body is UTF-8 JSON (keys sorted, no insignificant whitespace); receivers must verify the *exact bytes*
  received, before parsing. Fields: ``schema`` (``evolution.notification/v1``), ``event_id`` (the same on every
  retry of one notification: deduplicate on it), ``tenant_id``, ``severity``, ``kind``, ``subject``, ``text``
  (the same plain-text account an e-mail carries), ``body``, ``created_at`` (ISO 8601 UTC), ``link``.
* ``X-Evolution-Timestamp``: the sending time as integer Unix seconds, set afresh on every attempt.
* ``X-Evolution-Signature``: ``sha256=`` + lowercase hex of ``HMAC-SHA256(secret, timestamp + "." + body)``,
  i.e. the timestamp's ASCII digits, one ``.`` byte, then the body bytes.
* A receiver recomputes the HMAC with its copy of the secret, compares in constant time, and refuses a timestamp
  further than ``max_age`` seconds from its clock (either way): a captured request cannot be replayed later, and
  the timestamp cannot be changed without breaking the signature. Within ``max_age``, ``event_id`` deduplicates.

Delivery: a 2xx answer is success; a 5xx, 408, 429 or a network error/timeout is retried with exponential
backoff up to ``retries`` more times; any other answer (4xx, 3xx — redirects are not followed) is a permanent
failure and is not retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from evolution.errors import IntegrityViolation
from evolution.notifications.base import DeliveryFailed, redact_url, render_text
from evolution.notifications.config import WebhookConfig
from evolution.notifications.port import NotificationIn
from evolution.observability.checks import CheckResult
from evolution.timeutil import iso, utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Evolution-Signature"
TIMESTAMP_HEADER = "X-Evolution-Timestamp"
EVENT_HEADER = "X-Evolution-Event"
SCHEMA = "evolution.notification/v1"
_RETRYABLE_STATUS = frozenset({408, 429})


def _key(secret: str | bytes | SecretStr) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode() if isinstance(secret, str) else secret


def sign_webhook(secret: str | bytes | SecretStr, body: bytes, timestamp: int) -> str:
    """The ``X-Evolution-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(_key(secret), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook_signature(
    secret: str | bytes | SecretStr,
    body: bytes,
    headers: Mapping[str, str],
    max_age: float = 300.0,
    *,
    now: float | None = None,
) -> None:
    """For receivers: raise :class:`IntegrityViolation` unless ``body`` was signed with ``secret`` recently.

    ``headers`` is any mapping of the request's headers (names compared case-insensitively); ``max_age`` bounds
    the difference between the signed timestamp and ``now`` (default: this machine's clock) in seconds.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower())
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    if not signature or not stamp:
        raise IntegrityViolation(f"webhook: {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers are required")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise IntegrityViolation(f"webhook: {TIMESTAMP_HEADER} is not integer Unix seconds")
    timestamp = int(stamp)
    if not signature.startswith("sha256="):
        raise IntegrityViolation("webhook: only sha256= signatures are accepted")
    expected = sign_webhook(secret, body, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise IntegrityViolation(
            "webhook: the signature does not match the body (wrong secret or altered body)"
        )
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > max_age:
        raise IntegrityViolation(
            f"webhook: timestamp is {age:.0f} s from now, outside the accepted {max_age:.0f} s (replay?)"
        )


def webhook_payload(
    message: NotificationIn,
    *,
    event_id: str,
    created_at: datetime,
    link_base_url: str | None,
) -> bytes:
    """The exact bytes POSTed for ``message``."""
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "event_id": event_id,
        "tenant_id": message.tenant_id,
        "severity": message.severity,
        "kind": message.kind,
        "subject": message.subject,
        "text": render_text(message, link_base_url=link_base_url, created_at=created_at),
        "body": message.body,
        "created_at": iso(created_at),
        "link": link_base_url,
    }
    return json.dumps(
        document, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str
    ).encode()


class WebhookNotifier:
    """POSTs each notification to one URL, signed, with retries; raises :class:`DeliveryFailed` when it gives up."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        link_base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._link = link_base_url
        self._sleep = sleep
        self._clock = clock
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.timeout_s),
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": "controlled-evolution-webhook/1"},
        )
        self._where = redact_url(config.url)

    @property
    def config(self) -> WebhookConfig:
        return self._config

    def close(self) -> None:
        self._client.close()

    def notify(self, message: NotificationIn) -> None:
        """The port."""
        self.send(message)

    def send(
        self, message: NotificationIn, *, event_id: str | None = None, created_at: datetime | None = None
    ) -> int:
        """Deliver ``message``; returns the number of attempts it took. Raises :class:`DeliveryFailed`."""
        event = event_id or str(uuid.uuid4())
        body = webhook_payload(
            message, event_id=event, created_at=created_at or utcnow(), link_base_url=self._link
        )
        attempts = self._config.retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self._sleep(min(self._config.backoff_s * 2 ** (attempt - 2), self._config.max_backoff_s))
            timestamp = int(self._clock())
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign_webhook(self._config.secret, body, timestamp),
                EVENT_HEADER: event,
            }
            try:
                response = self._client.post(self._config.url, content=body, headers=headers)
            except httpx.TransportError as error:  # connect/read/write errors and timeouts
                last = f"{type(error).__name__}: {self._scrub(str(error))}"
                log.warning("webhook %s attempt %d/%d failed: %s", self._where, attempt, attempts, last)
                continue
            status = response.status_code
            if 200 <= status < 300:
                log.info(
                    "webhook %s accepted %s (attempt %d)",
                    self._where,
                    message.kind,
                    attempt,
                    extra={"tenantId": message.tenant_id, "kind": message.kind},
                )
                return attempt
            last = f"HTTP {status}"
            if status >= 500 or status in _RETRYABLE_STATUS:
                log.warning("webhook %s attempt %d/%d: %s", self._where, attempt, attempts, last)
                continue
            raise DeliveryFailed(
                "webhook", f"{self._where} answered {last}", permanent=True, attempts=attempt
            )
        raise DeliveryFailed(
            "webhook",
            f"{self._where}: {last} after {attempts} attempt(s)",
            permanent=False,
            attempts=attempts,
        )

    def check(self) -> list[CheckResult]:
        """For ``evolution doctor``: DNS resolution and a TCP connect (plus the TLS handshake for https).

        Nothing is POSTed — a test notification would reach the receiver's people — so this proves the endpoint
        is reachable and, for https, presents a certificate valid for its name; not that it accepts our secret.
        """
        parts = urlsplit(self._config.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            return [CheckResult("webhook.dns", False, f"{host}: {error}")]
        results = [CheckResult("webhook.dns", True, f"{host} → {infos[0][4][0]}")]
        try:
            with socket.create_connection((host, port), timeout=self._config.timeout_s) as sock:
                results.append(CheckResult("webhook.tcp", True, f"{host}:{port} accepts connections"))
                if parts.scheme == "https":
                    context = ssl.create_default_context()
                    with context.wrap_socket(sock, server_hostname=host) as tls:
                        results.append(
                            CheckResult("webhook.tls", True, f"{tls.version()}, certificate valid")
                        )
        except ssl.SSLError as error:
            results.append(CheckResult("webhook.tls", False, str(error)[:200]))
        except OSError as error:
            results.append(CheckResult("webhook.tcp", False, f"{host}:{port}: {error}"))
        return results

    def _scrub(self, text: str) -> str:
        return text.replace(self._config.url, self._where)

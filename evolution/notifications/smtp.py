"""E-mail notifications over SMTP (stdlib ``smtplib``): plain text a person can act on, no HTML.

Connection: implicit TLS (``ssl``), or STARTTLS on a plain connection (``starttls``, the default), or neither (only
for a relay on the same host). Certificates are verified against the system CAs or ``ca_file``. Login happens only
when a username is configured, and only over TLS unless the connection is to a loopback relay.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from evolution.notifications.base import DeliveryFailed, render_text
from evolution.notifications.config import SmtpConfig
from evolution.notifications.port import NotificationIn
from evolution.observability.checks import CheckResult
from evolution.timeutil import utcnow

log = logging.getLogger(__name__)

# Replies that mean "this message will never be accepted as it is" (RFC 5321 5yz, and a refused login).
_PERMANENT = (smtplib.SMTPAuthenticationError, smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)


def _subject(message: NotificationIn) -> str:
    return f"[Evolution] {message.severity.upper()} - {message.tenant_id} - {message.subject}"[:250]


class SmtpNotifier:
    """Sends each notification as one e-mail to the recipients configured for its severity."""

    def __init__(self, config: SmtpConfig, *, link_base_url: str | None = None) -> None:
        self._config = config
        self._link = link_base_url

    @property
    def config(self) -> SmtpConfig:
        return self._config

    def recipients_for(self, message: NotificationIn) -> list[str]:
        return list(self._config.recipients.get(message.severity, []))

    def notify(self, message: NotificationIn) -> None:
        """The port: e-mail the severity's recipients; raises :class:`DeliveryFailed` if the relay refuses."""
        recipients = self.recipients_for(message)
        if not recipients:
            log.info(
                "no e-mail recipients for %s notifications; %s not e-mailed", message.severity, message.kind
            )
            return
        self.send(message, recipients)

    def render(
        self, message: NotificationIn, recipients: list[str], *, created_at: datetime | None = None
    ) -> EmailMessage:
        created = created_at or utcnow()
        mail = EmailMessage()
        mail["From"] = self._config.sender
        mail["To"] = ", ".join(recipients)
        mail["Subject"] = _subject(message)
        mail["Date"] = format_datetime(created)
        mail["Message-ID"] = make_msgid(domain=self._config.sender.rsplit("@", 1)[1])
        mail["X-Evolution-Tenant"] = message.tenant_id
        mail["X-Evolution-Kind"] = message.kind
        mail["X-Evolution-Severity"] = message.severity
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        mail.set_content(render_text(message, link_base_url=self._link, created_at=created), charset="utf-8")
        return mail

    def send(
        self, message: NotificationIn, recipients: list[str], *, created_at: datetime | None = None
    ) -> int:
        """Deliver one e-mail to ``recipients``; returns how many the relay accepted.

        Raises :class:`DeliveryFailed` (``permanent`` for 5xx refusals and a refused login) if none accepted it.
        """
        if not recipients:
            raise DeliveryFailed("email", "no recipients", permanent=True)
        mail = self.render(message, recipients, created_at=created_at)
        try:
            with self._connect() as client:
                refused = client.send_message(mail, from_addr=self._config.sender, to_addrs=recipients)
        except _PERMANENT as error:
            raise DeliveryFailed("email", self._describe(error), permanent=True) from None
        except smtplib.SMTPResponseException as error:
            permanent = 500 <= error.smtp_code < 600
            raise DeliveryFailed("email", self._describe(error), permanent=permanent) from None
        except (OSError, smtplib.SMTPException) as error:  # refused connection, timeout, TLS, disconnect
            raise DeliveryFailed("email", self._describe(error), permanent=False) from None
        if refused:
            log.warning(
                "smtp relay refused %d of %d recipients for %s", len(refused), len(recipients), message.kind
            )
        log.info(
            "e-mailed %s to %d recipient(s)",
            message.kind,
            len(recipients) - len(refused),
            extra={"tenantId": message.tenant_id, "kind": message.kind},
        )
        return len(recipients) - len(refused)

    def check(self) -> list[CheckResult]:
        """For ``evolution doctor``: connect (TLS as configured), EHLO, and log in if a username is configured.

        Sends no mail. Each step is one line; a failed step ends the check.
        """
        target = f"{self._config.host}:{self._config.port}"
        results: list[CheckResult] = []
        try:
            client = self._open()
        except (OSError, smtplib.SMTPException) as error:
            return [CheckResult("smtp.connect", False, f"{target}: {self._describe(error)}")]
        try:
            tls = "implicit TLS" if self._config.ssl else ("STARTTLS" if self._config.starttls else "no TLS")
            results.append(CheckResult("smtp.connect", True, f"{target} ({tls})"))
            code, reply = client.ehlo()
            ehlo_ok = 200 <= code < 300
            results.append(CheckResult("smtp.ehlo", ehlo_ok, f"{code} {reply.decode(errors='replace')[:80]}"))
            if not ehlo_ok:
                return results
            if self._config.username is not None:
                try:
                    self._login(client)
                    results.append(CheckResult("smtp.login", True, f"as {self._config.username}"))
                except (OSError, smtplib.SMTPException) as error:
                    results.append(CheckResult("smtp.login", False, self._describe(error)))
            return results
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    # ------------------------------------------------------------------ connection
    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self._config.ca_file)

    def _open(self) -> smtplib.SMTP:
        """A connected client, upgraded to TLS when configured, greeted with EHLO; not logged in."""
        cfg = self._config
        client: smtplib.SMTP
        if cfg.ssl:
            client = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s, context=self._tls_context())
        else:
            client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
        try:
            client.ehlo()
            if cfg.starttls:
                client.starttls(context=self._tls_context())
                client.ehlo()
        except BaseException:
            client.close()
            raise
        return client

    def _login(self, client: smtplib.SMTP) -> None:
        cfg = self._config
        assert cfg.username is not None and cfg.password is not None
        if not (cfg.ssl or cfg.starttls) and not self._loopback():
            raise smtplib.SMTPException("refusing to send the password over an unencrypted connection")
        client.login(cfg.username, cfg.password.get_secret_value())

    def _loopback(self) -> bool:
        try:
            infos = socket.getaddrinfo(self._config.host, None)
        except OSError:
            return False
        return bool(infos) and all(info[4][0] in ("127.0.0.1", "::1") for info in infos)

    def _connect(self) -> smtplib.SMTP:
        client = self._open()
        try:
            if self._config.username is not None:
                self._login(client)
        except BaseException:
            client.close()
            raise
        return client

    def _describe(self, error: BaseException) -> str:
        text = str(error)
        if self._config.password is not None:
            text = text.replace(self._config.password.get_secret_value(), "**********")
        return f"{type(error).__name__}: {text}"[:300]

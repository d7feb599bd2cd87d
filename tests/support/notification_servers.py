"""Real receivers for the notifier tests: an SMTP server (aiosmtpd) and an HTTP webhook receiver.

Both listen on free loopback ports (bound to port 0) and keep what they receive. Used by the notifier contract
suite and the notification delivery integration tests.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from evolution.errors import IntegrityViolation
from evolution.notifications.webhook import verify_webhook_signature


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes

    @property
    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        assert body is not None, "the e-mail has no text/plain part"
        return str(body.get_content())


class SmtpSink:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.mails: list[ReceivedMail] = []
        self.logins: list[str] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self.mails.append(
                ReceivedMail(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], parsed, raw)
            )
        return "250 OK"


class _FreePortController(Controller):
    """aiosmtpd's threaded controller bound to port 0: the kernel picks a free port, read back after binding."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def smtp_server(
    *, credentials: tuple[str, str] | None = None, **smtp_options: Any
) -> Iterator[tuple[SmtpSink, int]]:
    """A real SMTP server on 127.0.0.1:<free port>; with ``credentials`` it requires AUTH (PLAIN/LOGIN).

    ``smtp_options`` go to aiosmtpd (e.g. ``tls_context=…, require_starttls=True``); without TLS, AUTH is allowed
    over plain text, as a loopback relay would.
    """
    sink = SmtpSink()
    if credentials is not None:
        expected_user, expected_password = credentials

        def authenticate(
            server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
        ) -> AuthResult:
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == expected_user
                and auth_data.password.decode() == expected_password
            )
            if ok:
                sink.logins.append(expected_user)
            return AuthResult(success=ok, handled=False)

        smtp_options.setdefault("authenticator", authenticate)
        smtp_options.setdefault("auth_required", True)
        smtp_options.setdefault("auth_require_tls", "tls_context" in smtp_options)
    controller = _FreePortController(sink, hostname="127.0.0.1", port=0, **smtp_options)
    controller.start()
    try:
        yield sink, controller.port
    finally:
        controller.stop()


@dataclass
class WebhookRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool
    refusal: str = ""


@dataclass
class WebhookReceiver:
    """An HTTP receiver that checks each request's signature as a real consumer would.

    ``script``: statuses to answer in turn to correctly signed requests (then 200 for ever after). A request
    whose signature does not verify is answered 401 and not counted as delivered.
    """

    secret: str
    port: int = 0
    script: list[int] = field(default_factory=list)
    requests: list[WebhookRequest] = field(default_factory=list)
    max_age: float = 300.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/evolution"

    @property
    def delivered(self) -> list[WebhookRequest]:
        return [r for r in self.requests if r.verified and 200 <= r.status < 300]

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        try:
            verify_webhook_signature(self.secret, body, headers, self.max_age)
        except IntegrityViolation as error:
            self.requests.append(WebhookRequest(path, headers, body, 401, False, str(error)))
            return 401
        status = self.script.pop(0) if self.script else 200
        self.requests.append(WebhookRequest(path, headers, body, status, True))
        return status


@contextmanager
def webhook_server(secret: str, script: list[int] | None = None) -> Iterator[WebhookReceiver]:
    """A real HTTP server on 127.0.0.1:<free port> receiving webhook POSTs into a :class:`WebhookReceiver`."""
    receiver = WebhookReceiver(secret=secret, script=list(script or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                status = receiver.answer(self.path, dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

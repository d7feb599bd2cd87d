"""Request body limits per operation, enforced before the body is read.

A body over its operation's limit is refused with 413 in the API's error shape: at once when ``Content-Length``
announces it (nothing of the body is read; a client sending ``Expect: 100-continue`` never even sends it), and as
soon as the bytes of a streamed (chunked) body pass the limit. The server holds at most the limit of any body: the
bytes read so far are never more than the limit plus one network read.

A refusal sent before the request body was read to its end also closes the connection (``Connection: close``),
whatever refused it (a missing token, a body too large): otherwise the server would go on reading, and discarding,
the rest of the flood in order to reuse the connection.

Starlette's ``RequestBodyLimitMiddleware`` (FastAPI's ``max_body_size``) counts bytes the same way, but answers a
``Content-Length`` over the limit with a fixed ``text/plain`` body; this API answers every error in one JSON shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evolution.serving.body_limit_defaults import DEFAULT_MAX_INGEST_BYTES, DEFAULT_MAX_PREDICT_BYTES, MIB

CLOSE = (b"connection", b"close")


@dataclass(frozen=True)
class BodyLimits:
    """Largest request body, in bytes, of a prediction and of an ingestion request (every other operation takes
    the prediction limit: none of them has a body)."""

    predict: int = DEFAULT_MAX_PREDICT_BYTES
    ingest: int = DEFAULT_MAX_INGEST_BYTES


def too_large(limit: int) -> JSONResponse:
    """The 413 answer, in the API's error shape."""
    return JSONResponse(
        status_code=413,
        content={
            "error": "ContentTooLarge",
            "detail": f"the request body is larger than this operation's limit of {limit} bytes "
            f"({limit / MIB:g} MiB); send it in smaller requests",
        },
    )


class BodyLimitMiddleware:
    """Limits the body of each request by its path: ``limits`` maps route paths (``/v1/tenants/{tenant_id}/…``)
    to bytes; any other path gets ``default``."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default: int) -> None:
        self.app = app
        self._limits = [(compile_path(path)[0], limit) for path, limit in limits.items()]
        self._default = default

    def limit_for(self, path: str) -> int:
        return next((limit for pattern, limit in self._limits if pattern.match(path)), self._default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _LimitedRequest(scope, receive, send, self.limit_for(scope["path"])).run(self.app)


class _LimitedRequest:
    """One request: the bytes of its body received so far, and whether its answer has started."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self._scope, self._receive, self._send, self._limit = scope, receive, send, limit
        headers = Headers(scope=scope)
        self._declared = _content_length(headers)
        self._unread = bool(self._declared) or "chunked" in headers.get("transfer-encoding", "").lower()
        self._received = 0
        self._cut = False  # the body passed the limit: the application is told the client is gone
        self._answered = False  # ... and the 413 went out: whatever the application answers is dropped
        self._started = False

    async def run(self, app: ASGIApp) -> None:
        if self._declared is not None and self._declared > self._limit:
            await self._refuse()
            return
        await app(self._scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self._cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._unread = bool(message.get("more_body", False))
            if self._received > self._limit:
                # Answered here, not by raising: an exception would reach the operation through Starlette's
                # BaseHTTPMiddleware, which reads in a task group, and FastAPI would make it a 400.
                self._cut = self._unread = True
                if not self._started:
                    await self._refuse()
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self._answered:
            return  # the application's answer to a body it was told was cut off
        if message["type"] == "http.response.start":
            self._started = True
            headers = list(message.get("headers", []))
            if self._unread and not any(name.lower() == b"connection" for name, _ in headers):
                message = {**message, "headers": [*headers, CLOSE]}
        await self._send(message)

    async def _refuse(self) -> None:
        await too_large(self._limit)(self._scope, self._receive, self.send)
        self._answered = True


def _content_length(headers: Headers) -> int | None:
    # The HTTP server (h11) has already refused a malformed or contradictory Content-Length with 400.
    value = headers.get("content-length")
    return int(value) if value is not None and value.strip().isdigit() else None

"""OpenTelemetry tracing for every process: one provider per process, and spans named after lifecycle stages.

Entry points call :func:`configure_tracing` once; library code only opens :func:`span`, which is a no-op until a
process has configured tracing. The embedded default prints finished spans to stdout as JSON lines; with an OTLP
endpoint they go to a collector over HTTP instead. Span attributes name tenants, models and versions only — never
secrets, keys or request payloads (they end up in a third-party backend).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from evolution.errors import InvalidInput


class TracingOptions(Protocol):
    """What tracing reads of the settings (``Settings`` satisfies it)."""

    @property
    def tracing(self) -> str: ...
    @property
    def otlp_endpoint(self) -> str | None: ...


TRACER_NAME = "evolution"
OTLP_TRACES_PATH = "/v1/traces"

AttributeValue = str | int | float | bool

_lock = threading.Lock()
_provider: TracerProvider | None = None
_attached: set[int] = set()
_pinned_ids: ContextVar[tuple[int, int] | None] = ContextVar("evolution_pinned_span_ids", default=None)


class _PinnableIdGenerator(RandomIdGenerator):
    """Random ids, except inside :func:`pinned_span_ids`, where the ids are the ones given."""

    def generate_trace_id(self) -> int:
        pinned = _pinned_ids.get()
        return pinned[0] if pinned else super().generate_trace_id()

    def generate_span_id(self) -> int:
        pinned = _pinned_ids.get()
        return pinned[1] if pinned else super().generate_span_id()


@contextmanager
def pinned_span_ids(trace_id: int, span_id: int) -> Iterator[None]:
    """Give the span started inside this block exactly these ids (start one span only).

    Why: a process that re-runs its code from a history (a replaying workflow) must re-derive the context of a
    span it emitted only once, so that span's ids have to be derivable, not random. Honoured by the provider of
    :func:`configure_tracing`; another provider ignores it.
    """
    if not (0 < trace_id < 2**128 and 0 < span_id < 2**64):
        raise InvalidInput(f"span ids out of range: trace id {trace_id:#x}, span id {span_id:#x}")
    token = _pinned_ids.set((trace_id, span_id))
    try:
        yield
    finally:
        _pinned_ids.reset(token)


def configure_tracing(
    settings: TracingOptions, service_name: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install the process's tracer provider (once) and return it.

    ``exporter`` replaces the configured destination (tests pass an in-memory one; it gets every span at once).
    Idempotent per process: later calls return the first provider, attaching a new ``exporter`` if given, since
    OpenTelemetry lets a process set its global provider only once. ``settings.tracing == "off"`` installs
    nothing global, so :func:`span` stays a no-op, and returns a provider without exporters.
    """
    global _provider
    with _lock:
        if _provider is not None:
            if exporter is not None and id(exporter) not in _attached:
                _provider.add_span_processor(SimpleSpanProcessor(exporter))
                _attached.add(id(exporter))
            return _provider
        mode = _mode(settings)
        resource = Resource.create(
            {"service.name": f"evolution-{service_name}", "service.namespace": "controlled-evolution"}
        )
        provider = TracerProvider(resource=resource, id_generator=_PinnableIdGenerator())
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            _attached.add(id(exporter))
        elif mode == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings.otlp_endpoint)))
        elif mode == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(formatter=_json_line)))
        if exporter is not None or mode != "off":
            trace.set_tracer_provider(provider)
        _provider = provider
        return provider


@contextmanager
def span(name: str, **attributes: AttributeValue | None) -> Iterator[trace.Span]:
    """A span named ``name`` under the current one (``None`` attributes are left out).

    Attributes are for identities only (``tenant``, ``model``, ``version_id``, ``role``): never secrets or
    request payloads. An exception escaping the block marks the span as failed and is re-raised.
    """
    present = {key: value for key, value in attributes.items() if value is not None}
    with trace.get_tracer(TRACER_NAME).start_as_current_span(name, attributes=present) as current:
        yield current


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits (what log lines carry as ``traceId``), or None outside a trace."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def _mode(settings: TracingOptions) -> str:
    if settings.tracing == "auto":
        return "otlp" if settings.otlp_endpoint else "console"
    return settings.tracing


def _otlp_exporter(endpoint: str | None) -> SpanExporter:
    # Imported here: only processes that export over OTLP pay for protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=otlp_traces_url(endpoint) if endpoint else None)


def otlp_traces_url(endpoint: str) -> str:
    """The collector's traces URL: a base URL (``http://collector:4318``) gets the ``/v1/traces`` path."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"OTLP endpoint {endpoint!r} is not an http(s) URL such as http://collector:4318")
    if parts.path.rstrip("/").endswith(OTLP_TRACES_PATH):
        return endpoint
    return endpoint.rstrip("/") + OTLP_TRACES_PATH


def _json_line(finished: ReadableSpan) -> str:
    return finished.to_json(indent=None) + os.linesep

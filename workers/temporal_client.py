"""One way to connect to Temporal: pydantic payloads and trace propagation everywhere."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from evolution.platform.settings import Settings
from workers.tracing_interceptor import tracing_interceptor


async def connect_client(settings: Settings, runtime: Runtime | None = None) -> Client:
    # Workers built from this client inherit the interceptor: one trace spans starter, workflow and activities.
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=[tracing_interceptor()],
        runtime=runtime,
    )


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A runtime that exports the SDK's own metrics (task latencies, polls, …) for Prometheus; only workers need it."""
    if not settings.temporal_metrics_port:
        return None
    bind = f"{settings.metrics_host}:{settings.temporal_metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))

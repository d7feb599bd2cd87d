"""One way to connect to Temporal: pydantic payloads, trace propagation, TLS and API keys, everywhere.

The worker, the CLI, the demo, the dashboard and `evolution doctor` all connect here, so every process honours the
same ``EVOLUTION_TEMPORAL_*`` settings and fails the same way: within the connect timeout, with one line naming the
problem (a wrong CA, a refused or missing client certificate, a refused API key), never by hanging.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import TLSConfig

from evolution.platform.orchestrator import OrchestratorUnavailable
from evolution.platform.settings import Settings
from evolution.platform.temporal_config import TemporalConnection, connection_failure
from workers.tracing_interceptor import tracing_interceptor


def tls_option(connection: TemporalConnection) -> TLSConfig | bool:
    material = connection.tls
    if material is None:
        return connection.uses_tls  # an API key alone: TLS with the system's roots (Temporal Cloud)
    return TLSConfig(
        server_root_ca_cert=material.server_ca,
        client_cert=material.client_cert,
        client_private_key=material.client_key,
        domain=material.server_name,
    )


async def connect_client(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A connected client, or :class:`OrchestratorUnavailable` naming why not (within the connect timeout)."""
    connection = settings.temporal_connection()
    # The first call (get_system_info) fails at once on a refused handshake or credential; the timeout bounds
    # the rest (a black-holed address, a proxy that never answers).
    try:
        # Workers built from this client inherit the interceptor: one trace spans starter, workflow and activities.
        return await asyncio.wait_for(
            Client.connect(
                connection.address,
                namespace=connection.namespace,
                api_key=connection.api_key,
                tls=tls_option(connection),
                connect_timeout=timedelta(seconds=connection.connect_timeout_s),
                data_converter=pydantic_data_converter,
                interceptors=[tracing_interceptor()],
                runtime=runtime,
            ),
            timeout=connection.connect_timeout_s,
        )
    except TimeoutError:
        raise OrchestratorUnavailable(
            connection_failure(connection, f"no answer within {connection.connect_timeout_s:g}s")
        ) from None
    except RuntimeError as error:  # the SDK reports every failed connect as a RuntimeError
        raise OrchestratorUnavailable(connection_failure(connection, str(error))) from None


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A runtime that exports the SDK's own metrics (task latencies, polls, …) for Prometheus; only workers need it."""
    if not settings.temporal_metrics_port:
        return None
    bind = f"{settings.metrics_host}:{settings.temporal_metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))

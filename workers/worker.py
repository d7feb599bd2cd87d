"""The Temporal worker process: wires settings, services and adapters, then serves workflows and activities."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import start_http_server
from temporalio.client import Client
from temporalio.worker import Worker

from activities.approvals import ApprovalActivities
from activities.breaker import BreakerActivities
from activities.canary import CanaryActivities
from activities.drift import DriftActivities
from activities.escalations import EscalationActivities
from activities.gc import GcActivities
from activities.quality import QualityHoldActivities
from activities.reconciler import ReconcilerActivities
from activities.registry import RegistryActivities
from activities.training import TrainingActivities
from activities.watch import WatchActivities
from evolution.errors import EvolutionError
from evolution.observability.logs import configure_logging
from evolution.platform.orchestrator import OrchestratorUnavailable
from evolution.platform.settings import Settings, load_settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.pg_tls import DatabaseUnreachable
from evolution.registry.stranded import RunLiveness
from evolution.training.compute import ComputeBackend
from workers.activity_journal import journal_interceptors
from workers.log_context import ActivityContext
from workers.orchestrator import TemporalOrchestrator
from workers.temporal_client import connect_client, metrics_runtime
from workflows.drift_scan import DriftScanWorkflow
from workflows.escalations import EscalationWorkflow
from workflows.gc import GcWorkflow
from workflows.post_promotion_watch import PostPromotionWatchWorkflow
from workflows.retraining import RetrainingWorkflow

log = logging.getLogger(__name__)
WORKFLOWS = [
    RetrainingWorkflow,
    DriftScanWorkflow,
    GcWorkflow,
    EscalationWorkflow,
    PostPromotionWatchWorkflow,
]


def activity_objects(
    services: Services, liveness: RunLiveness, compute: ComputeBackend | None = None
) -> list[Any]:
    """The activities over the services; ``liveness`` tells the reconciler whether a workflow run is still open."""
    return [
        RegistryActivities(services.registry, services.quota, services.notifier, verifier=services.loader),
        TrainingActivities(services.candidate_builder(compute)),
        DriftActivities(services.drift_scanner),
        CanaryActivities(services.canary),
        BreakerActivities(services.breaker, services.notifier),
        GcActivities(services.retention),
        EscalationActivities(services.escalator, services.lineage_delivery),
        ApprovalActivities(services.approval_tickets),
        ReconcilerActivities(services.reconciler, services.stranded_watches, liveness),
        QualityHoldActivities(services.snapshot_holds),
        WatchActivities(services.watches),
    ]


def activity_functions(objects: list[Any]) -> list[Any]:
    functions = []
    for obj in objects:
        for name in dir(obj):
            member = getattr(obj, name)
            if callable(member) and hasattr(member, "__temporal_activity_definition"):
                functions.append(member)
    return functions


def build_worker(
    client: Client,
    services: Services,
    task_queue: str,
    executor: ThreadPoolExecutor,
    compute: ComputeBackend | None = None,
    **worker_options: Any,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activity_functions(
            activity_objects(services, TemporalOrchestrator(client, task_queue), compute)
        ),
        activity_executor=executor,
        **worker_options,
    )


# A worker started beside a Temporal server that is still coming up (`evolution up` on a busy machine, a pod before
# the cluster answers) waits for it this long; a refused certificate, CA or key fails at once.
CONNECT_PATIENCE_S = 60.0
NOT_ANSWERING = ("nothing answers there", "no answer within")


async def _connect_patiently(settings: Settings) -> Client:
    runtime = metrics_runtime(settings)  # once: it binds the SDK metrics port
    deadline = asyncio.get_running_loop().time() + CONNECT_PATIENCE_S
    while True:
        try:
            return await connect_client(settings, runtime)
        except OrchestratorUnavailable as error:
            if not any(words in str(error) for words in NOT_ANSWERING):
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("Temporal does not answer yet (%s); trying again", error)
            await asyncio.sleep(2)


async def run_worker(settings: Settings) -> None:
    services = build_services(settings)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.metrics_host)
    client = await _connect_patiently(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=16) as executor:
        # EVOLUTION_ACTIVITY_JOURNAL (crash tests only): a durable line per activity start and end.
        interceptors = journal_interceptors(os.environ)
        worker = build_worker(client, services, settings.task_queue, executor, interceptors=interceptors)
        log.info("worker polling task queue %s at %s", settings.task_queue, settings.temporal_address)
        async with worker:
            await stop.wait()
    services.close()


def main() -> None:
    from evolution.observability.tracing import configure_tracing

    settings = load_settings()
    configure_logging(settings, "worker", context=ActivityContext())
    configure_tracing(settings, "worker")
    try:
        asyncio.run(run_worker(settings))
    except (EvolutionError, DatabaseUnreachable) as error:
        # Cannot start (Temporal refuses the CA, the certificate or the key, or is not there; the database refuses
        # the CA or the login): one line, no traceback.
        log.error("worker cannot start: %s", error)
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()

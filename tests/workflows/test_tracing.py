"""Traces on a real dev server: Training → Validation → Serving of one retraining in one trace, parent-linked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import RetrainingInput, RolloutTiming
from evolution.demo.scenario import Scenario
from evolution.observability.tracing import configure_tracing
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.support.approvals import decide
from tests.support.scenario import seed_tenant
from tests.workflows.test_retraining_approval import wait_for_approval
from workers.orchestrator import TemporalOrchestrator
from workers.tracing_interceptor import tracing_interceptor
from workers.worker import build_worker
from workflows.retraining import retraining_workflow_id

SCENARIO = Scenario(tenant_id="acme", history_rows=1200)
TIMING = RolloutTiming(look_interval_s=0.5, approval_timeout_s=120)
WORKFLOW_ID = retraining_workflow_id("acme")


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    configure_tracing(Settings(home=tmp_path_factory.mktemp("tracing")), "tests", exporter=spans)
    yield spans
    spans.shutdown()  # the global provider outlives this module; later spans are dropped, not kept


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


@pytest.fixture
def traced_client(temporal_env: WorkflowEnvironment) -> Client:
    config = temporal_env.client.config()
    config["interceptors"] = [tracing_interceptor()]
    return Client(**config)


@pytest.fixture
async def traced_worker(
    traced_client: Client, services: Services, task_queue: str, spans: InMemorySpanExporter
) -> AsyncIterator[None]:
    # No workflow cache: every workflow task replays the history, so trace contexts must survive replay.
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(traced_client, services, task_queue, executor, max_cached_workflows=0):
            yield


def by_id(spans: InMemorySpanExporter) -> dict[tuple[int, int], ReadableSpan]:
    return {(s.context.trace_id, s.context.span_id): s for s in spans.get_finished_spans()}


def chain(span: ReadableSpan, exported: dict[tuple[int, int], ReadableSpan]) -> list[ReadableSpan] | None:
    """``span`` and its ancestors up to the root, or None while an ancestor is not exported yet."""
    links = [span]
    while links[-1].parent is not None:
        parent = links[-1].parent
        found = exported.get((parent.trace_id, parent.span_id))
        if found is None:
            return None
        links.append(found)
    return links


async def wait_for_chain(
    spans: InMemorySpanExporter, name: str, accept: Callable[[ReadableSpan], bool] = lambda _: True
) -> list[ReadableSpan]:
    """The full parent chain of the first exported span called ``name`` (ancestors end after their children)."""
    for _ in range(240):
        exported = by_id(spans)
        for candidate in exported.values():
            if candidate.name == name and accept(candidate):
                links = chain(candidate, exported)
                if links is not None:
                    return links
        await asyncio.sleep(0.1)
    raise AssertionError(f"no complete {name!r} chain among {[s.name for s in spans.get_finished_spans()]}")


def names(links: list[ReadableSpan]) -> list[str]:
    return [s.name for s in links]


async def test_a_retraining_started_without_a_trace_has_training_validation_and_serving_in_one_trace(
    services: Services,
    traced_worker: None,
    orchestrator: TemporalOrchestrator,
    spans: InMemorySpanExporter,
    temporal_env: WorkflowEnvironment,
) -> None:
    # Started like a schedule would: by a client that carries no trace context.
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=TIMING)
    )
    await wait_for_approval(orchestrator, "acme")
    await decide(services, orchestrator, "acme", reason="ok")
    await orchestrator.retraining_result("acme")

    # With a champion, the next candidate is served in shadow after validation.
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=TIMING))
    run_id = (await temporal_env.client.get_workflow_handle(WORKFLOW_ID).describe()).run_id

    def in_run(span: ReadableSpan) -> bool:
        return _root_run_id(span, spans) == run_id

    serving = await wait_for_chain(spans, "Serving", in_run)
    handle = temporal_env.client.get_workflow_handle(WORKFLOW_ID)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    training = await wait_for_chain(spans, "Training", in_run)
    validation = await wait_for_chain(spans, "Validation", in_run)

    root = "RunWorkflow:RetrainingWorkflow"
    assert names(training) == [
        "Training",
        "RunActivity:train_candidate",
        "StartActivity:train_candidate",
        root,
    ]
    assert names(validation) == [
        "Validation",
        "RunActivity:validate_candidate",
        "StartActivity:validate_candidate",
        root,
    ]
    assert names(serving) == ["Serving", "RunActivity:collect_shadow", "StartActivity:collect_shadow", root]
    assert training[-1] is validation[-1] is serving[-1]  # one root span: the workflow run's
    assert len({s.context.trace_id for s in training + validation + serving}) == 1
    assert training[-1].attributes is not None
    assert training[-1].attributes["temporalWorkflowID"] == WORKFLOW_ID
    # Replays (no workflow cache here) re-derive the root's context but never emit it again.
    roots = [s for s in spans.get_finished_spans() if s.name == root and s.context == training[-1].context]
    assert len(roots) == 1

    training_attrs, validation_attrs, serving_attrs = (
        dict(stage[0].attributes or {}) for stage in (training, validation, serving)
    )
    assert training_attrs == {"tenant": "acme", "model": "yield", "version_id": serving_attrs["version_id"]}
    assert validation_attrs == training_attrs
    assert serving_attrs == {**training_attrs, "role": "shadow"}


async def test_a_traced_starter_is_the_root_of_the_retraining_trace(
    services: Services,
    traced_worker: None,
    traced_client: Client,
    task_queue: str,
    spans: InMemorySpanExporter,
) -> None:
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    orchestrator = TemporalOrchestrator(traced_client, task_queue)
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=TIMING)
    )
    validation = await wait_for_chain(spans, "Validation")
    training = await wait_for_chain(spans, "Training")

    root = "StartWorkflow:RetrainingWorkflow"
    assert names(training) == [
        "Training",
        "RunActivity:train_candidate",
        "StartActivity:train_candidate",
        root,
    ]
    assert names(validation)[-1] == root and training[-1] is validation[-1]
    assert (
        training[-1].attributes is not None and training[-1].attributes["temporalWorkflowID"] == WORKFLOW_ID
    )
    await wait_for_approval(orchestrator, "acme")
    await decide(services, orchestrator, "acme", reason="ok")
    assert (await orchestrator.retraining_result("acme")).outcome == "promoted"


def _root_run_id(span: ReadableSpan, spans: InMemorySpanExporter) -> str | None:
    links = chain(span, by_id(spans))
    if not links or links[-1].attributes is None:
        return None
    run_id = links[-1].attributes.get("temporalRunID")
    return run_id if isinstance(run_id, str) else None

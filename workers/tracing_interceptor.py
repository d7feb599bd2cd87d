"""Temporal's OpenTelemetry TracingInterceptor, plus a root span for workflows started without a trace.

The SDK's interceptor carries the trace context from the client that starts a workflow, through the workflow's
``StartActivity`` spans, to each activity's ``RunActivity`` span, so spans opened inside activities (Training,
Validation, Serving) land in the starter's trace. But a workflow started without a trace context — by a
schedule (every drift scan), the Temporal CLI or a process that does not trace — gets no workflow spans at all,
and each activity would start a trace of its own. Here such a workflow gets a ``RunWorkflow`` root span whose
ids are derived from its workflow and run ids: replays (the worker may evict and re-run a workflow at any time)
re-derive the same context without emitting the span again, so every activity of a run shares one trace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

import opentelemetry.context
import opentelemetry.trace
from temporalio import workflow
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.worker import ExecuteWorkflowInput, WorkflowInterceptorClassInput

from evolution.observability.tracing import pinned_span_ids

ROOT_SPAN_EXTERN = "__evolution_opentelemetry_workflow_root_span"


@dataclass(frozen=True)
class RootSpan:
    name: str
    trace_id: int
    span_id: int
    time_ns: int
    attributes: dict[str, str]


def root_ids(workflow_id: str, run_id: str) -> tuple[int, int]:
    """Trace and span id of a run's root span: a pure function of the run, never zero."""
    digest = hashlib.sha256(f"{workflow_id}\n{run_id}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


class RootedTracingInterceptor(TracingInterceptor):
    """Register on the client (``Client.connect(interceptors=[...])``): its workers trace with it too."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)
        input.unsafe_extern_functions[ROOT_SPAN_EXTERN] = self._emit_root_span
        return RootedWorkflowInboundInterceptor

    def _emit_root_span(self, root: RootSpan) -> None:
        # Runs outside the workflow sandbox. Zero duration, like the SDK's other workflow spans: a span left
        # open across a long, replayable workflow is not safe.
        with pinned_span_ids(root.trace_id, root.span_id):
            started = self.tracer.start_span(
                root.name,
                context=opentelemetry.context.Context(),
                attributes=root.attributes,
                start_time=root.time_ns,
                kind=opentelemetry.trace.SpanKind.SERVER,
            )
        started.end(end_time=root.time_ns)


class RootedWorkflowInboundInterceptor(TracingWorkflowInboundInterceptor):
    """Uses the starter's trace context when there is one, else the run's derived root span."""

    def __init__(self, next: Any) -> None:
        super().__init__(next)
        self._derived_root = False

    def _load_workflow_context_carrier(self) -> dict[str, Any] | None:
        carrier = super()._load_workflow_context_carrier()
        if carrier is None:
            info = workflow.info()
            trace_id, span_id = root_ids(info.workflow_id, info.run_id)
            carrier = {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-01"}
            self._workflow_context_carrier = carrier
            self._derived_root = True
        return carrier

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        self._load_workflow_context_carrier()
        if not self._derived_root:
            return await super().execute_workflow(input)
        info = workflow.info()
        if not workflow.unsafe.is_replaying():
            trace_id, span_id = root_ids(info.workflow_id, info.run_id)
            emit = cast(Any, self._extern_functions)[ROOT_SPAN_EXTERN]
            emit(
                RootSpan(
                    name=f"RunWorkflow:{info.workflow_type}",
                    trace_id=trace_id,
                    span_id=span_id,
                    time_ns=workflow.time_ns(),
                    attributes={"temporalWorkflowID": info.workflow_id, "temporalRunID": info.run_id},
                )
            )
        # The root span above stands for the run, so the SDK's own RunWorkflow span (the base class) is skipped.
        with self._top_level_workflow_context(success_is_complete=True):
            return await self.next.execute_workflow(input)


def tracing_interceptor() -> RootedTracingInterceptor:
    """The interceptor every Temporal client of the system carries (it is inert until tracing is configured)."""
    return RootedTracingInterceptor()

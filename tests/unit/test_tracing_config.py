"""Tracing configuration that needs no collector: OTLP URLs, and derived span ids for replayed workflows."""

from __future__ import annotations

import pytest

from evolution.errors import InvalidInput
from evolution.observability.tracing import otlp_traces_url, pinned_span_ids
from workers.tracing_interceptor import root_ids


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otel.example.com/v1/traces", "https://otel.example.com/v1/traces"),
    ],
)
def test_an_otlp_base_url_gets_the_traces_path_once(endpoint: str, url: str) -> None:
    assert otlp_traces_url(endpoint) == url


def test_an_otlp_endpoint_that_is_not_an_http_url_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="collector:4318"):
        otlp_traces_url("collector:4318")


def test_a_workflow_runs_root_ids_are_a_pure_function_of_the_run() -> None:
    first = root_ids("retrain/acme", "run-1")
    assert first == root_ids("retrain/acme", "run-1")
    assert first != root_ids("retrain/acme", "run-2") and first != root_ids("retrain/other", "run-1")
    trace_id, span_id = first
    assert 0 < trace_id < 2**128 and 0 < span_id < 2**64


def test_pinned_span_ids_refuse_the_invalid_zero_id() -> None:
    with pytest.raises(InvalidInput, match="out of range"), pinned_span_ids(0, 1):
        pass

"""Serving stays up with the registry database and the Temporal server down: the short run of
bench/bench_serving_availability.py (real PostgreSQL stopped with pg_ctl -m immediate and started again, the real
Temporal dev server SIGKILLed and restarted, `evolution serve` as a subprocess, loopback HTTP load with API tokens).

The 5-minute figure: `make bench-availability`. Assertions are about counts, not latency: every request counts, and
at least 99.9 % of them must be answered with a prediction.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_serving_availability import AvailabilityReport, run

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> AvailabilityReport:
    # 24 s of load: the registry is down twice (about 5 s, then about 6 s together with Temporal), Temporal twice.
    # Generous per-request timeout and a modest pace: a loaded 2-core machine must not turn this into a speed test.
    result = run(
        duration_s=24.0,
        clients=2,
        rps=40.0,
        timeout_s=20.0,
        workdir=Path(tmp_path_factory.mktemp("availability")),
    )
    print(result.render())
    return result


def test_predictions_stay_available_while_the_registry_and_temporal_are_down(
    report: AvailabilityReport,
) -> None:
    assert report.serving_alive, report.render()
    assert report.requests >= 200, report.render()
    assert report.availability >= 0.999, report.render()
    down = {p.phase: p for p in report.phases}
    for phase in ("db down", "temporal down", "both down"):
        assert down[phase].requests > 0 and down[phase].available == down[phase].requests, report.render()


def test_a_model_never_loaded_gets_503_with_retry_after_while_the_registry_is_down(
    report: AvailabilityReport,
) -> None:
    assert [p.phase for p in report.probes] == ["db down", "both down"]
    for probe in report.probes:
        assert probe.status == 503 and probe.retry_after == "5", report.render()


def test_predictions_served_during_the_outages_are_recorded_once_the_registry_is_back(
    report: AvailabilityReport,
) -> None:
    assert report.flushed_after_s is not None, report.render()
    assert report.predictions_recorded == report.predictions_served, report.render()
    assert report.predictions_dropped == 0


def test_the_serving_process_reports_its_availability_and_logs_outages_not_requests(
    report: AvailabilityReport,
) -> None:
    ratio = report.availability_ratio_metric
    assert ratio is not None
    # The process counts the cold-model 503s of the probes (and would count any 5xx of the load) against itself.
    failed_at_most = len(report.probes) + (report.requests - report.available)
    assert 1 - failed_at_most / report.requests <= ratio < 1.0, report.render()
    # Per job (model refresh, prediction records, token checks) one line when an outage starts: two outages here.
    # A line per request would be hundreds.
    assert 2 <= report.warning_lines <= 12, report.render()

"""Crashes lose nothing: tenant lifecycles finish while the worker is SIGKILLed and the Temporal server too.

The short version of ``bench/crash_test.py`` (``make crash-test``: 100 tenants, 12 kills). A persisted Temporal dev
server and a SQLite (WAL) registry; the worker a separate process, SIGKILLed with its process group at random
moments (seeded, logged; each aimed at a moment when an activity body runs) and restarted; the dev server
SIGKILLed once and restarted on the same database file. 8 tenants, each a bootstrap lifecycle and a drift ->
shadow -> canary (>= 1000 labelled requests) -> approval lifecycle, with the production timeouts; the figures are
printed (pytest -s), among them the time from each kill to the next attempt of every activity it cut short. How
short that is (under a minute: the heartbeat timeout) is the crash test's printed figure, not an assertion here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.crash_harness import CrashPlan, run_crash_test

pytestmark = [pytest.mark.slow, pytest.mark.serial]
SEED = 20240607
log = logging.getLogger(__name__)


async def test_killing_the_worker_and_the_temporal_server_loses_no_transition_and_applies_none_twice(
    tmp_path: Path,
) -> None:
    plan = CrashPlan(tenants=8, worker_kills=3, server_kills=1, seed=SEED, deadline_s=420.0)
    report = await run_crash_test(plan, tmp_path)
    print(report.summary())  # the figures, in the test's output (pytest -s) and in the failure report

    assert len(report.chaos.worker_kills) == 3 and len(report.chaos.server_kills) == 1, report.summary()
    assert report.finished == len(report.lifecycles) == 2 * plan.tenants, report.summary()
    assert report.outcomes == {"promoted": 2 * plan.tenants}, report.summary()
    assert report.lost_transitions == 0, report.summary()
    assert report.doubled_transitions == 0 and report.extra_versions == 0, report.summary()
    assert report.state_mismatches == 0 and report.audit_gaps == 0, report.summary()
    assert report.verification_ok, report.summary()
    assert report.chaos.orphaned_training_jobs == 0, report.summary()
    assert report.problems == [], report.summary()
    assert report.journal.worker_pids >= 2, report.summary()  # the journal saw the restarted worker work on
    # The dangerous window was hit: the kills are aimed at moments when an activity body is running (training
    # bodies run for seconds), so some activities really ran twice, and the registry absorbed it.
    assert report.chaos.kills_inside_activities >= 1 and report.journal.started_twice >= 1, report.summary()
    # Every activity body a kill cut short was attempted again (a heartbeat timeout, not the step's start-to-close
    # timeout, let Temporal notice), and the kill -> next attempt figure was computed from the journal.
    retries = report.journal.retries
    assert retries.bodies >= 1 and retries.not_retried == [], report.summary()
    assert len(retries.delays_s) + retries.retried_before_kill == retries.bodies, report.summary()
    assert retries.p50_s is not None and retries.max_s is not None, report.summary()

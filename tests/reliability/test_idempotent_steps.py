"""Steps a killed worker re-runs: each must find its first attempt's effect instead of applying a second one.

Found by the crash test (tests/reliability/test_crash_recovery.py): a drift scan's seal re-run after its worker
died sealed the next, empty window (and the drift alert was lost); a training job outlived its SIGKILLed worker
and raced the retried attempt for the same files; a quarantine re-run after its first attempt committed was
refused as an idempotency conflict.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from evolution.data.sources import create_source_key, records_to_events
from evolution.demo.scenario import Scenario
from evolution.demo.synthetic import TARGET, DriftSpec, generate_rows
from evolution.lifecycle import ModelState, TransitionRequest
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import tenant_session
from evolution.registry.schema import Notification
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from evolution.training.parent_watch import PARENT_PID_ENV
from tests.support.models import install_model
from tests.support.scenario import seed_tenant
from tests.support.training_jobs import alive, all_dead, fake_python, wait_for_pids

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM = Principal.system("acme")
ADMIN = Principal.for_tenant("ada", Role.ADMIN, "acme")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home", tracing="off"))
    seed_tenant(svc, Scenario(tenant_id="acme", history_rows=300))
    yield svc
    svc.close()


def test_a_retried_seal_finds_the_window_its_first_attempt_sealed(services: Services) -> None:
    scanner = services.drift_scanner
    window_end = utcnow()  # fixed by the workflow, the same for every attempt

    first = scanner.seal_latest_window("acme", 50, window_end)
    retried = scanner.seal_latest_window("acme", 50, window_end)

    assert first.snapshot_id is not None and first.rows == 300
    assert retried == first
    assert len(services.snapshots.list_snapshots(SYSTEM, "acme")) == 1
    # Without the fixed end a re-run seals the next window, empty: the scan (and its alert) would be skipped.
    assert scanner.seal_latest_window("acme", 50).snapshot_id is None


def test_a_retried_seal_and_scan_keeps_its_first_report_and_notifies_again(
    services: Services, tmp_path: Path
) -> None:
    now = utcnow()  # the services fixture seeded a history that ended an hour ago
    services.snapshots.seal(SYSTEM, "acme", now - timedelta(minutes=50))
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    services.baselines.reset(ADMIN, "acme", "yield", "the first window is the norm", services.keyring)
    key_id, public_pem, key_path = create_source_key(services.settings.keys_dir, "acme", "window-2")
    services.events.register_source_key(ADMIN, "acme", key_id, public_pem)
    drifted = generate_rows(300, 9, now - timedelta(minutes=40), DriftSpec(at=now - timedelta(hours=1)), 1.0)
    events = records_to_events(
        drifted, "acme", key_id, key_path.read_bytes(), target=TARGET, request_prefix="w2"
    )
    assert services.events.ingest_objects(ADMIN, "acme", list(events), "test").accepted == 300
    scanner = services.drift_scanner

    # The worker died after the first attempt reported and notified, before it answered: the step runs again.
    first = scanner.seal_and_scan("acme", "yield", 50, now)
    retried = scanner.seal_and_scan("acme", "yield", 50, now)

    assert first.scan is not None and first.scan.level == "alert" and first.sealed.rows == 300
    assert retried == first
    assert [r.id for r in services.drift_reports.list_reports(SYSTEM, "acme")] == [first.scan.report_id]
    with tenant_session(services.factory, "acme") as session:
        kinds = session.scalars(select(Notification.kind).where(Notification.kind == "drift.alert")).all()
    assert len(kinds) == 2  # at least once: the first attempt may have died before its notification


def test_a_retried_quarantine_gets_its_first_answer_and_is_audited_once(services: Services) -> None:
    registry = services.registry
    version = registry.register_version(SYSTEM, "acme", "yield", "register-1")
    registry.transition(
        SYSTEM,
        TransitionRequest(
            version_id=version.id, to_state=ModelState.TRAINING, expected_version=1, request_id="to-training"
        ),
    )

    first = registry.quarantine(SYSTEM, version.id, "quarantine-1", "manifest signature does not verify")
    # The worker died before reporting: the retry reads the (now newer) lock version and asks again.
    retried = registry.quarantine(SYSTEM, version.id, "quarantine-1", "manifest signature does not verify")

    assert retried == first and first.version.state == ModelState.QUARANTINED
    trail = [e.to_state for e in registry.audit_trail(SYSTEM, "acme", subject_id=version.id)]
    assert trail == ["DRAFT", "TRAINING", "QUARANTINED"]


WORKER = """
import asyncio, sys
from pathlib import Path
from evolution.training.local_backend import LocalSubprocessBackend
from tests.support.training_jobs import make_job, training_dataset

tmp = Path(sys.argv[2])
backend = LocalSubprocessBackend(python_executable=sys.argv[1], heartbeat_interval_s=0.5)
asyncio.run(backend.run(make_job(tmp, training_dataset(tmp / "data.jsonl", rows=50))))
"""

# A job that does what the job runner does first (die_with_parent), records its pid, then trains forever.
JOB = """exec "{python}" -c '
import os, time
from evolution.training.parent_watch import die_with_parent
die_with_parent()
open("{pids}", "w").write(str(os.getpid()))
time.sleep(300)
'"""


async def test_a_training_job_dies_with_the_worker_that_started_it(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    job_python = fake_python(tmp_path, JOB.format(python=sys.executable, pids=pids))
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, job_python, str(tmp_path)], cwd=REPO_ROOT, start_new_session=True
    )
    job: int | None = None
    try:
        (job,) = await wait_for_pids(pids, 1, timeout_s=60)
        assert alive(job)
        os.killpg(worker.pid, signal.SIGKILL)  # the job is in a session of its own: this does not reach it
        await asyncio.to_thread(worker.wait)
        assert await all_dead([job], timeout_s=10), "the training job outlived its worker"
    finally:
        if job is not None and alive(job):
            os.kill(job, signal.SIGKILL)
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def test_the_job_runner_does_not_start_when_its_worker_is_already_gone(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text("{}")
    # Its parent is this test, not the (long gone) worker the variable names: it kills itself at once.
    env = {**os.environ, PARENT_PID_ENV: "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "evolution.training.job_runner", str(job)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]

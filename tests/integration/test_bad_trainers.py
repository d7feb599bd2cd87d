"""Bad trainers get named failures, and nothing else breaks (issue 15, item 6).

Every case is a real retraining on the Temporal dev server: the tenant's model is defined with a command trainer
(a tiny script written here that breaks the training contract one way), the real worker runs it through the real
local backend, and each test asserts that

* the candidate ends FAILED, and the reason, naming the problem, is in the audit log, in the run's status (what
  ``evolution status`` prints) and on the dashboard's governance page, with the trainer's last output lines where
  it printed any;
* the champion keeps serving (a prediction is answered by it);
* the circuit breaker counted the run as a failure: a crash, a timeout or a broken model is the trainer's bug.
  A sound model that merely lost to the champion is not (the last test).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from dashboard.governance import failed_candidates
from evolution.contracts import RetrainingInput, RetrainingResult, RolloutTiming
from evolution.demo.scenario import Scenario
from evolution.demo.synthetic import TARGET, generate_rows
from evolution.lifecycle import ModelState, VersionView
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from evolution.serving.predictor import PredictInstance
from evolution.timeutil import utcnow
from tests.support.contract_trainers import ADMIN, command_definition, write_trainer
from tests.support.models import install_model
from tests.support.scenario import seed_tenant
from tests.workflows.conftest import orchestrator, task_queue, temporal_env
from workers.orchestrator import TemporalOrchestrator
from workers.worker import build_worker

__all__ = [
    "orchestrator",
    "task_queue",
    "temporal_env",
]  # the dev server fixtures, shared with tests/workflows

SCENARIO = Scenario(tenant_id="acme", history_rows=600)
FAST = RolloutTiming(look_interval_s=0.5, approval_timeout_s=1)
SYSTEM = Principal.system("acme")
FIELD_APP = Principal.for_tenant("field-app", Role.VIEWER, "acme")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home", training_memory_limit_mb=None))
    yield svc
    svc.close()


@pytest.fixture
async def worker(
    temporal_env: WorkflowEnvironment, services: Services, task_queue: str
) -> AsyncIterator[None]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(temporal_env.client, services, task_queue, executor, max_cached_workflows=0):
            yield


@pytest.fixture
def champion(services: Services, tmp_path: Path) -> VersionView:
    """A tenant with a sealed snapshot to train on and a built-in champion serving."""
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(SYSTEM, "acme", utcnow())
    return install_model(services, "acme", tmp_path / "champion", ModelState.CHAMPION)


@dataclass(frozen=True)
class Failure:
    result: RetrainingResult
    reason: str
    """The reason of the candidate's FAILED transition, as the audit log keeps it."""
    status_message: str
    """What the run's status query says (``evolution status`` prints it as ``outcome: …``)."""


async def retrain(
    services: Services, orchestrator: TemporalOrchestrator, script: Path, **definition: Any
) -> RetrainingResult:
    services.model_definitions.define(ADMIN, "acme", "yield", command_definition(script, **definition))
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=FAST))
    return await orchestrator.retraining_result("acme")


async def failed_retraining(
    services: Services, orchestrator: TemporalOrchestrator, script: Path, **definition: Any
) -> Failure:
    """Run one retraining with ``script`` as the trainer; it must end FAILED. The champion must still serve."""
    result = await retrain(services, orchestrator, script, **definition)
    assert (result.outcome, result.final_state) == ("failed", "FAILED"), result
    assert result.version_id is not None
    candidate = services.registry.get_version(SYSTEM, result.version_id)
    assert candidate.state == ModelState.FAILED and candidate.model_hash is None
    [failed] = [
        e
        for e in services.registry.audit_trail(SYSTEM, "acme", subject_id=candidate.id)
        if e.to_state == "FAILED"
    ]
    reason = str(failed.details["reason"])
    status = await orchestrator.retraining_status("acme")
    assert status is not None and status.phase == "finished" and status.state == "FAILED"
    [shown] = failed_candidates(services, FIELD_APP, "acme", limit=1)  # the dashboard's governance page
    assert (shown.number, shown.reason) == (candidate.number, reason)
    assert_champion_serves(services)
    return Failure(result=result, reason=reason, status_message=status.message)


def assert_champion_serves(services: Services) -> None:
    champion = services.registry.current(SYSTEM, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None
    row = generate_rows(1, 5, utcnow())[0]
    features = {k: v for k, v in row.items() if k not in (TARGET, "event_time", "field_id")}
    predictor = services.predictor()
    try:
        [served] = predictor.predict(
            FIELD_APP, "acme", "yield", [PredictInstance(request_id="q-1", features=features)]
        )
    finally:
        predictor.close()
    assert served.served_by == champion.id and served.role == "champion"


def assert_counted_by_the_breaker(services: Services, failures: int = 1) -> None:
    breaker = services.breaker.status(SYSTEM, "acme")
    assert (breaker.last_outcome, breaker.consecutive_failures) == ("failed", failures), breaker


def assert_named(failure: Failure, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in failure.reason, failure.reason
        assert fragment in failure.status_message, failure.status_message


# ------------------------------------------------------------------------------------------------- the battery
async def test_a_trainer_that_exits_non_zero_fails_with_its_exit_code_and_last_lines(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    failure = await failed_retraining(services, orchestrator, write_trainer(tmp_path, "crash"))
    assert_named(failure, "the trainer exited with code 3", "the learning rate exploded", "epoch 29")
    assert "epoch 0:" not in failure.reason  # the last lines, not the whole log
    assert_counted_by_the_breaker(services)
    # The whole log stays in the job's directory; the copy of the tenant's rows it trained on does not.
    [log] = services.settings.work_dir.glob("acme/*/trainer.log")
    assert "epoch 0:" in log.read_text() and "the learning rate exploded" in log.read_text()
    assert [p.name for p in log.parent.iterdir()] == ["trainer.log"]


async def test_a_trainer_over_its_time_limit_is_killed_and_fails_as_timed_out(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    failure = await failed_retraining(
        services, orchestrator, write_trainer(tmp_path, "sleeps"), trainer={"timeout_s": 2}
    )
    assert time.monotonic() - started < 60  # the definition's limit, not the worker's 24 h
    assert_named(failure, "timed_out", "timed out after 2 s", "starting a very long fit")
    assert_counted_by_the_breaker(services)


async def test_a_trainer_over_its_memory_limit_fails_naming_the_limit(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    failure = await failed_retraining(
        services, orchestrator, write_trainer(tmp_path, "hungry"), trainer={"memory_mb": 256}
    )
    assert_named(failure, "running out of its memory limit of 256 MB", "MemoryError")
    assert_counted_by_the_breaker(services)


async def test_a_trainer_that_writes_nothing_fails(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    failure = await failed_retraining(services, orchestrator, write_trainer(tmp_path, "writes_nothing"))
    assert_named(failure, "wrote nothing into its output directory", "all done (but nothing saved)")
    assert_counted_by_the_breaker(services)


async def test_a_model_that_does_not_load_is_refused(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    failure = await failed_retraining(services, orchestrator, write_trainer(tmp_path, "not_onnx"))
    assert_named(failure, "ModelRefused", "model.onnx cannot be loaded")
    assert_counted_by_the_breaker(services)


async def test_a_model_whose_inputs_are_not_the_features_is_refused(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    failure = await failed_retraining(services, orchestrator, write_trainer(tmp_path, "wrong_inputs"))
    assert_named(failure, "inputs must be exactly the features", "rain_mm", "rainfall")
    assert_counted_by_the_breaker(services)


async def test_a_model_that_predicts_nan_is_refused(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    failure = await failed_retraining(services, orchestrator, write_trainer(tmp_path, "predicts_nan"))
    assert_named(failure, "non-finite predictions")
    assert_counted_by_the_breaker(services)


async def test_a_model_that_predicts_the_wrong_shape_is_refused(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    failure = await failed_retraining(services, orchestrator, write_trainer(tmp_path, "wrong_shape"))
    assert_named(failure, "first output has shape", ", 2]", "one prediction per row")
    assert_counted_by_the_breaker(services)


async def test_an_output_over_the_size_limit_is_refused_before_it_is_read(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    failure = await failed_retraining(
        services, orchestrator, write_trainer(tmp_path, "too_big"), max_model_mb=1
    )
    assert_named(failure, "3.0 MB into its output directory, over the definition's limit of 1 MB")
    assert_counted_by_the_breaker(services)


async def test_a_symlink_out_of_the_output_directory_is_refused_and_not_followed(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the worker's own file")
    script = write_trainer(tmp_path, "symlink_out", SECRET=str(secret))
    failure = await failed_retraining(services, orchestrator, script)
    assert_named(failure, "symbolic link", f"model.onnx -> {secret}", "out of its output directory")
    assert_counted_by_the_breaker(services)
    # Nothing of the linked file was stored as an artifact.
    stored = [p.read_bytes() for p in services.settings.artifacts_dir.rglob("*") if p.is_file()]
    assert not any(b"the worker's own file" in data for data in stored)


async def test_a_missing_code_file_fails_the_training_before_anything_runs(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    script = write_trainer(tmp_path, "linear")
    gone = tmp_path / "requirements.txt"
    failure = await failed_retraining(
        services, orchestrator, script, trainer={"code_files": [str(script), str(gone)]}
    )
    assert_named(failure, f"code file {str(gone)!r} cannot be read")
    assert_counted_by_the_breaker(services)


# ------------------------------------------------------------------------------------------- the breaker's rule
async def test_crashes_count_for_the_breaker_but_a_model_that_merely_lost_does_not(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    champion: VersionView,
    tmp_path: Path,
) -> None:
    await failed_retraining(services, orchestrator, write_trainer(tmp_path, "crash"))
    await failed_retraining(
        services, orchestrator, write_trainer(tmp_path, "sleeps"), trainer={"timeout_s": 1}
    )
    assert_counted_by_the_breaker(services, failures=2)

    # A sound model (it loads, fits the features, predicts finite numbers) that is far worse than the champion.
    losing = write_trainer(tmp_path / "losing", "knob_linear", KNOB_FILE=str(tmp_path / "zero"))
    (tmp_path / "zero").write_text("0")
    result = await retrain(services, orchestrator, losing)
    assert (result.outcome, result.final_state) == ("validation_failed", "FAILED"), result
    assert "worse than champion" in result.reason
    breaker = services.breaker.status(SYSTEM, "acme")
    assert (breaker.last_outcome, breaker.consecutive_failures, breaker.state) == (
        "validation_failed",
        0,
        "closed",
    )
    assert_champion_serves(services)

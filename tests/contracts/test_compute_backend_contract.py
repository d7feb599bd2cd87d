"""The compute port's contract, one suite over both backends: the local subprocess backend and the Kubernetes
Job backend talking HTTP to a fake API server whose kubelet runs the pod's command as a local process.

Real jobs run the real job runner; jobs that hang, record their pids or exit without a result are shell
stand-ins given as the 'interpreter' (the local backend's python_executable, the Job's command[0]).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from evolution.demo.synthetic import TARGET
from evolution.errors import InvalidInput
from evolution.training.compute import RESULT_FILE, ComputeBackend, load_dataset, sha256_file
from evolution.training.kubernetes_backend import KubernetesJobBackend
from evolution.training.kubernetes_manifest import job_name
from evolution.training.local_backend import LocalSubprocessBackend
from evolution.training.trainer import train
from tests.support.fake_kube_api import NAMESPACE, FakeKube, backend_config
from tests.support.fake_kube_pod_runner import image_env
from tests.support.training_jobs import (
    CONFIG,
    HANGING_JOB,
    all_dead,
    dataset_without_target,
    fake_python,
    make_job,
    training_dataset,
    wait_for_pids,
)


@dataclass
class BackendUnderTest:
    """Makes backends of one kind; ``python`` replaces the interpreter (a shell stand-in) when given."""

    kind: str
    make: Callable[[str | None], ComputeBackend]
    kube: FakeKube | None = None
    made: list[ComputeBackend] = field(default_factory=list)

    def __call__(self, python: str | None = None) -> ComputeBackend:
        backend = self.make(python)
        self.made.append(backend)
        return backend


@pytest.fixture(params=["local", "kubernetes"])
async def backends(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BackendUnderTest]:
    if request.param == "local":
        yield BackendUnderTest(
            "local", lambda python: LocalSubprocessBackend(python or sys.executable, heartbeat_interval_s=0.2)
        )
        return
    with FakeKube(image_env=image_env(), namespaces=[NAMESPACE]) as kube:

        def make(python: str | None) -> ComputeBackend:
            overrides = {"python_executable": python} if python else {}
            return KubernetesJobBackend(backend_config(kube, tmp_path, **overrides))

        harness = BackendUnderTest("kubernetes", make, kube)
        yield harness
        for backend in harness.made:
            assert isinstance(backend, KubernetesJobBackend)
            backend.close()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return training_dataset(tmp_path / "data.jsonl")


async def test_a_training_job_succeeds_and_its_outputs_verify(
    backends: BackendUnderTest, tmp_path: Path, dataset: Path
) -> None:
    result = await backends().run(make_job(tmp_path, dataset))

    assert result.status == "succeeded", (result.error, result.log_tail)
    assert result.exit_code == 0 and result.error is None
    expected = train(load_dataset(dataset), CONFIG, seed=13).file_digests()
    assert result.output_files == expected
    out = tmp_path / "out"
    assert {name: sha256_file(out / name) for name in expected} == expected
    assert result.metrics["n_train"] + result.metrics["n_holdout"] == 1500
    assert "holdout MAE" in result.log_tail


async def test_a_failing_job_reports_failure_with_its_log_tail(
    backends: BackendUnderTest, tmp_path: Path
) -> None:
    dataset = dataset_without_target(tmp_path / "no-target.jsonl")
    result = await backends().run(make_job(tmp_path, dataset))

    assert result.status == "failed" and result.exit_code == 1
    assert result.output_files == {}
    assert "InvalidInput" in result.log_tail and TARGET in result.log_tail
    assert result.error is not None and TARGET in result.error


async def test_a_job_exiting_cleanly_without_a_result_is_a_failure_even_with_a_stale_result(
    backends: BackendUnderTest, tmp_path: Path, dataset: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / RESULT_FILE).write_text('{"job_id": "job-1", "status": "succeeded", "output_files": {}}')
    result = await backends(fake_python(tmp_path, "echo done")).run(make_job(tmp_path, dataset))

    assert result.status == "failed" and result.exit_code == 0
    assert result.error is not None and RESULT_FILE in result.error
    assert "done" in result.log_tail
    assert not (out / RESULT_FILE).exists()


async def test_a_job_over_its_deadline_is_stopped_and_reported_as_timed_out(
    backends: BackendUnderTest, tmp_path: Path, dataset: Path
) -> None:
    pid_file = tmp_path / "pids"
    backend = backends(fake_python(tmp_path, HANGING_JOB.format(pids=pid_file)))
    result = await backend.run(make_job(tmp_path, dataset, timeout_s=1.5))

    assert result.status == "timed_out"
    assert result.error is not None and "timed out" in result.error
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2 and await all_dead(pids)


async def test_cancel_by_job_id_stops_a_running_job_and_run_reports_it(
    backends: BackendUnderTest, tmp_path: Path, dataset: Path
) -> None:
    pid_file = tmp_path / "pids"
    backend = backends(fake_python(tmp_path, HANGING_JOB.format(pids=pid_file)))
    task = asyncio.create_task(backend.run(make_job(tmp_path, dataset, job_id="to-cancel")))
    pids = await wait_for_pids(pid_file, 2)

    await backend.cancel("to-cancel")
    result = await asyncio.wait_for(task, timeout=15)
    assert result.status == "failed" and result.error == "cancelled"
    assert await all_dead(pids)


async def test_cancelling_the_caller_stops_the_job_and_re_raises(
    backends: BackendUnderTest, tmp_path: Path, dataset: Path
) -> None:
    pid_file = tmp_path / "pids"
    backend = backends(fake_python(tmp_path, HANGING_JOB.format(pids=pid_file)))
    task = asyncio.create_task(backend.run(make_job(tmp_path, dataset)))
    pids = await wait_for_pids(pid_file, 2)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await all_dead(pids)
    if backends.kube is not None:  # and nothing is left behind in the cluster
        assert await _gone(backends.kube, "job-1")


async def test_the_heartbeat_is_called_while_the_job_runs(
    backends: BackendUnderTest, tmp_path: Path, dataset: Path
) -> None:
    beats: list[str] = []
    backend = backends(fake_python(tmp_path, "sleep 1"))
    result = await backend.run(make_job(tmp_path, dataset, job_id="beating"), heartbeat=beats.append)

    assert result.status == "failed"  # it wrote no result; what matters here is that it was waited on
    assert len(beats) >= 2 and all("beating" in beat for beat in beats)


async def test_the_same_job_id_cannot_run_twice_at_once_on_one_backend(
    backends: BackendUnderTest, tmp_path: Path, dataset: Path
) -> None:
    pid_file = tmp_path / "pids"
    backend = backends(fake_python(tmp_path, HANGING_JOB.format(pids=pid_file)))
    task = asyncio.create_task(backend.run(make_job(tmp_path, dataset)))
    await wait_for_pids(pid_file, 2)
    with pytest.raises(InvalidInput, match="already running"):
        await backend.run(make_job(tmp_path, dataset))
    await backend.cancel("job-1")
    assert (await asyncio.wait_for(task, timeout=15)).error == "cancelled"


async def _gone(kube: FakeKube, job_id: str, timeout_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if kube.job(NAMESPACE, job_name(job_id)) is None:
            return True
        await asyncio.sleep(0.05)
    return False

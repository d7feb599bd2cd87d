"""What only the Kubernetes Job backend does, against the fake API server over HTTP (its kubelet runs the pod's
command as a local process): the manifest it sends, adoption instead of a second Job, name clashes, Foreground
deletion, pods that can never start, Kubernetes' own retries, logs of a pod the deadline removed, and the checks
for `evolution doctor`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from evolution.errors import Conflict, InvalidInput, TrainingFailed
from evolution.training.compute import RESULT_FILE
from evolution.training.kubernetes_backend import KubernetesBackendConfig, KubernetesJobBackend
from evolution.training.kubernetes_manifest import build_job, job_name
from tests.support.fake_kube_api import NAMESPACE, FakeKube, backend_config
from tests.support.fake_kube_pod_runner import image_env
from tests.support.training_jobs import (
    HANGING_JOB,
    all_dead,
    eventually,
    fake_python,
    make_job,
    wait_for_pids,
)

IMAGE = "evolution-training:test"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(image_env=image_env(), namespaces=[NAMESPACE], known_images=[IMAGE]) as server:
        yield server


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text('{"x": 1}\n')
    return path


def _backend(
    kube: FakeKube, tmp_path: Path, python: str | None = None, **overrides: object
) -> KubernetesJobBackend:
    if python is not None:
        overrides["python_executable"] = python
    return KubernetesJobBackend(backend_config(kube, tmp_path, **({"image": IMAGE} | overrides)))


async def test_the_job_sent_is_the_typed_manifest_and_cancel_deletes_it_in_the_foreground(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    pid_file = tmp_path / "pids"
    backend = _backend(kube, tmp_path, fake_python(tmp_path, HANGING_JOB.format(pids=pid_file)))
    job = make_job(tmp_path, dataset)
    task = asyncio.create_task(backend.run(job))
    pids = await wait_for_pids(pid_file, 2)

    assert kube.created == [build_job(job, backend.config).to_manifest()]
    await backend.cancel(job.job_id)
    assert (await asyncio.wait_for(task, timeout=15)).error == "cancelled"
    assert kube.deletions == [
        {"namespace": NAMESPACE, "name": job_name("job-1"), "propagationPolicy": "Foreground"}
    ]
    assert await all_dead(pids)
    assert await eventually(lambda: kube.job_names(NAMESPACE) == [])  # once its pod is gone


async def test_one_read_that_misses_the_running_job_does_not_end_the_wait(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    go, starts = tmp_path / "go", tmp_path / "starts"
    python = fake_python(tmp_path, f'echo "$$" >> "{starts}"\nwhile [ ! -f "{go}" ]; do sleep 0.05; done')
    backend = _backend(kube, tmp_path, python, poll_interval_s=0.05)
    task = asyncio.create_task(backend.run(make_job(tmp_path, dataset)))
    await wait_for_pids(starts, 1)
    kube.stale_reads = 1  # the worker's next poll of its Job gets a lagging 404
    assert await eventually(lambda: kube.stale_reads == 0, timeout_s=30)
    go.touch()
    result = await asyncio.wait_for(task, timeout=60)
    assert result.status == "failed" and result.exit_code == 0, (
        result.error
    )  # it ran to its end: no result.json
    assert result.error is not None and "deleted" not in result.error


async def test_workers_running_the_same_job_share_one_kubernetes_job_and_a_retry_adopts_the_finished_one(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    go, starts = tmp_path / "go", tmp_path / "starts"
    script = f'echo "$$" >> "{starts}"\nwhile [ ! -f "{go}" ]; do sleep 0.05; done\necho finished'
    python = fake_python(tmp_path, script)
    job = make_job(tmp_path, dataset)
    # Two workers. The first reads its Job rarely, so the one stale read below is the second worker's first look.
    first = _backend(kube, tmp_path, python, poll_interval_s=8.0)
    second = _backend(kube, tmp_path, python)
    tasks = [asyncio.create_task(first.run(job))]
    await wait_for_pids(starts, 1)
    kube.stale_reads = 1  # the second worker's first look misses the Job: its create gets 409 AlreadyExists
    tasks.append(asyncio.create_task(second.run(job)))
    # Usually the second worker's look misses and its create gets 409 (adopted); if the first worker's own read takes
    # the stale answer instead, the second finds the Job at once. Either way both must share the one Job.
    assert await eventually(lambda: kube.stale_reads == 0 and len(_job_posts(kube)) in (1, 2), timeout_s=30)
    go.touch()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)

    assert len(kube.created) == 1
    for result in results:  # both waited for the same pod: exited 0, no result.json
        assert result.status == "failed" and result.exit_code == 0
        assert "finished" in result.log_tail and result.error is not None and RESULT_FILE in result.error
    retried = await _backend(kube, tmp_path, python).run(job)  # a retried activity: the Job is still there
    assert retried.status == "failed" and "finished" in retried.log_tail
    assert len(kube.created) == 1 and len(starts.read_text().split()) == 1


async def test_a_job_name_taken_by_a_different_training_job_is_a_conflict(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    backend = _backend(kube, tmp_path, fake_python(tmp_path, "exit 0"))
    await backend.run(make_job(tmp_path, dataset))
    with pytest.raises(Conflict, match=job_name("job-1")):
        await backend.run(make_job(tmp_path, dataset, seed=99))
    assert len(kube.created) == 1
    assert kube.deletions == [] and kube.job_names(NAMESPACE) == [
        job_name("job-1")
    ]  # the other Job is left be


async def test_paths_off_the_shared_work_volume_are_refused_before_anything_is_created(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    backend = _backend(kube, tmp_path / "mounted")
    with pytest.raises(InvalidInput, match="outside the shared work volume"):
        await backend.run(make_job(tmp_path, dataset))
    assert kube.created == [] and kube.requests == []


async def test_a_short_api_outage_is_waited_out_with_heartbeats(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    go, starts = tmp_path / "go", tmp_path / "starts"
    script = f'echo "$$" >> "{starts}"\nwhile [ ! -f "{go}" ]; do sleep 0.05; done\necho finished'
    beats: list[str] = []
    task = asyncio.create_task(
        _backend(kube, tmp_path, fake_python(tmp_path, script)).run(make_job(tmp_path, dataset), beats.append)
    )
    await wait_for_pids(starts, 1)
    kube.unavailable = True
    before = len(beats)
    assert await eventually(lambda: len(beats) >= before + 3)  # still heartbeating while the API is away
    kube.unavailable = False
    go.touch()
    result = await asyncio.wait_for(task, timeout=15)

    assert result.exit_code == 0 and "finished" in result.log_tail
    assert result.error is not None and RESULT_FILE in result.error  # judged on its outputs, not the outage


async def test_a_long_api_outage_fails_the_run(kube: FakeKube, tmp_path: Path, dataset: Path) -> None:
    starts = tmp_path / "starts"
    python = fake_python(tmp_path, f'echo "$$" >> "{starts}"\nexec sleep 300')
    task = asyncio.create_task(
        _backend(kube, tmp_path, python, api_outage_tolerance_s=0.5).run(make_job(tmp_path, dataset))
    )
    await wait_for_pids(starts, 1)
    kube.unavailable = True
    with pytest.raises(TrainingFailed, match="has been failing"):
        await asyncio.wait_for(task, timeout=15)
    kube.unavailable = False


async def test_a_pod_that_can_never_start_fails_at_once_and_its_job_is_deleted(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    backend = _backend(kube, tmp_path, image="not-pulled:1", image_pull_policy="Never")
    result = await backend.run(make_job(tmp_path, dataset, timeout_s=600))

    assert result.status == "failed"  # not timed_out: it did not wait for the deadline
    assert result.error is not None and "ErrImageNeverPull" in result.error and "not-pulled:1" in result.error
    assert [d["name"] for d in kube.deletions] == [job_name("job-1")]


async def test_kubernetes_retries_a_failed_pod_up_to_the_backoff_limit(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    starts = tmp_path / "starts"
    backend = _backend(
        kube, tmp_path, fake_python(tmp_path, f'echo "$$" >> "{starts}"\necho boom\nexit 3'), backoff_limit=1
    )
    result = await backend.run(make_job(tmp_path, dataset))

    assert result.status == "failed" and result.exit_code == 3
    assert result.error is not None
    assert "exit code 3" in result.error and "BackoffLimitExceeded" in result.error and "boom" in result.error
    assert len(starts.read_text().split()) == 2


async def test_the_log_of_a_pod_removed_at_the_deadline_is_the_tail_read_while_it_ran(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    backend = _backend(kube, tmp_path, fake_python(tmp_path, "echo warming up\nexec sleep 300"))
    result = await backend.run(make_job(tmp_path, dataset, timeout_s=1))

    assert result.status == "timed_out"
    assert result.error is not None and "timed out" in result.error and "deadline" in result.error
    assert "warming up" in result.log_tail
    job = kube.job(NAMESPACE, job_name("job-1"))
    assert job is not None and [c["reason"] for c in job["status"]["conditions"]][-1] == "DeadlineExceeded"


async def test_the_log_tail_is_limited_to_the_configured_size(
    kube: FakeKube, tmp_path: Path, dataset: Path
) -> None:
    python = fake_python(tmp_path, 'i=0; while [ $i -lt 500 ]; do echo "line $i"; i=$((i+1)); done')
    result = await _backend(kube, tmp_path, python, log_tail_chars=100).run(make_job(tmp_path, dataset))

    assert len(result.log_tail) <= 100 and result.log_tail.endswith("line 499\n")


def test_the_doctor_checks_pass_against_a_reachable_cluster(kube: FakeKube, tmp_path: Path) -> None:
    checks = _backend(kube, tmp_path).check()
    assert [(name, ok) for name, ok, _ in checks] == [
        ("kubernetes API reachable", True),
        (f"namespace {NAMESPACE} exists", True),
        (f"may create Jobs in {NAMESPACE}", True),
    ]
    assert "v1.33" in checks[0][2]
    assert len(kube.dry_runs) == 1 and kube.created == []  # a dry run creates nothing


def test_the_doctor_checks_name_a_missing_namespace(kube: FakeKube, tmp_path: Path) -> None:
    checks = _backend(kube, tmp_path, namespace="nowhere").check()
    assert [ok for _, ok, _ in checks] == [True, False, False]
    assert "nowhere" in checks[1][2] and "nowhere" in checks[2][2]


def test_the_doctor_checks_report_an_unreachable_api_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    config = KubernetesBackendConfig(api_url=url, work_mount_path=str(tmp_path), request_timeout_s=2)
    checks = KubernetesJobBackend(config).check()
    assert [ok for _, ok, _ in checks] == [False, False, False]
    assert url in checks[0][2]


async def test_an_unreachable_api_server_is_a_training_failure(tmp_path: Path, dataset: Path) -> None:
    config = KubernetesBackendConfig(
        api_url=f"http://127.0.0.1:{_closed_port()}", work_mount_path=str(tmp_path), request_timeout_s=2
    )
    with pytest.raises(TrainingFailed, match="cannot read Job"):
        await KubernetesJobBackend(config).run(make_job(tmp_path, dataset))


def _job_posts(kube: FakeKube) -> list[str]:
    return [path for method, path in kube.requests if method == "POST" and path.endswith("/jobs")]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

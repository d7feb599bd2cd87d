"""The production compute backend: each training run is one Kubernetes Job (official ``kubernetes`` client).

Same port as :class:`~evolution.training.local_backend.LocalSubprocessBackend`: ``run`` writes job.json into
the job's output directory on the shared work volume, creates the Job (see
:mod:`evolution.training.kubernetes_manifest`), polls it to its end while heartbeating, then reads and re-hashes
the outputs exactly as the local backend does.

- Idempotent: the Job's name is derived from the job id. A retried activity that finds the Job already there
  (or gets 409 AlreadyExists from a race) adopts it and waits for it; it never starts a second one. A Job of the
  same name built from a different TrainingJob is refused (:class:`~evolution.errors.Conflict`).
- Deadline: ``activeDeadlineSeconds`` is the job's timeout; Kubernetes stops the pod and marks the Job Failed
  with reason DeadlineExceeded, reported as ``timed_out``. Should the cluster not do so within
  ``deadline_grace_s``, the backend deletes the Job itself.
- Cancellation: ``cancel(job_id)`` and the cancellation of ``run`` (a cancelled workflow or activity) delete the
  Job with propagationPolicy Foreground, so its pod is stopped before the Job object disappears.
- A pod stuck on a permanent container error (bad image name, image absent with pull policy Never, a config
  error) fails the run at once instead of idling until the deadline.

This module is the policy (create or adopt, wait, time out, cancel, judge); the calls themselves and the pure
reading of what the API returns are :mod:`evolution.training.kubernetes_api`. A call in flight when the caller is
cancelled is let finish before the Job is deleted, so no Job is created behind a cleanup that already ran.

Two kinds of TrainingJob share all of the above, told apart by ``job.contract``:

- the built-in trainer (``contract`` None): job.json is written, our image runs the job runner, and its
  result.json is judged by :func:`~evolution.training.compute.verified_result`;
- an image trainer (``contract.trainer`` an ``ImageTrainer``, its input directory written by the caller): the
  worker hashes the three input files, clears a previous attempt's outputs, and creates the Job of
  :func:`~evolution.training.kubernetes_manifest.image_trainer_job_manifest` (our init container stages the input
  and checks it against those digests; then the tenant's image runs). Once the Job has ended (no container can
  write the output any more) the worker collects the output directory from the claim by the same rule as every
  backend, :func:`~evolution.training.compute.contract_result`; checking the model and signing it is the
  caller's. A command trainer is refused here: it is a program on the worker, run by the local backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from evolution.errors import Conflict, InvalidInput, TrainingFailed
from evolution.registry.model_definitions import ImageTrainer
from evolution.training.compute import (
    Heartbeat,
    TrainingJob,
    TrainingJobResult,
    contract_result,
    sha256_file,
    verified_result,
    write_job_file,
)
from evolution.training.contract import METRICS_FILE, MODEL_FILE
from evolution.training.kubernetes_api import (
    JobApi,
    JobOutcome,
    PodView,
    describe_api_error,
    make_api_client,
    terminal_outcome,
    v1_job,
)
from evolution.training.kubernetes_image_job import CONTRACT_INPUT_FILES, image_trainer_job_manifest
from evolution.training.kubernetes_manifest import (
    CONTAINER_NAME,
    JOB_DIGEST_ANNOTATION,
    KubernetesBackendConfig,
    build_job,
    job_digest,
    job_name,
)
from evolution.training.trainer import TrainingConfig

__all__ = ["KubernetesBackendConfig", "KubernetesJobBackend", "contract_input_digests"]

CONTRACT_OUTPUTS = (MODEL_FILE, METRICS_FILE)

log = logging.getLogger(__name__)

# Waiting reasons no amount of waiting fixes: the run fails at once (ImagePullBackOff may be transient; it is
# only reported in the heartbeat and left to the deadline).
PERMANENT_WAITING_REASONS = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)

Check = tuple[str, bool, str]


class KubernetesJobBackend:
    """Runs each TrainingJob as a batch/v1 Job in ``config.namespace``."""

    def __init__(self, config: KubernetesBackendConfig, api_client: k8s.ApiClient | None = None) -> None:
        self.config = config
        self._jobs = JobApi(config, api_client if api_client is not None else make_api_client(config))
        self._active: set[str] = set()
        self._cancelled: set[str] = set()
        self._wakeups: dict[str, asyncio.Event] = {}
        self._last_log: dict[str, str] = {}

    # -- the port -------------------------------------------------------------------------------------------

    async def run(self, job: TrainingJob, heartbeat: Heartbeat | None = None) -> TrainingJobResult:
        """Run ``job`` (the built-in trainer, or an image trainer) as one Job (see the module docstring)."""
        if job.job_id in self._active:
            raise InvalidInput(f"job {job.job_id!r} is already running on this backend")
        self._active.add(job.job_id)  # claimed before the first await, so two callers cannot both pass
        self._wakeups[job.job_id] = asyncio.Event()
        try:
            return await self._run(job, heartbeat)
        finally:
            self._active.discard(job.job_id)
            self._cancelled.discard(job.job_id)
            self._wakeups.pop(job.job_id, None)
            self._last_log.pop(job.job_id, None)

    async def cancel(self, job_id: str) -> None:
        """Delete the job's Job (Foreground: its pod goes first); a ``run`` waiting on it reports ``cancelled``.

        Raises TrainingFailed if the API server refuses or cannot be reached (the Job may then still run, until
        its deadline).
        """
        running_here = job_id in self._active
        if running_here:  # before the delete, so a poll that sees the Job vanish knows why
            self._cancelled.add(job_id)
        try:
            await self._jobs.delete_job(job_name(job_id))
        except TrainingFailed:
            self._cancelled.discard(job_id)
            raise
        wakeup = self._wakeups.get(job_id)
        if running_here and wakeup is not None:
            wakeup.set()

    def close(self) -> None:
        """Release the API client's connections."""
        self._jobs.client.close()

    # -- doctor -----------------------------------------------------------------------------------------------

    def check(self) -> list[Check]:
        """(name, ok, detail) for `evolution doctor`: API reachable, namespace there, Jobs may be created."""
        namespace = self.config.namespace
        host = self._jobs.client.configuration.host
        try:
            version = k8s.VersionApi(self._jobs.client).get_code(
                _request_timeout=self.config.request_timeout_s
            )
        except Exception as exc:  # any failure means unreachable; it is reported, not raised
            detail = f"{host}: {describe_api_error(exc)}"
            skipped = "not checked: the API server is unreachable"
            return [
                ("kubernetes API reachable", False, detail),
                (f"namespace {namespace} exists", False, skipped),
                (f"may create Jobs in {namespace}", False, skipped),
            ]
        results: list[Check] = [
            ("kubernetes API reachable", True, f"{host}: Kubernetes {version.git_version}")
        ]
        dry_run_ok, dry_run_detail = self._dry_run_create()
        try:
            self._jobs.core.read_namespace(namespace, _request_timeout=self.config.request_timeout_s)
            results.append((f"namespace {namespace} exists", True, "found"))
        except ApiException as exc:
            if exc.status == 404:
                results.append((f"namespace {namespace} exists", False, f"namespace {namespace!r} not found"))
            elif exc.status == 403 and dry_run_ok:
                detail = "may not read Namespace objects, but a Job was accepted into it (dry run)"
                results.append((f"namespace {namespace} exists", True, detail))
            else:
                results.append((f"namespace {namespace} exists", False, describe_api_error(exc)))
        results.append((f"may create Jobs in {namespace}", dry_run_ok, dry_run_detail))
        return results

    def _dry_run_create(self) -> tuple[bool, str]:
        base = self.config.work_mount_path
        probe = TrainingJob(
            job_id="doctor-dry-run",
            tenant="doctor",
            model_name="doctor",
            dataset_path=posixpath.join(base, "doctor", "dataset.jsonl"),
            config=TrainingConfig(features=["x"], target="y"),
            seed=0,
            output_dir=posixpath.join(base, "doctor", "model"),
            timeout_s=60,
        )
        manifest = build_job(probe, self.config).to_manifest()
        try:
            self._jobs.batch.create_namespaced_job(
                self.config.namespace,
                v1_job(manifest),
                dry_run="All",
                _request_timeout=self.config.request_timeout_s,
            )
        except ApiException as exc:
            return False, f"server-side dry-run create refused: {describe_api_error(exc)}"
        return True, "a server-side dry-run create of a training Job was accepted"

    # -- one run ----------------------------------------------------------------------------------------------

    async def _run(self, job: TrainingJob, heartbeat: Heartbeat | None) -> TrainingJobResult:
        job = _absolute(job)
        input_digests: dict[str, str] | None = None
        if job.contract is None:
            manifest = build_job(job, self.config).to_manifest()  # InvalidInput: paths off the shared volume
        elif isinstance(job.contract.trainer, ImageTrainer):
            # Hashed here, after the caller wrote them and before any pod exists: the staging step checks its copy
            # against these, so a change on the shared volume from now on is caught.
            input_digests = await self._jobs.call(contract_input_digests, Path(job.contract.input_dir))
            # InvalidInput: an image not pinned by digest, directories off the shared volume or not apart
            manifest = image_trainer_job_manifest(job, self.config, input_digests)
        else:
            raise TrainingFailed(
                f"the kubernetes compute backend runs image trainers; a {job.contract.trainer.kind} trainer "
                "is a program on the worker and needs the local backend"
            )
        name = manifest["metadata"]["name"]
        started = time.monotonic()
        owned = False  # True once a Job of this name is ours: created here, or adopted after the digest check
        try:
            existing = await self._jobs.read_job(name)
            if existing is None:
                owned = True  # a cancellation during the create must delete what it may have created
                existing = await self._create(job, name, manifest)
                owned = existing is None
            if existing is not None:
                # Conflict: another job's Job (or this job over other input), left alone
                self._check_adoptable(job, name, existing, input_digests)
                owned = True
            outcome, pod = await self._wait(job, name, started, heartbeat)
        except BaseException:  # cancelled (or a failing heartbeat): the Job must not outlive its caller
            if owned:
                with contextlib.suppress(BaseException):  # a second cancel must not skip the re-raise below
                    await asyncio.shield(self._jobs.delete_job(name))
            raise
        log_tail = await self._jobs.log_tail(name, pod)
        if log_tail is None:  # the pod is gone (deadline, deletion): the tail read while it ran, if any
            log_tail = self._last_log.get(job.job_id, "")
        return self._result(job, name, outcome, pod, log_tail, time.monotonic() - started)

    async def _create(self, job: TrainingJob, name: str, manifest: dict[str, Any]) -> k8s.V1Job | None:
        """Prepare the output directory (job.json; for an image trainer, a previous attempt's outputs removed) and
        create the Job: None if created, the existing Job if another worker was first."""
        if job.contract is None:
            await self._jobs.call(write_job_file, job)
        else:
            await self._jobs.call(prepare_output_dir, Path(job.output_dir))
        if await self._jobs.create_job(name, manifest, job_id=job.job_id):
            log.info("created Job %s/%s for training job %s", self.config.namespace, name, job.job_id)
            return None
        existing = await self._jobs.read_job(name)  # 409 AlreadyExists: someone created it first
        if existing is None:
            raise TrainingFailed(f"Job {self.config.namespace}/{name} was reported to exist but is gone")
        return existing

    def _check_adoptable(
        self, job: TrainingJob, name: str, existing: k8s.V1Job, input_digests: Mapping[str, str] | None
    ) -> None:
        annotations = (existing.metadata.annotations if existing.metadata else None) or {}
        if annotations.get(JOB_DIGEST_ANNOTATION) != job_digest(job, input_digests):
            raise Conflict(
                f"Job {self.config.namespace}/{name} already exists but was created for a different "
                f"training job than {job.job_id!r}; delete it or use another job id"
            )
        log.info(
            "adopting the existing Job %s/%s for training job %s", self.config.namespace, name, job.job_id
        )

    async def _wait(
        self, job: TrainingJob, name: str, started: float, heartbeat: Heartbeat | None
    ) -> tuple[JobOutcome, PodView | None]:
        """Poll until the Job ends, is cancelled or is stuck; heartbeat on every poll."""
        wakeup = self._wakeups[job.job_id]
        pod: PodView | None = None
        last_pod_check = 0.0
        failing_since: float | None = None
        while True:
            if job.job_id in self._cancelled:
                return JobOutcome(kind="cancelled"), pod
            try:
                current = await self._jobs.read_job(name)
                failing_since = None
            except (
                TrainingFailed
            ) as exc:  # the API server is away: keep waiting (and heartbeating), within reason
                failing_since = failing_since if failing_since is not None else time.monotonic()
                if time.monotonic() - failing_since >= self.config.api_outage_tolerance_s:
                    raise TrainingFailed(
                        f"{exc}; the API server has been failing for {self.config.api_outage_tolerance_s:g} s"
                    ) from exc
                log.warning("training job %s: %s (will retry)", job.job_id, exc)
            else:
                if current is None:
                    # One read can lag behind a Job that exists (a stale cache answers 404): a second look decides.
                    try:
                        current = await self._jobs.read_job(name)
                    except TrainingFailed:
                        continue  # the API server is failing: the outage handling above takes it from here
                if current is None:
                    if job.job_id in self._cancelled:
                        return JobOutcome(kind="cancelled"), pod
                    return JobOutcome(kind="failed", detail=f"Job {name} was deleted before it finished"), pod
                if current.metadata is not None and current.metadata.deletion_timestamp is not None:
                    return JobOutcome(kind="cancelled", detail=f"Job {name} is being deleted"), pod
                outcome = terminal_outcome(current)
                if outcome is not None:
                    return outcome, await self._jobs.newest_pod(name) or pod
            elapsed = time.monotonic() - started
            if elapsed > job.timeout_s + self.config.deadline_grace_s:
                await self._jobs.delete_job(name)
                detail = (
                    f"the cluster had not stopped it {self.config.deadline_grace_s:g} s after its deadline"
                )
                return JobOutcome(kind="timed_out", detail=detail), pod
            state = "pending"
            if time.monotonic() - last_pod_check >= self.config.pod_check_interval_s:
                last_pod_check = time.monotonic()
                pod = await self._jobs.newest_pod(name) or pod
                if pod is not None and pod.waiting_reason is None:
                    tail = await self._jobs.log_tail(name, pod)
                    if tail:
                        self._last_log[job.job_id] = tail
                if pod is not None and pod.waiting_reason in PERMANENT_WAITING_REASONS:
                    await self._jobs.delete_job(name)
                    detail = f"pod {pod.name} cannot start: {pod.waiting_reason}: {pod.waiting_message or ''}"
                    return JobOutcome(kind="failed", detail=detail.rstrip(": ")), pod
            if pod is not None:
                state = f"waiting ({pod.waiting_reason})" if pod.waiting_reason else "running"
            if heartbeat is not None:
                heartbeat(
                    f"training job {job.job_id} (Job {self.config.namespace}/{name}) {state} for {elapsed:.1f} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=self.config.poll_interval_s)

    def _result(
        self,
        job: TrainingJob,
        name: str,
        outcome: JobOutcome,
        pod: PodView | None,
        log_tail: str,
        duration_s: float,
    ) -> TrainingJobResult:
        exit_code = pod.exit_code if pod is not None else None
        base: dict[str, Any] = {
            "job_id": job.job_id,
            "duration_s": duration_s,
            "log_tail": log_tail,
            "exit_code": exit_code,
        }
        where = f"Job {self.config.namespace}/{name}"
        if outcome.kind == "cancelled":
            return TrainingJobResult(status="failed", error="cancelled", **base)
        if outcome.kind == "timed_out":
            how = outcome.detail or f"Kubernetes stopped it at activeDeadlineSeconds ({job.timeout_s:g} s)"
            error = f"timed out after {job.timeout_s:g} s; {where} was stopped: {how}"
            return TrainingJobResult(status="timed_out", error=error, **base)
        if outcome.kind == "succeeded":
            code = 0 if exit_code is None else exit_code
            judge = verified_result if job.contract is None else contract_result
            return judge(job, exit_code=code, exit_failure=None, duration_s=duration_s, log_tail=log_tail)
        if job.contract is not None:
            return contract_result(
                job,
                exit_code=exit_code,
                exit_failure=_contract_failure(where, outcome, pod, exit_code),
                duration_s=duration_s,
                log_tail=log_tail,
            )
        failure = f"{where} failed"
        if pod is not None and pod.terminated_reason is not None:
            failure += f": container {pod.terminated_reason}"
            if exit_code is not None:
                failure += f" with exit code {exit_code}"
                if pod.terminated_reason == "OOMKilled":
                    failure += " (its memory limit was exceeded)"
        if outcome.detail:
            failure += f" ({outcome.detail})"
        return verified_result(
            job, exit_code=exit_code, exit_failure=failure, duration_s=duration_s, log_tail=log_tail
        )


def _contract_failure(where: str, outcome: JobOutcome, pod: PodView | None, exit_code: int | None) -> str:
    """How a contract trainer's Job failed, worded as the job (contract_result says "the trainer" instead)."""
    detail = f" ({where}: {outcome.detail})" if outcome.detail else f" ({where})"
    if pod is not None and pod.container != CONTAINER_NAME:  # the tenant's code never ran
        code = f" with exit code {exit_code}" if exit_code is not None else ""
        reason = pod.terminated_reason or pod.waiting_reason or "failed"
        return f"the job never started: its {pod.container} step ended {reason}{code}{detail}"
    if pod is not None and pod.terminated_reason == "OOMKilled":
        return f"the job was killed for exceeding its memory limit (OOMKilled, exit code {exit_code}){detail}"
    if exit_code is not None:
        return f"the job exited with code {exit_code}{detail}"
    return f"the job failed{detail}"


def _absolute(job: TrainingJob) -> TrainingJob:
    """``job`` with its paths absolute and normalised, as the manifest and the worker's file access need them."""

    def normal(path: str) -> str:
        return posixpath.normpath(str(Path(path).absolute()))

    update: dict[str, object] = {
        "dataset_path": normal(job.dataset_path),
        "output_dir": normal(job.output_dir),
    }
    if job.contract is not None:
        update["contract"] = job.contract.model_copy(update={"input_dir": normal(job.contract.input_dir)})
    return job.model_copy(update=update)


def contract_input_digests(input_dir: Path) -> dict[str, str]:
    """sha256 hex of each contract input file in ``input_dir``, by name: what the staging step checks against.

    TrainingFailed if one is missing, a symbolic link or not a regular file (the staging step would refuse it).
    """
    digests: dict[str, str] = {}
    for name in CONTRACT_INPUT_FILES:
        path = input_dir / name
        if path.is_symlink() or not path.is_file():
            raise TrainingFailed(f"the contract input {str(path)!r} is missing or not a regular file")
        digests[name] = sha256_file(path)
    return digests


def prepare_output_dir(output_dir: Path) -> None:
    """Create an image trainer's output directory and remove a previous attempt's outputs from it.

    Only the contract's output names are removed (a directory of that name too, without following links), as
    write_job_file does for the built-in trainer: the directory is the caller's (created empty for each job), and
    a worker whose read of the Job came back stale may get here while another worker's pod is writing into it.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in CONTRACT_OUTPUTS:
        stale = output_dir / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)

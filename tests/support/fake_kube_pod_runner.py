"""The pod runner of the fake Kubernetes API server (tests/support/fake_kube_api.py): its Job controller and
kubelet of sorts, which run each Job's pods as local processes.

A created Job runs its pod template's container command as a local process (the "image" is the test environment:
``image_env`` supplies PATH and the like, the manifest's env goes on top, the container's workingDir is the cwd),
with its output captured for the log endpoint; ``activeDeadlineSeconds`` is enforced (kill, pod removed, condition
Failed with reason DeadlineExceeded), failed pods are retried up to ``backoffLimit``, the Job's status and
conditions follow the exit code, and a deleted Job's process is killed (SIGTERM, SIGKILL after the grace period).
The API server owns the store of Jobs and pods; the runner changes the objects it is handed, under the server's
lock, and asks the server to remove a Job whose Foreground deletion its pod's end completes.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_TICK = 0.05
_REPO_ROOT = Path(__file__).resolve().parents[2]


def image_env() -> dict[str, str]:
    """The kubelet's 'image' for this repo's tests: this virtualenv's interpreter first on PATH, the checkout
    importable (a real image has the package installed)."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(_REPO_ROOT)}


def timestamp() -> str:
    """Now, as the API server writes times in objects."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Pod:
    """One pod of a Job and the local process standing in for its container."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.process: subprocess.Popen[bytes] | None = None
        self.log = bytearray()
        self.reader: threading.Thread | None = None
        self.start_error: str | None = None

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


class JobRun:
    """A Job object as the API server stores it, with its pods and what its runner's thread needs to know."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.pods: list[Pod] = []
        self.delete_requested = threading.Event()
        self.policy = "Background"
        self.finished_at: float | None = None
        self.thread: threading.Thread | None = None


class PodRunner:
    """Runs each Job it is given in a thread of its own: pods one after another, as local processes, until the Job
    succeeds, fails or is deleted."""

    def __init__(
        self,
        *,
        lock: threading.RLock,
        remove: Callable[[JobRun], None],
        image_env: Mapping[str, str] | None = None,
        known_images: Collection[str] | None = None,
        max_grace_s: float = 5.0,
    ) -> None:
        self._lock = lock  # the API server's: the runner changes the objects the server serves
        self._remove = remove  # takes a Job out of the server's store
        self.image_env = dict(image_env or {})
        self.known_images = None if known_images is None else set(known_images)
        self.max_grace_s = max_grace_s

    def start(self, run: JobRun) -> None:
        """Begin running a Job just created (the thread ends when the Job succeeds, fails or is deleted)."""
        name = run.obj["metadata"]["name"]
        run.thread = threading.Thread(target=self._control, args=(run,), name=f"job-{name}", daemon=True)
        run.thread.start()

    def _control(self, run: JobRun) -> None:
        spec = run.obj["spec"]
        deadline_s = spec.get("activeDeadlineSeconds")
        started = time.monotonic()
        with self._lock:
            run.obj["status"] = {"startTime": timestamp(), "active": 0, "ready": 0, "terminating": 0}
        failures = 0
        while True:
            pod = self._start_pod(run)
            while True:
                if run.delete_requested.is_set():
                    if run.policy != "Orphan":
                        self.kill(pod)
                    with self._lock:
                        if run.obj["metadata"].get("deletionTimestamp"):
                            self._remove(run)
                        run.finished_at = time.monotonic()
                    return
                if deadline_s is not None and time.monotonic() - started >= deadline_s:
                    self.kill(pod)
                    with self._lock:
                        run.pods.remove(pod)  # the Job controller deletes the active pods
                        self._finish(
                            run,
                            failed=failures + 1,
                            reason="DeadlineExceeded",
                            message="Job was active longer than specified deadline",
                        )
                    return
                if pod.start_error is not None or (
                    pod.process is not None and pod.process.poll() is not None
                ):
                    break
                time.sleep(_TICK)
            code = 128 if pod.process is None else pod.process.wait()
            if pod.reader is not None:
                pod.reader.join(timeout=5)
            with self._lock:
                self._terminated(pod, code)
                if code == 0:
                    self._finish(run, succeeded=1, failed=failures)
                    return
                failures += 1
                run.obj["status"]["failed"] = failures
                if failures > spec["backoffLimit"]:
                    self._finish(
                        run,
                        failed=failures,
                        reason="BackoffLimitExceeded",
                        message="Job has reached the specified backoff limit",
                    )
                    return

    def _start_pod(self, run: JobRun) -> Pod:
        job = run.obj
        meta, template = job["metadata"], job["spec"]["template"]
        name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        container = template["spec"]["containers"][0]
        labels = dict(template["metadata"].get("labels", {}))
        labels.update(controller_labels(meta["name"], meta["uid"]))
        pod = Pod(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": timestamp(),
                    "labels": labels,
                    "annotations": dict(template["metadata"].get("annotations", {})),
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {**copy.deepcopy(template["spec"]), "nodeName": "fake-node"},
                "status": {
                    "phase": "Pending",
                    "startTime": timestamp(),
                    "containerStatuses": [
                        _container_status(container, {"waiting": {"reason": "ContainerCreating"}})
                    ],
                },
            }
        )
        with self._lock:
            run.pods.append(pod)
            job["status"]["active"] = 1
        image = container["image"]
        if self.known_images is not None and image not in self.known_images:
            never = container.get("imagePullPolicy") == "Never"
            reason = "ErrImageNeverPull" if never else "ImagePullBackOff"
            message = (
                f'Container image "{image}" is not present with pull policy of Never'
                if never
                else (f'Back-off pulling image "{image}"')
            )
            with self._lock:
                pod.obj["status"]["containerStatuses"] = [
                    _container_status(container, {"waiting": {"reason": reason, "message": message}})
                ]
            return pod
        env = dict(self.image_env)
        env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
        argv = list(container.get("command", [])) + list(container.get("args", []))
        try:
            process = subprocess.Popen(
                argv,
                cwd=container.get("workingDir") or None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:  # what containerd reports as StartError
            pod.start_error = f"failed to create task: exec: {argv[0]!r}: {exc.strerror}"
            return pod
        pod.process = process
        pod.reader = threading.Thread(target=self._read_output, args=(pod,), daemon=True)
        pod.reader.start()
        with self._lock:
            pod.obj["status"]["phase"] = "Running"
            pod.obj["status"]["containerStatuses"] = [
                _container_status(container, {"running": {"startedAt": timestamp()}}, ready=True)
            ]
            job["status"]["ready"] = 1
        return pod

    def _read_output(self, pod: Pod) -> None:
        assert pod.process is not None and pod.process.stdout is not None
        while chunk := os.read(pod.process.stdout.fileno(), 65536):
            with self._lock:
                pod.log += chunk
        pod.process.stdout.close()

    def _terminated(self, pod: Pod, code: int) -> None:
        container = pod.obj["spec"]["containers"][0]
        exit_code = code if code >= 0 else 128 - code  # killed by a signal: 128 + signal number
        reason = "Completed" if code == 0 else ("StartError" if pod.start_error else "Error")
        pod.obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        started = pod.obj["status"]["startTime"]
        pod.obj["status"]["containerStatuses"] = [
            _container_status(
                container,
                {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": started,
                        "finishedAt": timestamp(),
                        "containerID": f"fake://{pod.obj['metadata']['uid']}",
                        **({"message": pod.start_error} if pod.start_error else {}),
                    }
                },
            )
        ]

    def _finish(
        self, run: JobRun, *, succeeded: int = 0, failed: int = 0, reason: str = "", message: str = ""
    ) -> None:
        now = timestamp()
        status = run.obj["status"]
        status.update({"active": 0, "ready": 0})
        if succeeded:
            status["succeeded"] = succeeded
            status["completionTime"] = now
            status["conditions"] = [
                _condition(
                    "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
                ),
                _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
            ]
        else:
            status["conditions"] = [
                _condition("FailureTarget", reason, message),
                _condition("Failed", reason, message),
            ]
        if failed:
            status["failed"] = failed
        run.finished_at = time.monotonic()

    def kill(self, pod: Pod, grace_s: float | None = None) -> None:
        """SIGTERM the container's process group, SIGKILL after the grace period, as a kubelet does."""
        process = pod.process
        if process is None or process.poll() is not None:
            return
        if grace_s is None:
            grace_s = min(float(pod.obj["spec"].get("terminationGracePeriodSeconds", 30)), self.max_grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def controller_labels(name: str, uid: str) -> dict[str, str]:
    """The labels the Job controller puts on a Job's pod template and pods."""
    return {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }


def _container_status(
    container: dict[str, Any], state: dict[str, Any], *, ready: bool = False
) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
        "lastState": {},
    }


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    now = timestamp()
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }

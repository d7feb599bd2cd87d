"""The pod runner of the fake Kubernetes API server (tests/support/fake_kube_api.py): its Job controller and
kubelet of sorts, which run each Job's pods as local processes.

A created Job runs its pod template's init containers one after another, then its container, each as a local
process (the container's ``command`` then ``args``, with Kubernetes' ``$(VAR)`` expansion; the workingDir is the
cwd), with each container's output captured for the log endpoint. An init container that fails fails the pod
(restartPolicy Never) and the container never starts. ``activeDeadlineSeconds`` is enforced (kill, pod removed,
condition Failed with reason DeadlineExceeded), failed pods are retried up to ``backoffLimit``, the Job's status and
conditions follow the exit codes, and a deleted Job's process is killed (SIGTERM, SIGKILL after the grace period).
The API server owns the store of Jobs and pods; the runner changes the objects it is handed, under the server's
lock, and asks the server to remove a Job whose Foreground deletion its pod's end completes.

Images. An image is what its processes find: the environment it starts them with (``PATH`` decides which
executable a command names, ``PYTHONPATH`` what Python imports). ``images`` maps an image name to that
environment; an image not in the table gets ``image_env``. With ``known_images`` given, an image in neither is
"not pullable" (ImagePullBackOff, or ErrImageNeverPull under pull policy Never). The manifest's env goes on top.

Volumes. Without ``claims`` they are not emulated: a test's work directory is then the same host path the manifest
mounts, and mount paths are used as they are. With ``claims`` (claim name -> host directory standing for the
volume), each container's mounts are emulated by path translation: a persistentVolumeClaim mount is the claim's
directory joined with its ``subPath`` (created if missing, as the kubelet does), an emptyDir is a fresh directory
per pod shared by the pod's containers, and every mount path appearing in the command, args, env values and
workingDir is rewritten to its host directory (the longest mount path first). ``readOnly`` is not enforced: the
tests that care assert the manifest field instead.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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
    """One pod of a Job and the local process standing in for the container it is running now."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        spec = obj["spec"]
        # Init containers first, in order, then the container: the pod runs one at a time.
        self.steps: list[dict[str, Any]] = [*spec.get("initContainers", []), spec["containers"][0]]
        self.init_names = {c["name"] for c in spec.get("initContainers", [])}
        self.step = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: dict[str, bytearray] = {}  # container name -> output, for those that started
        self.reader: threading.Thread | None = None
        self.start_error: str | None = None
        self.volume_dirs: dict[str, Path] = {}  # emptyDir name -> its host directory (volumes emulated)

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def container(self) -> dict[str, Any]:
        """The container the pod is running (or waiting to run) now."""
        return self.steps[self.step]

    @property
    def in_init(self) -> bool:
        return self.step < len(self.steps) - 1


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
        images: Mapping[str, Mapping[str, str]] | None = None,
        claims: Mapping[str, Path] | None = None,
        max_grace_s: float = 5.0,
    ) -> None:
        self._lock = lock  # the API server's: the runner changes the objects the server serves
        self._remove = remove  # takes a Job out of the server's store
        self.image_env = dict(image_env or {})
        self.images = {name: dict(env) for name, env in (images or {}).items()}
        self.known_images = None if known_images is None else set(known_images) | set(self.images)
        self.claims = None if claims is None else {name: Path(path) for name, path in claims.items()}
        self.max_grace_s = max_grace_s
        self._scratch: Path | None = None  # where emulated emptyDirs live; made on first use

    def close(self) -> None:
        """Remove the emulated emptyDirs (call once every pod is dead)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

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
                    code = 128 if pod.process is None else pod.process.wait()
                    if pod.reader is not None:
                        pod.reader.join(timeout=5)
                    if code != 0 or not pod.in_init:
                        break
                    with self._lock:  # an init container completed: the next one (or the container) starts
                        self._terminated(pod, 0)
                        pod.step += 1
                    self._start_container(run, pod)
                    continue
                time.sleep(_TICK)
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
        spec = template["spec"]
        labels = dict(template["metadata"].get("labels", {}))
        labels.update(controller_labels(meta["name"], meta["uid"]))
        initializing = {"waiting": {"reason": "PodInitializing"}}
        status: dict[str, Any] = {
            "phase": "Pending",
            "startTime": timestamp(),
            "containerStatuses": [
                _container_status(
                    spec["containers"][0],
                    initializing
                    if spec.get("initContainers")
                    else {"waiting": {"reason": "ContainerCreating"}},
                )
            ],
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [
                _container_status(c, initializing) for c in spec["initContainers"]
            ]
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
                "spec": {**copy.deepcopy(spec), "nodeName": "fake-node"},
                "status": status,
            }
        )
        with self._lock:
            run.pods.append(pod)
            job["status"]["active"] = 1
        self._start_container(run, pod)
        return pod

    def _start_container(self, run: JobRun, pod: Pod) -> None:
        """Start the pod's current container as a process, or leave it waiting on an image it cannot pull."""
        container = pod.container
        image = container["image"]
        pod.process, pod.reader = None, None  # the previous container's, if an init container ran before
        if self.known_images is not None and image not in self.known_images:
            never = container.get("imagePullPolicy") == "Never"
            reason = "ErrImageNeverPull" if never else "ImagePullBackOff"
            message = (
                f'Container image "{image}" is not present with pull policy of Never'
                if never
                else (f'Back-off pulling image "{image}"')
            )
            with self._lock:
                self._set_state(pod, {"waiting": {"reason": reason, "message": message}})
            return
        env = dict(self.images.get(image, self.image_env))
        declared: dict[str, str] = {}
        for variable in container.get("env", []):  # each may refer to the ones declared before it
            declared[variable["name"]] = expand(variable.get("value", ""), declared)
        argv = [expand(a, declared) for a in [*container.get("command", []), *container.get("args", [])]]
        cwd = container.get("workingDir")
        try:
            mounts = self._mounts(pod, container)
        except KeyError as missing:  # what the kubelet reports when a claim does not exist
            pod.start_error = f"persistentvolumeclaim {missing} not found"
            return
        if mounts:
            argv = [translate(a, mounts) for a in argv]
            declared = {k: translate(v, mounts) for k, v in declared.items()}
            cwd = translate(cwd, mounts) if cwd else None
        env.update(declared)
        pod.logs[container["name"]] = bytearray()
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd or None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except (OSError, IndexError) as exc:  # what containerd reports as StartError
            what = argv[0] if argv else "(no command)"
            pod.start_error = f"failed to create task: exec: {what!r}: {getattr(exc, 'strerror', exc)}"
            return
        pod.process = process
        pod.reader = threading.Thread(target=self._read_output, args=(pod,), daemon=True)
        pod.reader.start()
        with self._lock:
            if not pod.in_init:
                pod.obj["status"]["phase"] = "Running"
                run.obj["status"]["ready"] = 1
            self._set_state(pod, {"running": {"startedAt": timestamp()}}, ready=not pod.in_init)

    def _mounts(self, pod: Pod, container: dict[str, Any]) -> list[tuple[str, str]]:
        """(mount path, host directory) of each of the container's mounts, when volumes are emulated."""
        if self.claims is None:
            return []
        volumes = {v["name"]: v for v in pod.obj["spec"].get("volumes", [])}
        mounts: list[tuple[str, str]] = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                host = self.claims[volume["persistentVolumeClaim"]["claimName"]] / mount.get("subPath", "")
            else:
                host = pod.volume_dirs.get(volume["name"]) or self._empty_dir(pod, volume["name"])
            host.mkdir(parents=True, exist_ok=True)
            mounts.append((mount["mountPath"], str(host)))
        return mounts

    def _empty_dir(self, pod: Pod, name: str) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="fake-kubelet-"))
        pod.volume_dirs[name] = self._scratch / pod.obj["metadata"]["uid"] / name
        return pod.volume_dirs[name]

    def _set_state(self, pod: Pod, state: dict[str, Any], *, ready: bool = False) -> None:
        """Set the state of the pod's current container in the pod's status."""
        container = pod.container
        key = "initContainerStatuses" if container["name"] in pod.init_names else "containerStatuses"
        pod.obj["status"][key] = [
            _container_status(container, state, ready=ready) if s["name"] == container["name"] else s
            for s in pod.obj["status"][key]
        ]

    def _read_output(self, pod: Pod) -> None:
        process, log = pod.process, pod.logs[pod.container["name"]]
        assert process is not None and process.stdout is not None
        while chunk := os.read(process.stdout.fileno(), 65536):
            with self._lock:
                log += chunk
        process.stdout.close()

    def _terminated(self, pod: Pod, code: int) -> None:
        """The current container ended with ``code``; the pod ends with it unless an init container completed."""
        exit_code = code if code >= 0 else 128 - code  # killed by a signal: 128 + signal number
        reason = "Completed" if code == 0 else ("StartError" if pod.start_error else "Error")
        if code != 0 or not pod.in_init:
            pod.obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        self._set_state(
            pod,
            {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": pod.obj["status"]["startTime"],
                    "finishedAt": timestamp(),
                    "containerID": f"fake://{pod.obj['metadata']['uid']}/{pod.container['name']}",
                    **({"message": pod.start_error} if pod.start_error else {}),
                }
            },
        )

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


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of command, args and env values (k8s.io/kubernetes third_party/forked/
    golang/expansion): ``$(NAME)`` becomes NAME's value if it is defined and stays as written if not, ``$$``
    becomes ``$``, and any other ``$`` stays."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] != "$" or i + 1 == len(value):
            out.append(value[i])
            i += 1
            continue
        following = value[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (end := value.find(")", i + 2)) != -1:
            name = value[i + 2 : end]
            out.append(env.get(name, f"$({name})"))
            i = end + 1
        else:  # an incomplete reference, or a $ that begins none: kept, and the next character read as usual
            out.append("$")
            i += 1
    return "".join(out)


# A path is a mount path (or below one) where it stands at the start of a value or after a separator that cannot
# be part of a path ("--data=/input/x", "a:/input"), and ends there or at a "/".
_PATH_START = r"""(?:^|(?<=[\s=:,"']))"""
_PATH_END = r"""(?=/|$|[\s=:,"'])"""


def translate(value: str, mounts: list[tuple[str, str]]) -> str:
    """``value`` with every mount path in it replaced by its host directory (the longest mount path wins)."""
    ordered = sorted(mounts, key=lambda m: len(m[0]), reverse=True)
    hosts = dict(ordered)
    pattern = _PATH_START + "(" + "|".join(re.escape(path) for path, _ in ordered) + ")" + _PATH_END
    return re.sub(pattern, lambda match: hosts[match[1]], value)


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

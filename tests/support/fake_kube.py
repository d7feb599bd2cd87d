"""A small Kubernetes API server with a kubelet of sorts, for the Job compute backend's tests.

It speaks, over real HTTP and with the JSON shapes the official client deserialises, exactly what the backend
uses: batch/v1 Jobs (create incl. server-side dry run, read, list, delete with a propagation policy), core/v1 pods
(list by label selector, read, read log), namespace read and /version. It is not a stub: creating a Job runs
its pod template's container command as a local process (the "image" is the test environment: ``image_env``
supplies PATH and the like, the manifest's env goes on top, the container's workingDir is the cwd), captures
its output for the log endpoint, enforces ``activeDeadlineSeconds`` (kill, pod removed, condition Failed with
reason DeadlineExceeded), retries failed pods up to ``backoffLimit``, sets the Job's status and conditions from
the exit code, honours ``ttlSecondsAfterFinished``, and kills the process when the Job is deleted (Foreground:
the Job stays, marked for deletion, until its pod is gone). Invalid objects get 422, duplicates 409, like the
real API server. Every manifest received is kept for inspection.

Volumes are not emulated: the test's work directory is the same host path the manifest mounts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from evolution.training.kubernetes_manifest import KubernetesBackendConfig

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_TICK = 0.05
_REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "training"


def image_env() -> dict[str, str]:
    """The kubelet's 'image' for this repo's tests: this virtualenv's interpreter first on PATH, the checkout
    importable (a real image has the package installed)."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(_REPO_ROOT)}


def backend_config(kube: FakeKube, work: Path, **overrides: object) -> KubernetesBackendConfig:
    """The Job backend's configuration for this fake cluster, polling fast; ``work`` is the shared volume."""
    fields: dict[str, object] = {
        "namespace": NAMESPACE,
        "image": "evolution-training:test",
        "api_url": kube.url,
        "work_volume_claim": "evolution-work",
        "work_mount_path": str(work),
        "poll_interval_s": 0.1,
        "pod_check_interval_s": 0.3,
    }
    return KubernetesBackendConfig.model_validate(fields | overrides)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.body = _status(code, reason, message)
        self.code = code


class _Pod:
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


class _JobRun:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.pods: list[_Pod] = []
        self.delete_requested = threading.Event()
        self.policy = "Background"
        self.finished_at: float | None = None
        self.thread: threading.Thread | None = None


class FakeKube:
    """Start with ``with FakeKube(image_env=...) as kube:``; point the client at ``kube.url``."""

    def __init__(
        self,
        *,
        image_env: Mapping[str, str] | None = None,
        namespaces: Collection[str] = ("default",),
        known_images: Collection[str] | None = None,
        max_grace_s: float = 5.0,
    ) -> None:
        self.image_env = dict(image_env or {})
        self.namespaces = set(namespaces)
        self.known_images = None if known_images is None else set(known_images)
        self.max_grace_s = max_grace_s
        self.created: list[dict[str, Any]] = []  # every Job manifest accepted (not dry runs), as received
        self.dry_runs: list[dict[str, Any]] = []
        self.deletions: list[dict[str, Any]] = []  # {"namespace", "name", "propagationPolicy"}
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        # Fault injection: this many upcoming Job reads answer 404 although the Job exists, as a read that raced
        # with another worker's create would.
        self.stale_reads = 0
        self.unavailable = False  # every request answers 503, as an API server that is restarting
        self._jobs: dict[tuple[str, str], _JobRun] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def __enter__(self) -> FakeKube:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"kube": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            runs = list(self._jobs.values())
        for run in runs:
            run.delete_requested.set()
            for pod in run.pods:
                self._kill(pod, grace_s=0)
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- inspection for tests ------------------------------------------------------------------------------------

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            run = self._jobs.get((namespace, name))
            return copy.deepcopy(run.obj) if run is not None else None

    def job_names(self, namespace: str) -> list[str]:
        with self._lock:
            return sorted(name for ns, name in self._jobs if ns == namespace)

    def pids(self, namespace: str, name: str) -> list[int]:
        """Process ids of the Job's pods that were started (dead or alive)."""
        with self._lock:
            run = self._jobs.get((namespace, name))
            pods = list(run.pods) if run is not None else []
        return [p.process.pid for p in pods if p.process is not None]

    def running(self) -> list[int]:
        """Pids of every container process still running."""
        with self._lock:
            pods = [p for run in self._jobs.values() for p in run.pods]
        return [p.process.pid for p in pods if p.process is not None and p.process.poll() is None]

    # -- API -------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.unavailable:
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        self._collect_garbage()
        path = path.rstrip("/") or "/"
        if method == "GET" and path == "/version":
            return 200, {
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0-fake",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.24",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if match := re.fullmatch(r"/api/v1/namespaces/([^/]+)", path):
            return self._read_namespace(match[1]) if method == "GET" else _not_allowed(method, path)
        if match := re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs", path):
            if method == "POST":
                return self._create_job(match[1], body, dry_run=query.get("dryRun") == "All")
            if method == "GET":
                return 200, self._list_jobs(match[1], query.get("labelSelector", ""))
            return _not_allowed(method, path)
        if match := re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)(/status)?", path):
            if method == "GET":
                return 200, self._read_job(match[1], match[2])
            if method == "DELETE" and not match[3]:
                return self._delete_job(match[1], match[2], query, body)
            return _not_allowed(method, path)
        if match := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path):
            if method == "GET":
                return 200, self._list_pods(match[1], query.get("labelSelector", ""))
            return _not_allowed(method, path)
        if match := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)(/log)?", path):
            if method != "GET":
                return _not_allowed(method, path)
            if match[3]:
                return 200, self._pod_log(match[1], match[2], query)
            return 200, copy.deepcopy(self._pod(match[1], match[2]).obj)
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({method} {path})")

    def _require_namespace(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')

    def _read_namespace(self, namespace: str) -> tuple[int, Any]:
        self._require_namespace(namespace)
        return 200, {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, namespace))},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def _create_job(self, namespace: str, body: Any, *, dry_run: bool) -> tuple[int, Any]:
        self._require_namespace(namespace)
        obj = _validated_job(namespace, body)
        name = obj["metadata"]["name"]
        uid = str(uuid.uuid4())
        obj["metadata"].update(
            {
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": str(time.monotonic_ns()),
                "generation": 1,
                "creationTimestamp": _now(),
            }
        )
        spec = obj["spec"]
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
        template_labels.update(_controller_labels(name, uid))
        obj["status"] = {}
        if dry_run:
            self.dry_runs.append(copy.deepcopy(body))
            return 201, obj
        with self._lock:
            if (namespace, name) in self._jobs:
                raise ApiError(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            run = _JobRun(obj)
            self._jobs[(namespace, name)] = run
            self.created.append(copy.deepcopy(body))
            run.thread = threading.Thread(target=self._control, args=(run,), name=f"job-{name}", daemon=True)
            run.thread.start()
            return 201, copy.deepcopy(obj)

    def _read_job(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            run = self._jobs.get((namespace, name))
            stale = self.stale_reads > 0
            self.stale_reads = max(0, self.stale_reads - 1)
            if run is None or stale:
                raise ApiError(404, "NotFound", f'jobs.batch "{name}" not found')
            return copy.deepcopy(run.obj)

    def _list_jobs(self, namespace: str, selector: str) -> dict[str, Any]:
        wanted = _parse_selector(selector)
        with self._lock:
            items = [
                copy.deepcopy(run.obj)
                for (ns, _), run in sorted(self._jobs.items())
                if ns == namespace and _matches(run.obj["metadata"].get("labels", {}), wanted)
            ]
        return {
            "apiVersion": "batch/v1",
            "kind": "JobList",
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }

    def _delete_job(self, namespace: str, name: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        policy = query.get("propagationPolicy") or (body or {}).get("propagationPolicy") or "Background"
        with self._lock:
            run = self._jobs.get((namespace, name))
            if run is None:
                raise ApiError(404, "NotFound", f'jobs.batch "{name}" not found')
            self.deletions.append({"namespace": namespace, "name": name, "propagationPolicy": policy})
            run.policy = policy
            meta = run.obj["metadata"]
            if policy == "Foreground":
                # The Job stays, marked, until its pods are gone; the controller then removes it.
                meta.setdefault("deletionTimestamp", _now())
                meta["finalizers"] = ["foregroundDeletion"]
                meta.setdefault("deletionGracePeriodSeconds", 0)
                if run.finished_at is not None:
                    self._remove(run)
            else:
                del self._jobs[(namespace, name)]
            run.delete_requested.set()
            obj = copy.deepcopy(run.obj)
        if policy != "Orphan":
            for pod in run.pods:
                threading.Thread(target=self._kill, args=(pod,), daemon=True).start()
        if policy == "Foreground":
            return 200, obj
        return 200, _status(200, "", "", {"name": name, "group": "batch", "kind": "jobs", "uid": meta["uid"]})

    def _all_pods(self, namespace: str) -> Iterator[_Pod]:
        for (ns, _), run in sorted(self._jobs.items()):
            if ns == namespace:
                yield from run.pods

    def _list_pods(self, namespace: str, selector: str) -> dict[str, Any]:
        wanted = _parse_selector(selector)
        with self._lock:
            items = [
                copy.deepcopy(p.obj)
                for p in self._all_pods(namespace)
                if _matches(p.obj["metadata"]["labels"], wanted)
            ]
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}

    def _pod(self, namespace: str, name: str) -> _Pod:
        with self._lock:
            for pod in self._all_pods(namespace):
                if pod.name == name:
                    return pod
        raise ApiError(404, "NotFound", f'pods "{name}" not found')

    def _pod_log(self, namespace: str, name: str, query: dict[str, str]) -> str:
        pod = self._pod(namespace, name)
        container = pod.obj["spec"]["containers"][0]["name"]
        if query.get("container", container) != container:
            raise ApiError(400, "BadRequest", f"container {query['container']} is not valid for pod {name}")
        if pod.start_error is not None:
            return ""
        if pod.process is None:
            waiting = pod.obj["status"]["containerStatuses"][0]["state"].get("waiting", {})
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: {waiting.get("reason", "")}',
            )
        with self._lock:
            text = bytes(pod.log).decode("utf-8", errors="replace")
        if "tailLines" in query:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) > 0 else ""
        if "limitBytes" in query:
            text = text.encode()[: int(query["limitBytes"])].decode("utf-8", errors="ignore")
        return text

    # -- the controller and kubelet -----------------------------------------------------------------------

    def _control(self, run: _JobRun) -> None:
        spec = run.obj["spec"]
        deadline_s = spec.get("activeDeadlineSeconds")
        started = time.monotonic()
        with self._lock:
            run.obj["status"] = {"startTime": _now(), "active": 0, "ready": 0, "terminating": 0}
        failures = 0
        while True:
            pod = self._start_pod(run)
            while True:
                if run.delete_requested.is_set():
                    if run.policy != "Orphan":
                        self._kill(pod)
                    with self._lock:
                        if run.obj["metadata"].get("deletionTimestamp"):
                            self._remove(run)
                        run.finished_at = time.monotonic()
                    return
                if deadline_s is not None and time.monotonic() - started >= deadline_s:
                    self._kill(pod)
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

    def _start_pod(self, run: _JobRun) -> _Pod:
        job = run.obj
        meta, template = job["metadata"], job["spec"]["template"]
        name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        container = template["spec"]["containers"][0]
        labels = dict(template["metadata"].get("labels", {}))
        labels.update(_controller_labels(meta["name"], meta["uid"]))
        pod = _Pod(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": _now(),
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
                    "startTime": _now(),
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
                _container_status(container, {"running": {"startedAt": _now()}}, ready=True)
            ]
            job["status"]["ready"] = 1
        return pod

    def _read_output(self, pod: _Pod) -> None:
        assert pod.process is not None and pod.process.stdout is not None
        while chunk := os.read(pod.process.stdout.fileno(), 65536):
            with self._lock:
                pod.log += chunk
        pod.process.stdout.close()

    def _terminated(self, pod: _Pod, code: int) -> None:
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
                        "finishedAt": _now(),
                        "containerID": f"fake://{pod.obj['metadata']['uid']}",
                        **({"message": pod.start_error} if pod.start_error else {}),
                    }
                },
            )
        ]

    def _finish(
        self, run: _JobRun, *, succeeded: int = 0, failed: int = 0, reason: str = "", message: str = ""
    ) -> None:
        now = _now()
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

    def _remove(self, run: _JobRun) -> None:
        meta = run.obj["metadata"]
        self._jobs.pop((meta["namespace"], meta["name"]), None)

    def _kill(self, pod: _Pod, grace_s: float | None = None) -> None:
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

    def _collect_garbage(self) -> None:
        """ttlSecondsAfterFinished: finished Jobs past their TTL disappear with their pods."""
        now = time.monotonic()
        with self._lock:
            for key, run in list(self._jobs.items()):
                ttl = run.obj["spec"].get("ttlSecondsAfterFinished")
                if ttl is not None and run.finished_at is not None and now - run.finished_at >= ttl:
                    del self._jobs[key]


def _not_allowed(method: str, path: str) -> tuple[int, Any]:
    raise ApiError(405, "MethodNotAllowed", f"the server does not allow {method} on {path}")


def _controller_labels(name: str, uid: str) -> dict[str, str]:
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
    now = _now()
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _parse_selector(selector: str) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!"):
            raise ApiError(
                400, "BadRequest", f"unsupported label selector term {term!r} (fake: equality only)"
            )
        wanted[key.strip()] = value.lstrip("=").strip()
    return wanted


def _matches(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def _quantity(value: Any) -> float:
    match = _QUANTITY.match(str(value))
    if match is None:
        raise ValueError(f"quantities must match the regular expression {_QUANTITY.pattern!r}")
    return float(match[1]) * _SUFFIX[match[2]]


def _validated_job(namespace: str, body: Any) -> dict[str, Any]:
    """What the API server's validation would refuse with 422 Invalid (the parts the backend touches)."""
    if not isinstance(body, dict) or body.get("kind") != "Job" or body.get("apiVersion") != "batch/v1":
        raise ApiError(400, "BadRequest", "the body must be a batch/v1 Job")
    obj = copy.deepcopy(body)
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    problems: list[str] = []
    if meta.get("namespace", namespace) != namespace:
        raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the request")
    if not _DNS_LABEL.match(name) or len(name) > 63:
        problems.append(
            f"metadata.name: Invalid value: {name!r}: must be a DNS-1123 label of at most 63 chars"
        )
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    for where, labels in (
        ("metadata.labels", meta.get("labels") or {}),
        ("spec.template.metadata.labels", (template.get("metadata") or {}).get("labels") or {}),
    ):
        for key, value in labels.items():
            prefix, _, label = key.rpartition("/")
            if len(label) > 63 or not _LABEL_NAME.match(label) or len(prefix) > 253:
                problems.append(f"{where}: Invalid value: {key!r}: name part must be a valid label name")
            if len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(f"{where}: Invalid value: {value!r}: a valid label value")
    pod = template.get("spec") or {}
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append('spec.template.spec.restartPolicy: Unsupported value: must be "Never" or "OnFailure"')
    containers = pod.get("containers") or []
    if not containers:
        problems.append("spec.template.spec.containers: Required value")
    for index, container in enumerate(containers):
        if not container.get("name") or not container.get("image"):
            problems.append(f"spec.template.spec.containers[{index}]: name and image are required")
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for key, value in {**requests, **limits}.items():
            try:
                _quantity(value)
            except ValueError as exc:
                problems.append(f"spec.template.spec.containers[{index}].resources[{key}]: {exc}")
        for key in set(requests) & set(limits):
            with contextlib.suppress(ValueError):
                if _quantity(requests[key]) > _quantity(limits[key]):
                    problems.append(
                        f"spec.template.spec.containers[{index}].resources.requests[{key}]: must be less than "
                        f"or equal to {key} limit"
                    )
        mounts = {m.get("name") for m in container.get("volumeMounts") or []}
        volumes = {v.get("name") for v in pod.get("volumes") or []}
        for missing in sorted(mounts - volumes):
            problems.append(
                f"spec.template.spec.containers[{index}].volumeMounts.name: Not found: {missing!r}"
            )
    if spec.get("activeDeadlineSeconds") is not None and int(spec["activeDeadlineSeconds"]) <= 0:
        problems.append("spec.activeDeadlineSeconds: must be greater than 0")
    if spec.get("backoffLimit") is not None and int(spec["backoffLimit"]) < 0:
        problems.append("spec.backoffLimit: must be greater than or equal to 0")
    if problems:
        raise ApiError(422, "Invalid", f'Job.batch "{name}" is invalid: ' + "; ".join(problems))
    return obj


class _Handler(BaseHTTPRequestHandler):
    kube: FakeKube
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.kube.requests.append((method, self.path))
        try:
            body = json.loads(raw) if raw else None
            code, payload = self.kube.handle(method, parts.path, query, body)
        except ApiError as exc:
            code, payload = exc.code, exc.body
        except (ValueError, KeyError, TypeError) as exc:
            code, payload = 400, _status(400, "BadRequest", f"{type(exc).__name__}: {exc}")
        if isinstance(payload, str):
            data, kind = payload.encode(), "text/plain"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

"""A small Kubernetes API server for the Job compute backend's tests; its pod runner
(tests/support/fake_kube_pod_runner.py) runs each Job's pods as local processes.

It speaks, over real HTTP and with the JSON shapes the official client deserialises, exactly what the backend
uses: batch/v1 Jobs (create incl. server-side dry run, read, list, delete with a propagation policy), core/v1 pods
(list by label selector, read, read log), namespace read and /version. It is not a stub: it keeps the Jobs and
their pods, hands each created Job to the pod runner (which sets the Job's status and conditions as its pods run),
serves the pods' captured output on the log endpoint, honours ``ttlSecondsAfterFinished``, and has the runner kill
the process when the Job is deleted (Foreground: the Job stays, marked for deletion, until its pod is gone).
Invalid objects get 422, duplicates 409, like the real API server. Every manifest received is kept for inspection.

Images and volumes are the pod runner's (see its docstring): an image is the environment its processes start with
(``images``, else ``image_env``); volumes are emulated by path translation when ``claims`` maps claim names to host
directories, and otherwise not at all (the test's work directory is then the same host path the manifest mounts).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from evolution.training.kubernetes_manifest import KubernetesBackendConfig
from tests.support.fake_kube_pod_runner import JobRun, Pod, PodRunner, controller_labels, timestamp

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
NAMESPACE = "training"


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


class FakeKube:
    """Start with ``with FakeKube(image_env=...) as kube:``; point the client at ``kube.url``."""

    def __init__(
        self,
        *,
        image_env: Mapping[str, str] | None = None,
        namespaces: Collection[str] = ("default",),
        known_images: Collection[str] | None = None,
        images: Mapping[str, Mapping[str, str]] | None = None,
        claims: Mapping[str, Path] | None = None,
        max_grace_s: float = 5.0,
    ) -> None:
        self.namespaces = set(namespaces)
        self.created: list[dict[str, Any]] = []  # every Job manifest accepted (not dry runs), as received
        self.dry_runs: list[dict[str, Any]] = []
        self.deletions: list[dict[str, Any]] = []  # {"namespace", "name", "propagationPolicy"}
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        # Fault injection: this many upcoming Job reads answer 404 although the Job exists, as a read that raced
        # with another worker's create would.
        self.stale_reads = 0
        self.unavailable = False  # every request answers 503, as an API server that is restarting
        self._jobs: dict[tuple[str, str], JobRun] = {}
        self._lock = threading.RLock()
        self.pod_runner = PodRunner(
            lock=self._lock,
            remove=self._remove,
            image_env=image_env,
            known_images=known_images,
            images=images,
            claims=claims,
            max_grace_s=max_grace_s,
        )
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
                self.pod_runner.kill(pod, grace_s=0)
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.pod_runner.close()

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

    def pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Job's pods as the API server would serve them (status included), oldest first."""
        with self._lock:
            run = self._jobs.get((namespace, name))
            return [copy.deepcopy(p.obj) for p in (run.pods if run is not None else [])]

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
                "creationTimestamp": timestamp(),
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
        template_labels.update(controller_labels(name, uid))
        obj["status"] = {}
        if dry_run:
            self.dry_runs.append(copy.deepcopy(body))
            return 201, obj
        with self._lock:
            if (namespace, name) in self._jobs:
                raise ApiError(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            run = JobRun(obj)
            self._jobs[(namespace, name)] = run
            self.created.append(copy.deepcopy(body))
            self.pod_runner.start(run)
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
                meta.setdefault("deletionTimestamp", timestamp())
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
                threading.Thread(target=self.pod_runner.kill, args=(pod,), daemon=True).start()
        if policy == "Foreground":
            return 200, obj
        return 200, _status(200, "", "", {"name": name, "group": "batch", "kind": "jobs", "uid": meta["uid"]})

    def _all_pods(self, namespace: str) -> Iterator[Pod]:
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

    def _pod(self, namespace: str, name: str) -> Pod:
        with self._lock:
            for pod in self._all_pods(namespace):
                if pod.name == name:
                    return pod
        raise ApiError(404, "NotFound", f'pods "{name}" not found')

    def _pod_log(self, namespace: str, name: str, query: dict[str, str]) -> str:
        pod = self._pod(namespace, name)
        spec = pod.obj["spec"]
        container = query.get("container", spec["containers"][0]["name"])  # the default: the first container
        if container not in {c["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]}:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        with self._lock:
            log = pod.logs.get(container)
            if log is None:
                if pod.start_error is not None and pod.container["name"] == container:
                    return ""
                statuses = [
                    *pod.obj["status"].get("initContainerStatuses", []),
                    *pod.obj["status"]["containerStatuses"],
                ]
                (status,) = [s for s in statuses if s["name"] == container]
                waiting = status["state"].get("waiting", {})
                raise ApiError(
                    400,
                    "BadRequest",
                    f'container "{container}" in pod "{name}" is waiting to start: {waiting.get("reason", "")}',
                )
            text = bytes(log).decode("utf-8", errors="replace")
        if "tailLines" in query:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) > 0 else ""
        if "limitBytes" in query:
            text = text.encode()[: int(query["limitBytes"])].decode("utf-8", errors="ignore")
        return text

    # -- the store ---------------------------------------------------------------------------------------------

    def _remove(self, run: JobRun) -> None:
        """Take the Job out (its Foreground deletion done); the pod runner calls it too, under the lock."""
        meta = run.obj["metadata"]
        self._jobs.pop((meta["namespace"], meta["name"]), None)

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
    names = [c.get("name") for c in [*(pod.get("initContainers") or []), *containers]]
    for doubled in sorted({n for n in names if n and names.count(n) > 1}):
        problems.append(f"spec.template.spec.containers: Duplicate value: {doubled!r}")
    every = [("initContainers", i, c) for i, c in enumerate(pod.get("initContainers") or [])]
    every += [("containers", i, c) for i, c in enumerate(containers)]
    for field, index, container in every:
        where = f"spec.template.spec.{field}[{index}]"
        if not container.get("name") or not container.get("image"):
            problems.append(f"{where}: name and image are required")
        for mount in container.get("volumeMounts") or []:
            sub_path = mount.get("subPath", "")
            if sub_path.startswith("/") or ".." in sub_path.split("/"):
                problems.append(
                    f"{where}.volumeMounts.subPath: Invalid value: {sub_path!r}: must be relative"
                )
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for key, value in {**requests, **limits}.items():
            try:
                _quantity(value)
            except ValueError as exc:
                problems.append(f"{where}.resources[{key}]: {exc}")
        for key in set(requests) & set(limits):
            with contextlib.suppress(ValueError):
                if _quantity(requests[key]) > _quantity(limits[key]):
                    problems.append(
                        f"{where}.resources.requests[{key}]: must be less than or equal to {key} limit"
                    )
        mounts = {m.get("name") for m in container.get("volumeMounts") or []}
        volumes = {v.get("name") for v in pod.get("volumes") or []}
        for missing in sorted(mounts - volumes):
            problems.append(f"{where}.volumeMounts.name: Not found: {missing!r}")
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

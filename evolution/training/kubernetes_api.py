"""The Kubernetes API as the Job backend uses it: one namespace's Jobs and their pods, and what they say.

:class:`JobApi` makes the calls (read, create and delete a Job; find its newest pod; read that pod's log) and
nothing else: each blocking client call runs in a worker thread (``asyncio.to_thread``) with the configured
request timeout, and an API error comes back as :class:`~evolution.errors.TrainingFailed` in the API server's
words. What to do about the answers (adopt, wait, time out, cancel) is
:class:`~evolution.training.kubernetes_backend.KubernetesJobBackend`'s policy.

Reading the answers is pure and lives here beside the calls: :func:`terminal_outcome` (which Job condition ends
a run) and :func:`newest_pod_view` (what the training container of the newest pod is doing, or the init container
that stopped it from starting).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, TypeVar

from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict

from evolution.errors import TrainingFailed
from evolution.training.kubernetes_manifest import CONTAINER_NAME, KubernetesBackendConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOG_LIMIT_BYTES = 256 * 1024


class JobOutcome(BaseModel):
    """How a run ended, as far as the Job (or the backend's own deadline and cancellation) tells."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["succeeded", "failed", "timed_out", "cancelled"]
    detail: str = ""


class PodView(BaseModel):
    """The training container of a Job's newest pod: how it ended, or why it is still waiting.

    ``container`` names the container the view is about: the training container, or an init container that
    failed or cannot start (an image trainer's input staging), since then the training container never runs and
    its state ("PodInitializing") explains nothing.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    container: str = CONTAINER_NAME
    exit_code: int | None = None
    terminated_reason: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None


def make_api_client(config: KubernetesBackendConfig) -> k8s.ApiClient:
    """An API client for ``config``: api_url as is, else the pod's service account, else a kubeconfig file."""
    configuration = k8s.Configuration()
    if config.api_url:
        configuration.host = config.api_url.rstrip("/")
    elif config.in_cluster:
        kube_config.load_incluster_config(client_configuration=configuration)
    else:
        kube_config.load_kube_config(
            config_file=config.kubeconfig,
            context=config.context,
            client_configuration=configuration,
            persist_config=False,
        )
    return k8s.ApiClient(configuration)


class JobApi:
    """Async calls on the Jobs and pods of ``config.namespace``, each with ``config.request_timeout_s``."""

    def __init__(self, config: KubernetesBackendConfig, api_client: k8s.ApiClient) -> None:
        self.config = config
        self.client = api_client
        self.batch = k8s.BatchV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` in a worker thread; if the caller is cancelled meanwhile, the call is let finish first.

        So no Job is created behind a cleanup that already ran.
        """
        task = asyncio.ensure_future(asyncio.to_thread(functools.partial(fn, *args, **kwargs)))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved, so an error of the abandoned call is not logged as unhandled
            raise

    async def read_job(self, name: str) -> k8s.V1Job | None:
        """The Job, or None if there is none of that name."""
        answer = await self._job_call(
            "read", name, self.batch.read_namespaced_job, name, self.config.namespace
        )
        return answer[0] if answer is not None else None

    async def create_job(self, name: str, manifest: dict[str, Any], *, job_id: str) -> bool:
        """Create the Job ``manifest`` describes: True if created, False if one of that name exists (409)."""
        answer = await self._job_call(
            "create",
            name,
            self.batch.create_namespaced_job,
            self.config.namespace,
            v1_job(manifest),
            tolerated=409,
            context=f" for training job {job_id!r}",
        )
        return answer is not None

    async def delete_job(self, name: str) -> None:
        """Delete the Job with propagationPolicy Foreground (its pod goes first); a missing Job is no error."""
        answer = await self._job_call(
            "delete",
            name,
            self.batch.delete_namespaced_job,
            name,
            self.config.namespace,
            propagation_policy="Foreground",
        )
        if answer is not None:
            log.info("deleted Job %s/%s", self.config.namespace, name)

    async def _job_call(
        self,
        verb: str,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        tolerated: int = 404,
        context: str = "",
        **kwargs: Any,
    ) -> tuple[T] | None:
        """``fn`` on Job ``name`` through :meth:`call`, with the request timeout and its errors in words.

        Returns the answer in a 1-tuple (an answer may itself be None), or None when the API server answers with
        the status ``tolerated`` (404 on read and delete, 409 on create); any other failure is TrainingFailed.
        """
        where = f"Job {self.config.namespace}/{name}"
        try:
            return (await self.call(fn, *args, _request_timeout=self.config.request_timeout_s, **kwargs),)
        except ApiException as exc:
            if exc.status == tolerated:
                return None
            raise TrainingFailed(f"cannot {verb} {where}{context}: {describe_api_error(exc)}") from exc
        except Exception as exc:  # connection refused, timeouts: urllib3 errors
            raise TrainingFailed(f"cannot {verb} {where}: {describe_api_error(exc)}") from exc

    async def newest_pod(self, name: str) -> PodView | None:
        """The Job's newest pod, or None if it has none (yet, or any more)."""
        try:
            pods = await self.call(
                self.core.list_namespaced_pod,
                self.config.namespace,
                label_selector=f"job-name={name}",
                _request_timeout=self.config.request_timeout_s,
            )
        except Exception as exc:  # the pod is only for diagnostics
            log.warning("cannot list the pods of Job %s: %s", name, describe_api_error(exc))
            return None
        return newest_pod_view(pods)

    async def log_tail(self, name: str, pod: PodView | None) -> str | None:
        """The last lines of the pod's log; None if there is no pod or its log cannot be read."""
        if pod is None:
            return None
        try:
            response = await self.call(
                self.core.read_namespaced_pod_log,
                pod.name,
                self.config.namespace,
                container=pod.container,
                tail_lines=self.config.log_tail_lines,
                limit_bytes=_LOG_LIMIT_BYTES,
                _request_timeout=self.config.request_timeout_s,
            )
            text = response if isinstance(response, str) else str(response)  # text/plain: kept as text
        except Exception as exc:  # the pod may be gone (deadline, TTL); the log is best effort
            log.info("no log for pod %s of Job %s: %s", pod.name, name, describe_api_error(exc))
            return None
        return text[-self.config.log_tail_chars :]


def v1_job(manifest: dict[str, Any]) -> k8s.V1Job:
    body = k8s.V1Job.from_dict(manifest)
    assert body is not None
    return body


def terminal_outcome(job: k8s.V1Job) -> JobOutcome | None:
    """The Job's final condition, if it has one (FailureTarget and SuccessCriteriaMet are not final)."""
    conditions = (job.status.conditions if job.status else None) or []
    for condition in conditions:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return JobOutcome(kind="succeeded")
        if condition.type == "Failed":
            if condition.reason == "DeadlineExceeded":
                return JobOutcome(kind="timed_out", detail=condition.message or "DeadlineExceeded")
            detail = ": ".join(p for p in (condition.reason, condition.message) if p)
            return JobOutcome(kind="failed", detail=detail)
    return None


def newest_pod_view(pods: k8s.V1PodList) -> PodView | None:
    """The training container's state in the newest of ``pods``, or None if the list is empty."""
    items = [p for p in pods.items if p.metadata is not None and p.metadata.name]
    if not items:
        return None
    newest = max(items, key=lambda p: _timestamp(p.metadata.creation_timestamp if p.metadata else None))
    assert newest.metadata is not None and newest.metadata.name is not None
    view = PodView(name=newest.metadata.name)
    for status in (newest.status.init_container_statuses if newest.status else None) or []:
        if status.state is None:
            continue
        terminated, waiting = status.state.terminated, status.state.waiting
        if terminated is not None and terminated.exit_code != 0:
            return view.model_copy(
                update={
                    "container": status.name,
                    "exit_code": terminated.exit_code,
                    "terminated_reason": terminated.reason,
                }
            )
        if waiting is not None and waiting.reason not in (None, "PodInitializing"):
            return view.model_copy(
                update={
                    "container": status.name,
                    "waiting_reason": waiting.reason,
                    "waiting_message": waiting.message,
                }
            )
    statuses = (newest.status.container_statuses if newest.status else None) or []
    for status in statuses:
        if status.name != CONTAINER_NAME or status.state is None:
            continue
        terminated, waiting = status.state.terminated, status.state.waiting
        if terminated is not None:
            view = view.model_copy(
                update={"exit_code": terminated.exit_code, "terminated_reason": terminated.reason}
            )
        elif waiting is not None:
            view = view.model_copy(
                update={"waiting_reason": waiting.reason, "waiting_message": waiting.message}
            )
    return view


def describe_api_error(exc: BaseException) -> str:
    """An API error in words: the API server's message when it sent one, else the exception's."""
    if isinstance(exc, ApiException):
        message = exc.reason or ""
        body = exc.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", errors="replace")
        if isinstance(body, str) and body:
            try:
                message = json.loads(body).get("message") or message
            except (ValueError, AttributeError):
                message = body[:300]
        return f"HTTP {exc.status}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _timestamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0

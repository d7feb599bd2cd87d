"""Activities heartbeat while their body runs, so that a worker that dies is noticed within the heartbeat timeout.

Without a heartbeat Temporal learns that a worker died only when the step's start-to-close timeout runs out (up to
25 minutes for the drift scan); with one it retries the step elsewhere within the heartbeat timeout
(``workflows.policies.HEARTBEAT_TIMEOUT``). The domain code in ``evolution/`` knows nothing of Temporal, so the beat
comes from beside it: a side thread for a sync activity (it runs in the worker's thread pool and may block for
minutes in a database or a store), an asyncio task for an async one. A beat says the worker process is alive, not
that the work progresses: the start-to-close timeout stays the bound on the work itself. Code that does report
progress (garbage collection, training) passes its messages through the beat, and the side beats repeat the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from temporalio import activity

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# The SDK sends at most one heartbeat per 0.8 x the heartbeat timeout and drops none of the latest: beating more
# often than that costs one hop to the worker's event loop, and beating less often could miss a window.
BEAT_EVERY_S = 5.0
# A fraction of the activity's own heartbeat timeout, so that a shorter one (tests cap it) is still met.
BEATS_PER_TIMEOUT = 4
# A sync beat waits for the worker's event loop (the SDK's heartbeat is scheduled there); the body's end does not.
JOIN_S = 1.0
HEARTBEATS_ATTR = "__evolution_heartbeats__"


def beat_interval_s() -> float:
    timeout = activity.info().heartbeat_timeout
    if timeout is None or timeout.total_seconds() <= 0:
        return BEAT_EVERY_S
    return min(BEAT_EVERY_S, timeout.total_seconds() / BEATS_PER_TIMEOUT)


class Beat:
    """What the body may call to report progress: ``beat("collected v3")``; the side beats repeat the last."""

    def __init__(self, details: tuple[Any, ...], send: Callable[[], None]) -> None:
        self.details = details
        self._send = send

    def __call__(self, *details: Any) -> None:
        self.details = details
        self._send()


@contextlib.contextmanager
def heartbeating(*details: Any) -> Iterator[Beat]:
    """Heartbeat from a side thread while a sync activity's body runs (outside an activity: do nothing)."""
    if not activity.in_activity():
        yield Beat(details, lambda: None)
        return
    every_s = beat_interval_s()
    name = activity.info().activity_type
    # activity.heartbeat finds the activity through a context variable: the side thread runs in a copy of ours.
    context = contextvars.copy_context()
    stop, wake = threading.Event(), threading.Event()
    beat = Beat(details, wake.set)

    def send() -> None:
        try:
            context.run(activity.heartbeat, *beat.details)
        except Exception:  # the event loop was busy past the SDK's wait: the next beat tries again
            log.debug("heartbeat of %s not sent", name, exc_info=True)

    def loop() -> None:
        while True:
            wake.wait(every_s)
            wake.clear()
            if stop.is_set():
                return
            send()

    thread = threading.Thread(target=loop, name="activity-heartbeat", daemon=True)
    thread.start()
    try:
        yield beat
    finally:
        stop.set()
        wake.set()
        thread.join(JOIN_S)


@contextlib.asynccontextmanager
async def heartbeating_async(*details: Any) -> AsyncIterator[Beat]:
    """Heartbeat from an asyncio task while an async activity's body runs (outside an activity: do nothing)."""
    if not activity.in_activity():
        yield Beat(details, lambda: None)
        return
    every_s = beat_interval_s()
    name = activity.info().activity_type
    beat = Beat(details, lambda: activity.heartbeat(*beat.details))

    async def loop() -> None:
        # The task inherits the activity's context (asyncio copies it), so activity.heartbeat finds the activity.
        while True:
            await asyncio.sleep(every_s)
            try:
                activity.heartbeat(*beat.details)
            except Exception:  # a failed beat must not end the beats, nor fail the body once awaited
                log.debug("heartbeat of %s not sent", name, exc_info=True)

    task = asyncio.create_task(loop(), name="activity-heartbeat")
    try:
        yield beat
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def heartbeats(fn: F) -> F:
    """Decorate an activity (sync or async) so that it heartbeats while its body runs."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with heartbeating_async():
                return await fn(*args, **kwargs)

        setattr(async_wrapper, HEARTBEATS_ATTR, True)
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with heartbeating():
            return fn(*args, **kwargs)

    setattr(wrapper, HEARTBEATS_ATTR, True)
    return wrapper  # type: ignore[return-value]


def marks_heartbeats(fn: F) -> F:
    """Mark an activity that heartbeats by itself (it uses :func:`heartbeating` directly, to report progress)."""
    setattr(fn, HEARTBEATS_ATTR, True)
    return fn


def does_heartbeat(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (an activity, possibly wrapped by other decorators) heartbeats while its body runs."""
    current: Any = fn
    while current is not None:
        if getattr(current, HEARTBEATS_ATTR, False):
            return True
        current = getattr(current, "__wrapped__", None)
    return False

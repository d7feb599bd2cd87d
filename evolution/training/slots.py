"""At most N trainings at once in one worker process: a season-wide drift must not start a hundred jobs together.

Each local training job holds its dataset and model in memory (about 250 MB for a season of one tenant); a hundred
tenants alerting in the same hour would otherwise exhaust the machine. Attempts beyond the limit wait, in arrival
order, heartbeating so that Temporal sees them alive, and start when a slot frees. The wait is not charged: the
quota charges the job's own run time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from evolution.errors import InvalidInput

Heartbeat = Callable[[str], None]
WAIT_HEARTBEAT_S = (
    2.0  # as often as a running job heartbeats: a step's heartbeat timeout can be a few seconds
)


class TrainingSlots:
    """A counting limit for one event loop (the worker's); ``None`` as the limit means no limit."""

    def __init__(self, limit: int | None, heartbeat_interval_s: float = WAIT_HEARTBEAT_S) -> None:
        if limit is not None and limit < 1:
            raise InvalidInput(
                f"max concurrent trainings must be at least 1 (or unset for no limit), not {limit}"
            )
        self.limit = limit
        self.heartbeat_interval_s = heartbeat_interval_s
        self._semaphore = asyncio.Semaphore(limit) if limit is not None else None
        self.running = 0
        self.waiting = 0

    @asynccontextmanager
    async def hold(self, what: str, heartbeat: Heartbeat | None = None) -> AsyncIterator[None]:
        """Hold a slot for the body; wait for one first if all are taken, heartbeating while waiting."""
        if self._semaphore is not None:
            await self._acquire(what, heartbeat)
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self._semaphore is not None:
                self._semaphore.release()

    async def _acquire(self, what: str, heartbeat: Heartbeat | None) -> None:
        assert self._semaphore is not None
        # A task rather than wait_for(acquire()): a timeout must not cancel the acquisition (and lose its turn).
        acquiring = asyncio.ensure_future(self._semaphore.acquire())
        self.waiting += 1
        try:
            while True:
                done, _ = await asyncio.wait({acquiring}, timeout=self.heartbeat_interval_s)
                if done:
                    return
                if heartbeat is not None:
                    heartbeat(f"{what} waits for a training slot ({self.limit} running in this worker)")
        except BaseException:
            if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
                self._semaphore.release()  # acquired in the same moment as we were cancelled
            else:
                acquiring.cancel()
            raise
        finally:
            self.waiting -= 1

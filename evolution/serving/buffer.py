"""Prediction records reach the registry without a request ever waiting for, or failing on, a registry outage.

Every served prediction is recorded (``predictions`` table) so that the outcome arriving later as a learning event
joins to it (the canary's paired errors). :class:`PredictionBuffer` does that:

* while the registry answers and nothing is pending, a request's records are written at once, in the request (a
  learning event sent right after the answer finds its prediction); or, with ``write_behind_s`` (what the serving
  process uses), never in the request: a background writer collects what arrived within ``write_behind_s`` and
  writes it in one transaction. The outcome joins its prediction when the canary reads paired errors, not when
  the event is ingested, so a record that lands a few milliseconds after the answer loses nothing, and the
  request path pays for no database round trip (bench/bench_serving.py);
* when a write fails, the records go to a bounded in-memory queue and a background writer retries, oldest first,
  in batches, with a growing pause (0.2 s doubling to 5 s); requests meanwhile only append to the queue, never touch
  the registry. When the queue is empty again, requests write directly once more. One warning when an outage
  starts, one line when it ends: never a line per request;
* the queue is bounded (``capacity`` records, plus the one batch being written). When it is full the OLDEST records
  are dropped, counted in ``predictions_dropped_total{reason="buffer_full"}`` with a warning (once per outage). The
  predictions themselves were served; what is lost is their record, so outcomes that arrive for them later join
  nothing: those requests are missing from the canary's paired errors and traffic counts;
* a batch the registry refuses (an integrity error) is written one record at a time: a record already stored (a
  commit whose answer was lost when the database went down) is skipped, one refused on its own is dropped and
  counted as ``reason="rejected"``, the rest are written;
* the records are only in memory: records still queued when the process dies are lost the same way. ``close``
  gives the writer a last chance to drain the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from sqlalchemy.exc import IntegrityError

from evolution.data.outcomes import PredictionRecord
from evolution.observability import metrics
from evolution.serving.outage import Outage

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 100_000
DEFAULT_BATCH = 500
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0

Write = Callable[[Sequence[PredictionRecord]], None]


class PredictionBuffer:
    def __init__(
        self,
        write: Write,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = DEFAULT_BATCH,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
        write_behind_s: float | None = None,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError(
                f"prediction buffer: capacity ({capacity}) and batch size ({batch_size}) must be >= 1"
            )
        self._write = write
        self._capacity = capacity
        self._batch_size = batch_size
        self._retry_first_s = retry_first_s
        self._retry_max_s = max(retry_first_s, retry_max_s)
        if write_behind_s is not None and write_behind_s < 0:
            raise ValueError(f"prediction buffer: write_behind_s ({write_behind_s}) must be >= 0")
        self._write_behind_s = write_behind_s
        self._queue: deque[PredictionRecord] = deque()
        self._in_flight = 0
        self._writer: threading.Thread | None = None
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._full_warned = False
        self._outage = Outage(log, "prediction records", "serving and buffering records in memory")
        self.written_late = 0  # records written by the background writer (after an outage)
        self.dropped = 0

    @property
    def writes_behind(self) -> bool:
        """Whether records are written by the background writer only (``record`` never touches the registry)."""
        return self._write_behind_s is not None

    @property
    def pending(self) -> int:
        """Records not yet written: queued, or in the batch being written."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def record(self, records: Sequence[PredictionRecord]) -> None:
        """Write ``records`` now if the registry is up and nothing is queued, else queue them. Never raises."""
        if not records:
            return
        with self._cond:
            direct = (
                self._write_behind_s is None
                and not self._queue
                and not self._in_flight
                and not self._outage.down
            )
        if direct:
            try:
                self._write(records)
                return
            except Exception as error:
                self._outage.failed(error)
        self._enqueue(records)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued record is written (or dropped); False if some are still pending after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()  # cut the writer's pause short: this is worth a try now
                self._cond.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Give the writer ``timeout_s`` to drain the queue; whatever is still queued then is lost (logged)."""
        if not self.flush(timeout_s):
            with self._cond:
                lost = len(self._queue) + self._in_flight
            log.warning(
                "shutting down with %d prediction records not written (registry unreachable): their outcomes "
                "will not join",
                lost,
            )
        with self._cond:
            self._closing = True
            self._wake.set()
            self._cond.notify_all()  # a write-behind writer waiting for records
            writer = self._writer
        if writer is not None:
            writer.join(timeout=1.0)

    # ---------------------------------------------------------------- the queue and its writer
    def _enqueue(self, records: Sequence[PredictionRecord]) -> None:
        with self._cond:
            was_empty = not self._queue
            self._queue.extend(records)
            dropped = self._trim()
            if self._writer is None and not self._closing:
                self._writer = threading.Thread(target=self._drain, name="prediction-records", daemon=True)
                self._writer.start()
            # Wake a write-behind writer only when it waits for a first record or its batch is full: otherwise it
            # sleeps until its gathering window ends anyway, and waking it for every request would make each one
            # hand the interpreter lock to it and wait to get it back.
            if was_empty or len(self._queue) >= self._batch_size:
                self._cond.notify_all()
        self._count_dropped(dropped, "buffer_full")

    def _trim(self) -> list[PredictionRecord]:
        """Drop the oldest records over capacity (caller holds the lock)."""
        dropped: list[PredictionRecord] = []
        while len(self._queue) > self._capacity:
            dropped.append(self._queue.popleft())
        return dropped

    def _count_dropped(self, dropped: list[PredictionRecord], reason: str) -> None:
        if not dropped:
            return
        with self._cond:
            self.dropped += len(dropped)
        per_tenant: dict[str, int] = {}
        for record in dropped:
            per_tenant[record.tenant_id] = per_tenant.get(record.tenant_id, 0) + 1
        for tenant, count in per_tenant.items():
            metrics.PREDICTIONS_DROPPED.labels(tenant, reason).inc(count)
        if reason == "buffer_full" and not self._full_warned:
            self._full_warned = True
            log.warning(
                "prediction buffer full (%d records): dropping the oldest records while the registry is "
                "unreachable; outcomes for them will not join (predictions_dropped_total)",
                self._capacity,
            )

    def _drain(self) -> None:
        pause = self._retry_first_s
        while True:
            with self._cond:
                if self._write_behind_s is not None:
                    # A long-lived writer: wait for records, then let a batch gather (never while closing).
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    gathered_by = time.monotonic() + self._write_behind_s
                    while (
                        0 < len(self._queue) < self._batch_size
                        and not self._closing
                        and not self._outage.down
                        and (left := gathered_by - time.monotonic()) > 0
                    ):
                        self._cond.wait(left)
                if not self._queue or self._closing:
                    self._writer = None
                    self._cond.notify_all()
                    return
                batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
                self._in_flight = len(batch)
            try:
                self._write_batch(batch)
            except Exception as error:
                self._outage.failed(error)
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                    self._in_flight = 0
                    dropped = self._trim()
                    self._cond.notify_all()
                self._count_dropped(dropped, "buffer_full")
                self._wake.wait(pause)
                self._wake.clear()
                pause = min(pause * 2, self._retry_max_s)
                continue
            pause = self._retry_first_s
            with self._cond:
                empty = not self._queue
            if empty and self._outage.succeeded():  # before flush() can see an empty buffer
                self._full_warned = False
            with self._cond:
                self._in_flight = 0
                self.written_late += len(batch)
                self._cond.notify_all()

    def _write_batch(self, batch: list[PredictionRecord]) -> None:
        try:
            self._write(batch)
            return
        except IntegrityError:
            pass  # one bad (or already stored) record refuses the whole batch: find it
        rejected: list[PredictionRecord] = []
        for record in batch:
            try:
                self._write([record])
            except IntegrityError as error:
                if not _already_stored(error):
                    log.warning(
                        "the registry refused prediction record %s: %s", record.id, str(error.orig)[:200]
                    )
                    rejected.append(record)
        self._count_dropped(rejected, "rejected")


def _already_stored(error: IntegrityError) -> bool:
    """A duplicate primary key: the record was written by a commit whose answer never arrived."""
    if getattr(error.orig, "sqlstate", None) == "23505":  # PostgreSQL unique_violation
        return True
    return "UNIQUE constraint failed" in str(error.orig)  # SQLite

"""Whether a dependency (the registry database) is reachable, as seen by one job of the serving process.

The serving process keeps answering while the registry is down; what it must not do is write a log line per request
about it. An :class:`Outage` logs a warning when the first failure starts an outage and one line when a success ends
it (with its duration and the number of failed attempts), and nothing in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class Outage:
    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        meanwhile: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``what`` names the job (e.g. "model refresh"); ``meanwhile`` says what is done instead while it fails."""
        self._log = logger
        self._what = what
        self._meanwhile = meanwhile
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._last_failure: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed_within(self, seconds: float) -> bool:
        """Whether the last failure of the current outage was less than ``seconds`` ago."""
        last = self._last_failure
        return self._since is not None and last is not None and self._clock() - last < seconds

    def failed(self, error: BaseException) -> bool:
        """Note a failed attempt; True (and a warning) only when it starts an outage."""
        now = self._clock()
        with self._lock:
            self._last_failure = now
            self._failures += 1
            if self._since is not None:
                return False
            self._since = now
        self._log.warning(
            "%s: the registry is unreachable (%s: %s); %s until it is back",
            self._what,
            type(error).__name__,
            _first_line(error),
            self._meanwhile,
        )
        return True

    def succeeded(self) -> bool:
        """Note a successful attempt; True (and one info line) only when it ends an outage."""
        if self._since is None:
            return False
        now = self._clock()
        with self._lock:
            since, failures = self._since, self._failures
            if since is None:
                return False
            self._since, self._last_failure, self._failures = None, None, 0
        self._log.info(
            "%s: the registry is reachable again after %.1f s (%d failed attempts)",
            self._what,
            now - since,
            failures,
        )
        return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""

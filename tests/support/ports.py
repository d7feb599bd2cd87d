"""A free loopback TCP port for a server a test or bench starts.

Not the kernel's pick (bind to port 0): that comes from the ephemeral range, which every outgoing connection and
every other bind-to-0 of the parallel test processes draws from too, so a port handed out here and bound a moment
later by its server was sometimes taken in between (a demo's worker died on its metrics port, and the demo waited
for it until the suite's timeout). Here each pytest-xdist process takes ports from a block of its own below the
ephemeral range, in turn, checking that each is free now.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

FIRST_PORT = 20_000  # below Linux's default ephemeral range (32768-60999)
BLOCK = 3_000  # ports per test process: gw0 20000-22999, gw1 23000-25999, ...


def _block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    start = FIRST_PORT + (index % 4) * BLOCK
    return range(start, start + BLOCK)


_BLOCK = _block()
_NEXT = itertools.count(
    random.randrange(len(_BLOCK))
)  # a random start: a rerun soon after meets no TIME_WAIT


def free_port() -> int:
    for _ in range(len(_BLOCK)):
        port = _BLOCK[next(_NEXT) % len(_BLOCK)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_BLOCK.start}-{_BLOCK.stop - 1}")

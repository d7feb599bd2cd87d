"""A free loopback TCP port for a server a test or bench starts (the kernel picks one nobody holds right now)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

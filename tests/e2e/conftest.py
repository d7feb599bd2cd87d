from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EVOLUTION = str(Path(sys.executable).parent / "evolution")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private state dir and private ports, so the test never meets another run's services."""
    env = {
        **os.environ,
        "EVOLUTION_HOME": str(tmp_path / "state"),
        "EVOLUTION_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "EVOLUTION_TEMPORAL_UI_PORT": str(free_port()),
        "EVOLUTION_SERVE_PORT": str(free_port()),
        "EVOLUTION_DASHBOARD_PORT": str(free_port()),
        "EVOLUTION_TASK_QUEUE": f"e2e-{tmp_path.name}",
        "EVOLUTION_WORKER_METRICS_PORT": str(free_port()),
        "EVOLUTION_TEMPORAL_METRICS_PORT": str(free_port()),
        "EVOLUTION_DASHBOARD_METRICS_PORT": str(free_port()),
    }
    yield env

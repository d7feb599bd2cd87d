from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from evolution.demo.synthetic import generate_rows
from evolution.timeutil import utcnow

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


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EVOLUTION, *args], env=env, capture_output=True, text=True, timeout=timeout)


@contextmanager
def services_up(env: dict[str, str], *options: str) -> Iterator[None]:
    """`evolution up` for the length of the block, stopped as a user would (Ctrl-C)."""
    up = subprocess.Popen([EVOLUTION, "up", *options], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "all services up" in line:
                break
        yield
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)


def seed_tenant_with_cli(env: dict[str, str], work: Path, rows: int = 600, tenant: str = "acme") -> None:
    """A tenant with a signing source and `rows` labelled events ingested and sealed, all through the CLI."""
    assert cli(env, "tenant", "create", tenant).returncode == 0
    assert cli(env, "source", "add", "sensors", "--tenant", tenant).returncode == 0
    history = work / f"history-{tenant}.jsonl"
    records = generate_rows(rows, seed=11, start=utcnow() - timedelta(days=30), period_s=3600)
    history.write_text("\n".join(json.dumps(r) for r in records))
    ingested = cli(env, "ingest", str(history), "-t", tenant, "--sign-with", "sensors")
    assert f"accepted {rows}" in ingested.stdout, ingested.stderr
    assert cli(env, "snapshot", "seal", "-t", tenant).returncode == 0

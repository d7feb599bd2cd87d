from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from evolution.demo.synthetic import generate_rows
from evolution.timeutil import utcnow
from tests.support.ports import free_port

if TYPE_CHECKING:
    from tests.e2e.test_secret_canary import CanaryRun

EVOLUTION = str(Path(sys.executable).parent / "evolution")


def as_from_a_terminal(argv: list[str]) -> list[str]:
    """``argv`` started with Ctrl-C (SIGINT) at its default, as a terminal's foreground command has it.

    A suite started in the background by a script (``cmd &`` in a shell without job control, e.g. a CI runner's)
    hands every process below it SIGINT ignored (POSIX), exec keeps it ignored, and Python then installs no
    KeyboardInterrupt for it: a test pressing Ctrl-C would find it ignored whatever the command does."""
    reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", reset, *argv]


def private_env(folder: Path) -> dict[str, str]:
    """A private state dir (``folder/state``) and private ports, so a test never meets another run's services."""
    return {
        **os.environ,
        "EVOLUTION_HOME": str(folder / "state"),
        "EVOLUTION_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "EVOLUTION_TEMPORAL_UI_PORT": str(free_port()),
        "EVOLUTION_SERVE_PORT": str(free_port()),
        "EVOLUTION_DASHBOARD_PORT": str(free_port()),
        "EVOLUTION_TASK_QUEUE": f"e2e-{folder.name}",
        "EVOLUTION_WORKER_METRICS_PORT": str(free_port()),
        "EVOLUTION_TEMPORAL_METRICS_PORT": str(free_port()),
        "EVOLUTION_DASHBOARD_METRICS_PORT": str(free_port()),
    }


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private state dir and private ports, so the test never meets another run's services."""
    yield private_env(tmp_path)


def cli(
    env: dict[str, str], *args: str, timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVOLUTION, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def services_up(env: dict[str, str], *options: str) -> Iterator[None]:
    """`evolution up` for the length of the block, stopped as a user would (Ctrl-C)."""
    up = subprocess.Popen([EVOLUTION, "up", *options], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        said = []
        for line in up.stdout:
            said.append(line)
            if "all services up" in line:
                break
        assert "all services up" in "".join(said), (
            f"`evolution up` stopped before its services were up: {said}"
        )
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


DEMO_TENANT = "acme-agro"


@dataclass
class DemoStack:
    """The state `evolution demo --fast --keep-running` leaves, with its services still running.

    One per test session (the demo is the suite's longest step): tests/e2e/test_demo_cli.py checks the demo itself
    first; later tests read it or add tenants of their own beside the demo's, and leave the demo's tenant as they
    found it, apart from users and model definitions."""

    env: dict[str, str]
    folder: Path  # holds the state dir; tests put their own files in folders beside it
    output: str  # the demo's output up to "services keep running"
    canaries: CanaryRun  # secrets planted in its notification settings (tests/e2e/test_secret_canary.py)
    process: subprocess.Popen[str] = field(repr=False)

    @property
    def home(self) -> Path:
        return Path(self.env["EVOLUTION_HOME"])


@pytest.fixture(scope="session")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    from tests.e2e.test_secret_canary import CanaryRun, notification_canaries

    folder = tmp_path_factory.mktemp("demo")
    env = private_env(folder)
    canaries = CanaryRun()
    with ExitStack() as stack:
        stack.enter_context(notification_canaries(env, canaries))
        started = time.monotonic()
        demo = subprocess.Popen(
            [EVOLUTION, "demo", "--fast", "--keep-running"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "services keep running" in line:
                break
        output = "".join(lines)
        if "services keep running" not in output:
            demo.kill()
            raise AssertionError(f"the demo did not get to keep its services running: {output[-4000:]}")
        print(f"\ndemo state ready in {time.monotonic() - started:.1f} s")
        try:
            yield DemoStack(env=env, folder=folder, output=output, canaries=canaries, process=demo)
        finally:
            _stop_demo(demo, env)


def _stop_demo(demo: subprocess.Popen[str], env: dict[str, str]) -> None:
    """Ctrl-C, as a user stops it; it must stop cleanly."""
    demo.send_signal(signal.SIGINT)
    try:
        # Stopping takes at most twice 15 s (evolution/platform/processes.py); a loaded CI machine gets ample slack.
        rest, _ = demo.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        demo.kill()
        rest, _ = demo.communicate()
        logs = Path(env["EVOLUTION_HOME"], "logs")
        tails = {p.name: p.read_text(errors="replace")[-1500:] for p in sorted(logs.glob("*"))}
        raise AssertionError(f"the demo did not stop after Ctrl-C: {(rest or '')[-2000:]} {tails}") from None
    assert demo.returncode == 0, (rest or "")[-3000:]

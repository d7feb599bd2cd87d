"""`evolution up`, `serve`, `worker`, `dashboard`: the processes of one machine."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Annotated

import typer

from evolution.cli.context import EXIT_FAILURE, fail, friendly_errors, settings
from evolution.platform.processes import PACKAGES_ROOT, ProcessGroup


@friendly_errors
def up(
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard", help="Do not start the dashboard.")] = False,
) -> None:
    """Start the Temporal dev server, a worker, the serving process and the dashboard; Ctrl-C stops them all."""
    group = ProcessGroup(settings(create_home=True), dashboard=not no_dashboard)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # Explicit handlers: a shell starting `evolution up` in the background ignores SIGINT otherwise.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        for child in group.start():
            typer.echo(f"  {child.name:<10} {child.address}   (log: {child.log_path})")
        typer.echo("all services up; Ctrl-C stops them")
        while not stopping:
            time.sleep(0.5)
            dead = [c.name for c in group.children if c.process and c.process.poll() is not None]
            if dead:
                fail(f"stopped unexpectedly: {', '.join(dead)}; shutting down", EXIT_FAILURE)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping …")
        group.stop()


def _exec_module(module: str) -> None:
    # The module runs from the package root, so the home found from the caller's folder travels as EVOLUTION_HOME.
    os.environ["EVOLUTION_HOME"] = str(settings().home.resolve())
    os.chdir(PACKAGES_ROOT)
    os.execv(sys.executable, [sys.executable, "-m", module])


def serve() -> None:
    """Run the serving HTTP API in the foreground (EVOLUTION_SERVE_HOST/PORT)."""
    _exec_module("workers.serving")


def worker() -> None:
    """Run a Temporal worker in the foreground."""
    _exec_module("workers.worker")


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("serve")(serve)
    app.command("worker")(worker)

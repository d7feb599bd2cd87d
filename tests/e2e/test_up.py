"""`evolution up` starts every embedded service, each answers, and Ctrl-C stops them all."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx

from evolution.platform.processes import port_open
from tests.e2e.conftest import EVOLUTION


def test_up_starts_temporal_worker_serving_and_dashboard_and_ctrl_c_stops_them(
    cli_env: dict[str, str],
) -> None:
    process = subprocess.Popen(
        [EVOLUTION, "up"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "all services up" in line or "error" in line:
                break
        assert any("all services up" in line for line in lines), "".join(lines)
        assert {"temporal", "worker", "serving", "dashboard"} <= {
            line.split()[0] for line in lines if line.startswith("  ")
        }
        serve = cli_env["EVOLUTION_SERVE_PORT"]
        assert httpx.get(f"http://127.0.0.1:{serve}/healthz").json() == {"status": "ok"}
        dashboard = httpx.get(f"http://127.0.0.1:{cli_env['EVOLUTION_DASHBOARD_PORT']}/", timeout=30)
        assert dashboard.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    time.sleep(0.5)
    ports = [
        cli_env["EVOLUTION_SERVE_PORT"],
        cli_env["EVOLUTION_DASHBOARD_PORT"],
        cli_env["EVOLUTION_TEMPORAL_ADDRESS"].split(":")[1],
    ]
    assert not [p for p in ports if port_open("127.0.0.1", int(p))]

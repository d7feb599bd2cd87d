"""A user's first model through the CLI alone: up, tenant, source, ingest, seal, retrain, status, approve."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from evolution.demo_data import generate_rows
from evolution.timeutil import utcnow
from tests.e2e.conftest import EVOLUTION
from tests.e2e.test_demo_cli import run


def test_retrain_status_and_approve_from_the_command_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    up = subprocess.Popen([EVOLUTION, "up", "--no-dashboard"], env=cli_env, stdout=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "all services up" in line:
                break
        assert run(cli_env, "tenant", "create", "acme").returncode == 0
        assert run(cli_env, "source", "add", "sensors", "--tenant", "acme").returncode == 0
        records = tmp_path / "history.jsonl"
        rows = generate_rows(600, seed=11, start=utcnow() - timedelta(days=30), period_s=3600)
        records.write_text("\n".join(json.dumps(r) for r in rows))
        assert (
            "accepted 600"
            in run(cli_env, "ingest", str(records), "-t", "acme", "--sign-with", "sensors").stdout
        )
        assert run(cli_env, "snapshot", "seal", "-t", "acme").returncode == 0

        started = run(cli_env, "retrain", "-t", "acme", "-m", "yield", "--reason", "first model")
        assert started.returncode == 0 and "retrain/acme" in started.stdout, started.stderr[:3000]
        refused = run(cli_env, "retrain", "-t", "acme", "-m", "yield")
        assert refused.returncode == 1 and "already running" in refused.stderr

        for _ in range(120):
            status = run(cli_env, "status", "-t", "acme").stdout
            if "waiting for approval" in status:
                break
            time.sleep(0.5)
        assert "waiting for approval" in status, status

        viewer = {**cli_env, "EVOLUTION_OPERATOR_ROLE": "viewer"}
        denied = run(viewer, "approve", "-t", "acme", "-m", "yield")
        assert denied.returncode == 2 and "viewer" in denied.stderr

        approved = run(
            {**cli_env, "EVOLUTION_OPERATOR_USER": "maria"}, "approve", "-t", "acme", "-m", "yield"
        )
        assert approved.returncode == 0 and "CHAMPION" in approved.stdout, approved.stderr
        versions = run(cli_env, "versions", "-t", "acme").stdout
        assert "CHAMPION" in versions
        audit = run(cli_env, "audit", "-t", "acme").stdout
        assert "maria" in audit and "CANARY->CHAMPION" in audit
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)

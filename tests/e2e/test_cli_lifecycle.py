"""A user's first model through the CLI alone: up, tenant, source, ingest, seal, retrain, status, approve."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.conftest import cli as run
from tests.e2e.conftest import seed_tenant_with_cli, services_up


def test_retrain_status_and_approve_from_the_command_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    with services_up(cli_env, "--no-dashboard"):
        seed_tenant_with_cli(cli_env, tmp_path)
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

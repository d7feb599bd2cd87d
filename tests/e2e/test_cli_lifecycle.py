"""A user's first model through the CLI alone: up, tenant, source, ingest, seal, retrain, status, approve, export
and check with the OpenSSF `model_signing` CLI; and the approval as plain Temporal tooling sends it
(`evolution approve --ticket-only`, then the printed signal)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import cli as run
from tests.e2e.conftest import seed_tenant_with_cli, services_up
from tests.support.model_signing_verifier import verify_with_api, verify_with_cli
from tests.support.temporal import temporal_cli_path


def wait_for_approval(env: dict[str, str], tenant: str) -> str:
    for _ in range(120):
        status = run(env, "status", "-t", tenant).stdout
        if "waiting for approval" in status:
            return status
        time.sleep(0.5)
    raise AssertionError(f"{tenant} never waited for approval: {status}")


def check_the_champion_with_model_signing(env: dict[str, str], work: Path) -> None:
    """Exported with its model.sig, the champion verifies with the OpenSSF verifier's own CLI; a copy with one
    byte changed does not (its Python API: the same checks)."""
    exported = work / "champion"
    done = run(env, "model", "export", "acme", "yield", "champion", str(exported))
    assert done.returncode == 0 and "model.sig" in done.stdout, done.stdout + done.stderr
    key = work / "signing-key.pem"
    assert run(env, "keys", "export-public", str(key)).returncode == 0
    verified = verify_with_cli(exported, key)
    assert verified.returncode == 0 and "Verification succeeded" in verified.stdout, verified.stderr
    tampered = work / "tampered"
    shutil.copytree(exported, tampered)
    victim = max(
        (p for p in tampered.rglob("*") if p.is_file() and p.name != "model.sig"),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Hash mismatch"):  # the same verifier, without a second start-up
        verify_with_api(tampered, key)


def test_retrain_status_and_approve_from_the_command_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    with services_up(cli_env, "--no-dashboard"):
        seed_tenant_with_cli(cli_env, tmp_path)
        seed_tenant_with_cli(cli_env, tmp_path, tenant="globex")
        started = run(cli_env, "retrain", "-t", "acme", "-m", "yield", "--reason", "first model", "--no-wait")
        assert started.returncode == 0 and "retrain/acme" in started.stdout, started.stderr[:3000]
        assert "follow it: evolution status --tenant acme" in started.stdout
        refused = run(cli_env, "retrain", "-t", "acme", "-m", "yield")
        assert refused.returncode == 1 and "already running" in refused.stderr
        assert run(cli_env, "retrain", "-t", "globex", "-m", "yield", "--no-wait").returncode == 0

        wait_for_approval(cli_env, "acme")
        viewer = {**cli_env, "EVOLUTION_OPERATOR_ROLE": "viewer"}
        denied = run(viewer, "approve", "-t", "acme", "-m", "yield")
        assert denied.returncode == 2 and "viewer" in denied.stderr

        maria = {**cli_env, "EVOLUTION_OPERATOR_USER": "maria"}
        approved = run(maria, "approve", "-t", "acme", "-m", "yield")
        assert approved.returncode == 0 and "CHAMPION" in approved.stdout, approved.stderr
        versions = run(cli_env, "versions", "-t", "acme").stdout
        assert "CHAMPION" in versions
        audit = run(cli_env, "audit", "-t", "acme").stdout
        assert "maria" in audit and "CANARY->CHAMPION" in audit
        check_the_champion_with_model_signing(cli_env, tmp_path)

        # The same decision for globex, delivered the way the README shows for plain Temporal tooling.
        wait_for_approval(cli_env, "globex")
        printed = run(
            {**cli_env, "EVOLUTION_OPERATOR_USER": "jonas"},
            "approve",
            "-t",
            "globex",
            "-m",
            "yield",
            "--ticket-only",
        )
        assert printed.returncode == 0, printed.stderr
        command = shlex.split(printed.stdout.strip().splitlines()[-1])
        assert command[:3] == ["temporal", "workflow", "signal"] and "--run-id" in command
        sent = subprocess.run([temporal_cli_path(), *command[1:]], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        for _ in range(120):
            if "CHAMPION" in run(cli_env, "versions", "-t", "globex").stdout:
                break
            time.sleep(0.5)
        audit = run(cli_env, "audit", "-t", "globex").stdout
        assert "jonas" in audit and "CANARY->CHAMPION" in audit, audit
        again = subprocess.run(
            [temporal_cli_path(), *command[1:]], capture_output=True, text=True, timeout=60
        )
        assert (
            again.returncode != 0
        )  # the run is over: the signal is refused by the server, not lost silently

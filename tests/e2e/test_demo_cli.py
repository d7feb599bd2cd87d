"""The CLI as a user runs it: the demo reaches a new champion, the audit trail is complete, verify is clean,
and a tampered artifact makes verify fail."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from evolution.lifecycle import ModelState
from evolution.security import Principal
from evolution.settings import Settings
from evolution.wiring import build_services
from tests.e2e.conftest import EVOLUTION


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EVOLUTION, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_demo_ends_with_a_new_champion_a_full_audit_trail_and_a_clean_verify(cli_env: dict[str, str]) -> None:
    demo = run(cli_env, "demo", "--fast", "--no-dashboard", timeout=400)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "promoted; approved by demo-manager" in demo.stdout
    assert "0 failed" in demo.stdout

    services = build_services(Settings(home=Path(cli_env["EVOLUTION_HOME"])))
    system = Principal.system("acme-agro")
    champion = services.registry.current(system, "acme-agro", "yield", ModelState.CHAMPION)
    assert champion is not None and champion.number == 2
    states = {v.number: v.state for v in services.registry.list_versions(system, "acme-agro", "yield")}
    assert states == {1: ModelState.DEPRECATED, 2: ModelState.CHAMPION}
    changes = [
        (e.subject_id, e.to_state) for e in services.registry.audit_trail(system, "acme-agro") if e.to_state
    ]
    for state in ("DRAFT", "TRAINING", "VALIDATED", "SHADOW", "CANARY", "CHAMPION"):
        assert (champion.id, state) in changes
    assert services.drift_reports.list_reports(system, "acme-agro")[0].level == "alert"

    verify = run(cli_env, "verify")
    assert verify.returncode == 0, verify.stdout
    assert ", 0 failed" in verify.stdout

    # Tamper with one model file: verify must now fail and name it.
    entry = champion.manifest["manifest"]["files"][0]  # type: ignore[index]
    path = next(Path(cli_env["EVOLUTION_HOME"], "artifacts", "acme-agro").rglob(entry["sha256"]))
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    tampered = run(cli_env, "verify", "--tenant", "acme-agro")
    assert tampered.returncode == 1
    assert "FAILED" in tampered.stdout and entry["name"] in tampered.stdout
    services.close()

"""Every read command answers `--json` with one JSON document on stdout, parsed back here, on the shared demo state.

tests/unit/test_cli_json_options.py holds the list of read commands to the CLI itself (each has the option)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DEMO_TENANT, DemoStack
from tests.e2e.conftest import cli as run

T = DEMO_TENANT


def read_json(stack: DemoStack, *args: str, code: int | None = 0) -> Any:
    """The command's stdout parsed as JSON; ``code`` None: any exit code (the JSON says what failed)."""
    done = run(stack.env, *args, "--json")
    assert code is None or done.returncode == code, f"{args}: {done.returncode} {done.stderr[-2000:]}"
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{args}: not JSON ({error}): {done.stdout[:1000]!r}") from None


@pytest.fixture(scope="module")
def backups(demo_stack: DemoStack) -> Path:
    """One small backup of the demo's registry beside its state, for `backup list`."""
    dest = demo_stack.folder / "json-backups"
    done = run(demo_stack.env, "backup", "create", str(dest), "--what", "registry")
    assert done.returncode == 0, done.stderr[-2000:]
    return dest


def test_versions_status_and_lineage_as_json(demo_stack: DemoStack) -> None:
    versions = read_json(demo_stack, "versions", "-t", T)
    assert {(v["number"], v["state"]) for v in versions} >= {(1, "DEPRECATED"), (2, "CHAMPION")}
    assert all(v["tenant_id"] == T and v["model_name"] == "yield" for v in versions)

    lineage = read_json(demo_stack, "versions", "-t", T, "-m", "yield", "--lineage")
    champion = next(v for v in lineage if v["version"] == 2)
    assert champion["verified"] is True and len(champion["merkle_root"]) == 64

    status = read_json(demo_stack, "status", "-t", T)
    assert status["tenant_id"] == T and status["over"] is True and status["outcome"] == "promoted"
    assert status["retraining"]["phase"] == "finished" and status["retraining"]["model_name"] == "yield"
    assert [w["model_name"] for w in status["watches"]] == ["yield"] * len(status["watches"])


def test_tenant_settings_quota_and_breaker_as_json(demo_stack: DemoStack) -> None:
    assert T in read_json(demo_stack, "tenant", "list")
    shown = read_json(demo_stack, "tenant", "show", T)
    assert shown["tenant_id"] == T and "drift" in shown["settings"]
    assert shown["quota"]["gpu_hours_used"] > 0 and shown["circuit_breaker"]["state"] == "closed"
    quota = read_json(demo_stack, "tenant", "quota", "show", T)
    assert quota["gpu_hours_used"] == pytest.approx(shown["quota"]["gpu_hours_used"])
    breaker = read_json(demo_stack, "tenant", "breaker", "status", T)
    assert breaker["state"] == "closed"


def test_snapshots_model_audit_users_and_tokens_as_json(demo_stack: DemoStack) -> None:
    snapshots = read_json(demo_stack, "snapshot", "list", "-t", T)
    assert snapshots and all(len(s["merkle_root"]) == 64 and s["row_count"] > 0 for s in snapshots)
    model = read_json(demo_stack, "model", "show", T, "yield")
    assert model["tenant_id"] == T and model["model_name"] == "yield"
    trail = read_json(demo_stack, "audit", "-t", T, "--limit", "500")
    assert [e["seq"] for e in trail] == sorted(e["seq"] for e in trail)
    assert any(e["to_state"] == "CHAMPION" for e in trail)
    added = run(
        demo_stack.env, "users", "add", "json-viewer", "--role", "viewer", "-t", T, "--password-stdin",
        stdin="a json viewer's password\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert run(demo_stack.env, "users", "token", "create", "json-viewer", "--name", "json").returncode == 0
    users = read_json(demo_stack, "users", "list")
    viewer = next(u for u in users if u["username"] == "json-viewer")
    assert viewer["roles"] == {T: "viewer"} and viewer["enabled"] is True
    assert all("password" not in json.dumps(u) for u in users)
    tokens = read_json(demo_stack, "users", "token", "list", "json-viewer")
    assert [(t["name"], t["status"]) for t in tokens] == [("json", "active")]


def test_checks_as_json_doctor_verify_gc_plan_and_backups(demo_stack: DemoStack, backups: Path) -> None:
    verify = read_json(demo_stack, "verify", "--tenant", T)
    assert verify["ok"] is True and verify["failed"] == 0 and len(verify["checks"]) > 5
    # The demo's backends are local stand-ins: not every doctor check need pass, but each is in the JSON.
    doctor = read_json(demo_stack, "doctor", "--skip", "temporal", code=None)
    assert doctor["failed"] == sum(not c["ok"] for c in doctor["checks"])
    assert {c["component"] for c in doctor["checks"]} >= {"database", "artifacts", "signer"}
    plan = read_json(demo_stack, "gc", "run", "-t", T, "--dry-run")
    assert plan["plan"]["tenant_id"] == T
    listed = read_json(demo_stack, "backup", "list", str(backups))
    assert len(listed) == 1 and listed[0]["complete"] and listed[0]["manifest"]["parts"] == ["registry"]
    canary = read_json(demo_stack, "canary", "plan", "--sigma", "0.5", "--effect", "0.1", "--n-max", "2000")
    assert canary["effect"] == 0.1

"""`evolution gc run` as an operator runs it, against a state dir holding a tenant with a real model history.

The history (tests/support/retention_world.py) is written in-process with the registry's clock set back; then the
CLI, over the same state dir, prints the plan, collects, collects again (nothing) and verifies. The collection runs
as a user runs it (the console script, in its own process); the other calls go through typer's runner in this
process, because each process start costs seconds on a busy machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolution.cli.main import app
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.registry.versions import ModelRegistryService
from tests.e2e.conftest import cli
from tests.support.retention_world import COLLECTED, DELETED, Clock, World, build_world


@dataclass
class Output:
    returncode: int
    stdout: str
    stderr: str


def run(env: dict[str, str], *args: str) -> Output:
    result = CliRunner().invoke(app, list(args), env=env)
    return Output(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def world(cli_env: dict[str, str], tmp_path: Path) -> Iterator[World]:
    services = build_services(Settings(home=Path(cli_env["EVOLUTION_HOME"])))
    clock = Clock()
    registry = ModelRegistryService(services.factory, clock=clock)
    services.__dict__["registry"] = registry
    try:
        yield build_world(services, registry, clock, tmp_path / "models")
    finally:
        services.close()


def test_dry_run_prints_the_plan_the_real_run_collects_it_once_and_verify_passes(
    cli_env: dict[str, str], world: World
) -> None:
    before = world.digests()
    dry = run(cli_env, "gc", "run", "--tenant", world.tenant, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert world.digests() == before
    header = next(line for line in dry.stdout.splitlines() if line.startswith("VERSION"))
    assert header.split() == ["VERSION", "STATE", "AGE", "DIGEST", "FILE", "BYTES", "REASON"]
    listed = set(re.findall(r"^yield v(\d+)\s+FAILED\s+[\d.]+ d\s+([0-9a-f]{12})\s", dry.stdout, re.M))
    assert {int(n) for n, _ in listed} == set(COLLECTED) and len(listed) == DELETED
    assert f"totals: 3 versions collected ({DELETED} artifacts" in dry.stdout
    assert "shared with yield v8 (CHAMPION, kept)" in dry.stdout  # the spared weights, and why
    assert "was CHAMPION" in dry.stdout and "dry run: nothing was deleted" in dry.stdout

    real = cli(cli_env, "gc", "run", "--tenant", world.tenant)
    assert real.returncode == 0, real.stderr
    gone = before - world.digests()
    assert {(str(n), d[:12]) for n in COLLECTED for d in gone if d in world.artifacts(n).values()} == listed
    assert f"{DELETED} artifacts deleted" in real.stdout
    assert [line.split()[1] for line in real.stdout.splitlines() if line.startswith("yield v")] == [
        "v1",
        "v3",
        "v5",
    ]

    again = run(cli_env, "gc", "run", "--tenant", world.tenant)
    assert again.returncode == 0 and "collected: nothing" in again.stdout
    assert "0 artifacts deleted" in again.stdout

    verified = run(cli_env, "verify", "--tenant", world.tenant)
    assert verified.returncode == 0, verified.stdout
    assert "yield v1 (FAILED, artifacts collected)" in verified.stdout


def test_a_viewer_sees_the_plan_but_may_not_collect(cli_env: dict[str, str], world: World) -> None:
    viewer = {**cli_env, "EVOLUTION_OPERATOR_ROLE": "viewer"}
    before = world.digests()
    plan = run(viewer, "gc", "run", "--tenant", world.tenant, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert f'"artifacts_deleted": {DELETED}' in plan.stdout
    refused = run(viewer, "gc", "run", "--tenant", world.tenant)
    assert refused.returncode == 2 and "transition: role viewer may not do this" in refused.stderr
    unknown = run(cli_env, "gc", "run", "--tenant", world.tenant, "--model", "nope", "--dry-run")
    assert unknown.returncode == 2 and "no versions of model 'nope'" in unknown.stderr
    assert world.digests() == before

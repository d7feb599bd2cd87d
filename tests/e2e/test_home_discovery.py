"""The CLI finds its home as git finds `.git`: EVOLUTION_HOME, else the nearest `.evolution` here or in a parent.

Only `init` (and `up`, `demo`) may create a home; any other command run outside one says so and creates nothing,
instead of making an empty home there and then reporting every tenant as missing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from evolution.platform.settings import find_home
from tests.e2e.conftest import EVOLUTION

NO_HOME = (
    "error: no .evolution home here or in any parent directory; "
    "run evolution init (or up/demo) or set EVOLUTION_HOME"
)


@pytest.fixture
def env_without_home(cli_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in cli_env.items() if k not in ("EVOLUTION_HOME", "EVOLUTION_CONFIG")}


def run_in(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVOLUTION, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_command_run_below_the_home_finds_it(env_without_home: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "project"
    below = project / "notebooks" / "week1"
    below.mkdir(parents=True)

    made = run_in(project, env_without_home, "init")
    assert made.returncode == 0, made.stderr
    assert f"created a new home at {project / '.evolution'}" in made.stdout

    created = run_in(below, env_without_home, "tenant", "create", "acme")
    assert created.returncode == 0, created.stderr
    listed = run_in(below, env_without_home, "versions", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr  # the tenant made from below lives in the project's home
    assert (project / ".evolution" / "registry.db").is_file()
    assert not (below / ".evolution").exists() and not (project / "notebooks" / ".evolution").exists()

    again = run_in(project, env_without_home, "init")
    assert again.returncode == 0 and f"a home already exists at {project / '.evolution'}" in again.stdout


def test_a_read_command_outside_any_home_fails_clearly_and_creates_nothing(
    env_without_home: dict[str, str], tmp_path: Path
) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    if find_home(empty) is not None:
        pytest.skip(f"a parent of the temporary directory holds a home: {find_home(empty)}")
    result = run_in(empty, env_without_home, "versions", "--tenant", "acme")
    assert result.returncode != 0
    assert NO_HOME in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert list(empty.iterdir()) == []


def test_evolution_home_wins_over_a_home_in_the_folder(cli_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".evolution").mkdir(parents=True)
    assert run_in(project, cli_env, "tenant", "create", "acme").returncode == 0
    assert (Path(cli_env["EVOLUTION_HOME"]) / "registry.db").is_file()
    assert list((project / ".evolution").iterdir()) == []

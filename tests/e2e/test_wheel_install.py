"""The wheel is enough: installed outside the repository, `evolution db upgrade` finds the Alembic migrations it
ships (package data of evolution/registry/migrations/) and brings a fresh database to the head revision."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from evolution.registry.db import alembic_config

ROOT = Path(__file__).resolve().parents[2]


def _pip(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _source_tree(dest: Path) -> Path:
    """What the Dockerfile copies into its build: pyproject.toml, README.md and the packages pyproject.toml names
    (a copy, so the build's build/ and egg-info never land in the checkout)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / file, dest / file)
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.slow
def test_wheel_installed_outside_the_repository_upgrades_a_fresh_database(tmp_path: Path) -> None:
    source, wheels, site, work, home = (tmp_path / d for d in ("src", "wheels", "site", "work", "home"))
    for folder in (source, work):
        folder.mkdir()
    # Offline: no build isolation (setuptools and wheel come from this virtualenv), no index, no dependencies.
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, _source_tree(source))
    (wheel,) = wheels.glob("controlled_evolution-*.whl")
    _pip("install", "--no-deps", "--no-index", "--target", site, wheel)

    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOLUTION_") and k != "PYTHONPATH"}
    env |= {"PYTHONPATH": str(site), "EVOLUTION_HOME": str(home)}
    code = "import evolution; print(evolution.__file__); from evolution.cli.main import main; main()"
    upgraded = subprocess.run(
        [sys.executable, "-c", code, "db", "upgrade"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    imported_from, said = upgraded.stdout.splitlines()[:2]
    assert Path(imported_from).is_relative_to(site), f"imported the checkout, not the wheel: {imported_from}"
    assert said == "registry schema at head"

    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    with sqlite3.connect(home / "registry.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]

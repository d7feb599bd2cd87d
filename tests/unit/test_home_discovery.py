"""Finding the home (settings) and the CLI's policy on creating one (context)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from evolution.cli.context import settings
from evolution.platform.settings import find_home


def test_find_home_takes_the_nearest_home_in_the_folder_or_a_parent(tmp_path: Path) -> None:
    outer = tmp_path / ".evolution"
    outer.mkdir()
    inner = tmp_path / "a" / ".evolution"
    inner.mkdir(parents=True)
    (tmp_path / "a" / "b").mkdir()
    assert find_home(tmp_path / "a" / "b") == inner.resolve()
    assert find_home(tmp_path / "a") == inner.resolve()
    assert find_home(tmp_path) == outer.resolve()


def test_find_home_ignores_a_file_named_like_a_home(tmp_path: Path) -> None:
    (tmp_path / ".evolution").write_text("not a directory")
    found = find_home(tmp_path)
    assert found is None or tmp_path.resolve() not in found.parents


@pytest.fixture
def no_configured_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("EVOLUTION_HOME", raising=False)
    monkeypatch.delenv("EVOLUTION_CONFIG", raising=False)
    folder = tmp_path / "here"
    folder.mkdir()
    monkeypatch.chdir(folder)
    if find_home(folder) is not None:
        pytest.skip("a parent of the temporary directory holds a home")
    return folder


def test_without_a_home_a_command_stops_and_creates_nothing(no_configured_home: Path) -> None:
    with pytest.raises(typer.Exit) as stop:
        settings()
    assert stop.value.exit_code != 0
    assert list(no_configured_home.iterdir()) == []


def test_up_and_demo_create_a_home_in_the_folder_and_say_where(
    no_configured_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = settings(create_home=True)
    home = no_configured_home.resolve() / ".evolution"
    assert cfg.home == home and home.is_dir()
    assert f"created a new home at {home}" in capsys.readouterr().err
    assert settings().home == home  # found from now on, and not announced again
    assert capsys.readouterr().err == ""


def test_evolution_home_is_used_as_set(no_configured_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOLUTION_HOME", str(no_configured_home / "elsewhere"))
    assert settings().home == no_configured_home / "elsewhere"
    assert list(no_configured_home.iterdir()) == []

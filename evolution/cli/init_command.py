"""`evolution init`: make a new, empty home in the current folder (as `git init` makes `.git`)."""

from __future__ import annotations

from pathlib import Path

import typer

from evolution.cli.context import friendly_errors
from evolution.platform.settings import HOME_DIR_NAME, find_home, home_is_configured, load_settings


@friendly_errors
def init() -> None:
    """Create a new home (./.evolution, or $EVOLUTION_HOME if set) that later commands here or below find."""
    cfg = load_settings()
    home = (cfg.home if home_is_configured(cfg) else Path.cwd() / HOME_DIR_NAME).resolve()
    if home.is_dir():
        typer.echo(f"a home already exists at {home}")
        return
    # Found before creating: the new home hides a parent's from every command run here or below.
    outer = None if home_is_configured(cfg) else find_home(Path.cwd())
    home.mkdir(parents=True)
    typer.echo(f"created a new home at {home}")
    if outer is not None:
        typer.echo(f"note: commands run here or below now use it instead of {outer}")


def register(app: typer.Typer) -> None:
    app.command("init")(init)

"""Every read command of the CLI takes `--json` (tests/e2e/test_json_output.py parses each one's output back); a new
command must be named here as a read command or as one that changes something, so none is forgotten."""

from __future__ import annotations

from typing import Any

import typer.main

from evolution.cli.main import COMMANDS, app

READ = {
    "audit",
    "backup list",
    "canary plan",
    "doctor",
    "drift compare",
    "gc run",  # --dry-run reads; a real run's report is JSON too
    "keys list",
    "ingest",  # a write, but its summary is what a pipeline reads
    "model show",
    "snapshot list",
    "status",
    "tenant breaker status",
    "tenant list",
    "tenant quota show",
    "tenant show",
    "users list",
    "users token list",
    "verify",
    "versions",
}
# Commands that change something, run processes or print one line of confirmation: no JSON needed.
OTHERS = {
    "approve",
    "audit acknowledge-restore",
    "audit checkpoint",
    "backup check",
    "backup create",
    "db upgrade",
    "demo",
    "drift scan",
    "init",
    "keys export-public",
    "keys rotate",
    "keys trust",
    "migrate",
    "model define",
    "model export",
    "reject",
    "restore",
    "retrain",
    "rollback",
    "schedule",
    "serve",
    "snapshot accept",
    "snapshot seal",
    "source add",
    "tenant breaker reset",
    "tenant configure",
    "tenant create",
    "tenant quota set",
    "up",
    "users add",
    "users disable",
    "users grant",
    "users revoke",
    "users set-password",
    "users token create",
    "users token revoke",
    "worker",
}


def leaves(group: Any, prefix: str = "") -> dict[str, Any]:
    """Command paths to commands (typer vendors click, so groups are told by their subcommands)."""
    out: dict[str, Any] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            out.update(leaves(command, f"{path} "))
            if getattr(command, "invoke_without_command", False):
                out[path] = command  # `evolution audit -t T` reads the trail itself
        else:
            out[path] = command
    return out


def every_command() -> dict[str, Any]:
    root = typer.main.get_group(app)
    for entry in COMMANDS:
        root.load(entry.name)  # type: ignore[attr-defined]
    return leaves(root)


def test_every_read_command_takes_json_and_every_command_is_classified() -> None:
    commands = every_command()
    assert set(commands) == READ | OTHERS, (
        f"unclassified: {set(commands) - READ - OTHERS}; gone: {(READ | OTHERS) - set(commands)}"
    )
    without = sorted(name for name in READ if not any("--json" in p.opts for p in commands[name].params))
    assert without == []

"""The `evolution` command line."""

from __future__ import annotations

import os
import sys

import typer

from evolution.cli import (
    demo_command,
    doctor_command,
    gc_commands,
    model_commands,
    orchestration_commands,
    process_commands,
    registry_commands,
)
from evolution.cli.audit_commands import audit_app
from evolution.cli.backup_commands import register as register_backup_commands
from evolution.cli.stats_commands import canary_app, drift_app
from evolution.cli.user_commands import users_app
from evolution.platform.orchestrator import orchestrator_was_used

app = typer.Typer(
    name="evolution",
    help="Controlled Evolution: keep every tenant's models healthy — snapshots, drift scans, retraining, "
    "canaries, approval and rollback, signed and audited.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(drift_app, name="drift")
app.add_typer(canary_app, name="canary")
app.add_typer(users_app, name="users")
registry_commands.register(app)
model_commands.register(app)
# The `audit` group replaces the plain `audit` command; `evolution audit -t T` still shows the trail.
app.add_typer(audit_app, name="audit")
orchestration_commands.register(app, drift_app)
process_commands.register(app)
demo_command.register(app)
register_backup_commands(app)
doctor_command.register(app)
gc_commands.register(app)


def main() -> None:
    """Console entry point.

    A process that used the Temporal client leaves through ``os._exit``: the SDK's native threads can abort the
    interpreter while it finalises (temporalio/sdk-python#300), turning a finished command into a SIGABRT.
    """
    try:
        app()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    if orchestrator_was_used():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()

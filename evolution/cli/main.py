"""The `evolution` command line."""

from __future__ import annotations

import typer

from evolution.cli import demo_command, orchestration_commands, process_commands, registry_commands
from evolution.cli.stats_commands import canary_app, drift_app

app = typer.Typer(
    name="evolution",
    help="Controlled Evolution: keep every tenant's models healthy — snapshots, drift scans, retraining, "
    "canaries, approval and rollback, signed and audited.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(drift_app, name="drift")
app.add_typer(canary_app, name="canary")
registry_commands.register(app)
orchestration_commands.register(app, drift_app)
process_commands.register(app)
demo_command.register(app)


if __name__ == "__main__":
    app()

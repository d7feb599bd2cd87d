"""`evolution doctor`: check every configured backend and print a table."""

from __future__ import annotations

import typer

from evolution.cli.context import EXIT_BAD_INPUT, EXIT_FAILURE, echo_json, fail, friendly_errors, settings
from evolution.platform.doctor import CHECKS, render_table, run_checks


def doctor(
    skip: list[str] = typer.Option(
        [], "--skip", help=f"Leave a component out (one of: {', '.join(CHECKS)}); repeatable."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print every check and the counts as JSON."),
) -> None:
    """Check the database (reachable, migrations at head, row-level security), Temporal, the artifact store,
    the signer, the compute backend and the notification channels. Exit code 1 if anything fails.

    Also says where each secret setting came from (a file, the environment, the config file), never its value."""
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        fail(f"--skip {', '.join(unknown)}: use one of {', '.join(CHECKS)}", EXIT_BAD_INPUT)
    checks = run_checks(settings(), skip)
    failed = [c for c in checks if not c.ok]
    if as_json:
        echo_json(
            {"checks": [c.model_dump(mode="json") for c in checks], "failed": len(failed), "ok": not failed}
        )
    else:
        typer.echo(render_table(checks))
        typer.echo(f"\n{len(checks)} checks, {len(failed)} failed")
    if failed:
        raise typer.Exit(EXIT_FAILURE)


db_app = typer.Typer(help="The registry database's schema.", no_args_is_help=True)


@db_app.command("upgrade")
@friendly_errors
def db_upgrade() -> None:
    """Apply every pending migration, as the schema's owner (EVOLUTION_DATABASE_OWNER_URL, else DATABASE_URL)."""
    from evolution.registry.db import upgrade_to_head

    cfg = settings()
    upgrade_to_head(cfg.resolved_owner_database_url)
    typer.echo("registry schema at head")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
    app.add_typer(db_app, name="db")

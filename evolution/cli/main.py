"""The `evolution` command line.

Commands are listed from :data:`COMMANDS` and each command's module is imported only when it runs (see
:mod:`evolution.cli.lazy_group`): `evolution --help` loads neither the services nor the numeric stack.
"""

from __future__ import annotations

import os
import sys

import typer

from evolution.cli.exit_codes import EXIT_CODES_HELP
from evolution.cli.lazy_group import LazyCommand, LazyGroup

# In the order `evolution --help` lists them; each summary is the first paragraph of the command's own help
# (tests/unit/test_cli_import_discipline.py holds them to it).
COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand(
        "ingest",
        "evolution.cli.registry_commands",
        "Ingest learning events: verify each signature, keep rejects with a reason, accept duplicates once.",
    ),
    LazyCommand("versions", "evolution.cli.registry_commands", "Every model version with its state."),
    LazyCommand(
        "audit",
        "evolution.cli.audit_commands",
        "The audit trail (`evolution audit -t TENANT`) and its signed checkpoints.",
    ),
    LazyCommand(
        "rollback",
        "evolution.cli.registry_commands",
        "Admin: restore the previous champion now (the current one is deprecated).",
    ),
    LazyCommand(
        "verify",
        "evolution.cli.registry_commands",
        "Re-check every signature, Merkle root, audit chain and stored object; exit 1 on any failure.",
    ),
    LazyCommand(
        "migrate",
        "evolution.cli.registry_commands",
        "Apply database migrations up to head (the CLI and the processes also do this on start).",
    ),
    LazyCommand(
        "retrain",
        "evolution.cli.orchestration_commands",
        "Start a retraining (refused while one runs for this tenant) and wait for its outcome, printing each "
        "phase.",
    ),
    LazyCommand(
        "status",
        "evolution.cli.orchestration_commands",
        "The live retraining of a tenant: phase, state, canary progress.",
    ),
    LazyCommand(
        "approve",
        "evolution.cli.orchestration_commands",
        "Approve the candidate waiting after its canary: it becomes CHAMPION (a signed ticket names you).",
    ),
    LazyCommand(
        "reject",
        "evolution.cli.orchestration_commands",
        "Reject the candidate waiting after its canary: it goes to FAILED, the champion stays.",
    ),
    LazyCommand(
        "schedule",
        "evolution.cli.orchestration_commands",
        "Create or update the tenant's drift-scan schedule and its daily gc/{tenant} retention schedule (idempotent).",
    ),
    LazyCommand(
        "init",
        "evolution.cli.init_command",
        "Create a new home (./.evolution, or $EVOLUTION_HOME if set) that later commands here or below find.",
    ),
    LazyCommand(
        "up",
        "evolution.cli.process_commands",
        "Start the Temporal dev server, a worker, the serving process and the dashboard; Ctrl-C stops them all.",
    ),
    LazyCommand(
        "serve",
        "evolution.cli.process_commands",
        "Run the serving HTTP API in the foreground (EVOLUTION_SERVE_HOST/PORT).",
    ),
    LazyCommand("worker", "evolution.cli.process_commands", "Run a Temporal worker in the foreground."),
    LazyCommand(
        "demo",
        "evolution.cli.demo_command",
        "Seed a tenant, inject drift, and drive the whole lifecycle to a new CHAMPION on the real services.",
    ),
    LazyCommand(
        "restore",
        "evolution.cli.backup_commands",
        "Restore a backup into the configured home and database, acknowledge a restore to an earlier point, "
        "then\nrun `evolution verify` on it.",
    ),
    LazyCommand(
        "doctor",
        "evolution.cli.doctor_command",
        "Check the database (reachable, migrations at head, row-level security), Temporal, the artifact store,\n"
        "the signer, the compute backend and the notification channels. Exit code 1 if anything fails.",
    ),
    # `drift scan` runs on the workflow engine, so the drift group is mounted with the orchestration commands.
    LazyCommand(
        "drift",
        "evolution.cli.orchestration_commands",
        "Compare a data window with a baseline: PSI, KL(current||baseline), chi-square p (BH-adjusted), and the "
        "data-quality checks (out of range, missing rate, unseen categories, stuck).",
    ),
    LazyCommand(
        "canary",
        "evolution.cli.stats_commands",
        "Plan a canary: labels the mSPRT guard needs to promote or roll back (fixed-seed Monte Carlo).",
    ),
    LazyCommand("users", "evolution.cli.user_commands", "Dashboard users and their role per tenant."),
    LazyCommand("tenant", "evolution.cli.registry_commands", "Create and list tenants."),
    LazyCommand("source", "evolution.cli.registry_commands", "Event sources and their signing keys."),
    LazyCommand("snapshot", "evolution.cli.registry_commands", "Immutable, signed dataset snapshots."),
    LazyCommand(
        "model",
        "evolution.cli.model_commands",
        "Model definitions: a tenant's features, target, loss, hyperparameters and trainer, in audited revisions;\n"
        "export a version with its OpenSSF signature.",
    ),
    LazyCommand(
        "keys",
        "evolution.cli.key_commands",
        "The signing keys: export a public key (for model_signing), rotate the local key, trust a retired one.",
    ),
    LazyCommand(
        "backup",
        "evolution.cli.backup_commands",
        "Backups of the registry, the artifact store and the keys (docs/backup-and-restore.md).",
    ),
    LazyCommand("db", "evolution.cli.doctor_command", "The registry database's schema."),
    LazyCommand(
        "gc",
        "evolution.cli.gc_commands",
        "Retention and garbage collection: keep the last versions and every champion, collect old DRAFT/FAILED "
        "artifacts (daily as the gc/{tenant} schedule).",
    ),
)


class EvolutionCommands(LazyGroup):
    index = COMMANDS


app = typer.Typer(
    name="evolution",
    help="Controlled Evolution: keep every tenant's models healthy — snapshots, drift scans, retraining, "
    "canaries, approval and rollback, signed and audited.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=EvolutionCommands,
)


@app.callback()
def _root() -> None:
    # Typer builds a group only for an app with a callback or registered commands; these are all lazy.
    pass


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
    # Only a command that imported the orchestration port can have connected to the workflow engine.
    orchestration = sys.modules.get("evolution.platform.orchestrator")
    if orchestration is not None and orchestration.orchestrator_was_used():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()

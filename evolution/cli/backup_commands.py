"""Backups and restores: `evolution backup create|list|check` and `evolution restore`."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from evolution.backup.create import create_backup
from evolution.backup.home import parse_parts
from evolution.backup.manifest import list_backups
from evolution.backup.selection import check_backup, choose_backup
from evolution.cli.context import (
    EXIT_FAILURE,
    echo_json,
    fail,
    friendly_errors,
    operator,
    services,
    settings,
    table,
)
from evolution.cli.progress import progress_meter
from evolution.errors import InvalidInput
from evolution.platform.wiring import build_artifact_store, build_signer
from evolution.timeutil import iso, parse_iso

if TYPE_CHECKING:
    from evolution.platform.verification import VerificationReport

backup_app = typer.Typer(
    help="Backups of the registry, the artifact store and the keys (docs/backup-and-restore.md).",
    no_args_is_help=True,
)

WhatOpt = Annotated[
    str | None,
    typer.Option("--what", help="Comma-separated parts: registry, artifacts, keys (default: all)."),
]


@backup_app.command("create")
@friendly_errors
def backup_create(
    dest: Annotated[Path, typer.Argument(help="Backup location; each backup is a new directory in it.")],
    what: WhatOpt = None,
    wal_archive: Annotated[
        Path | None,
        typer.Option(help="PostgreSQL: the directory the server archives WAL into (recorded for PITR)."),
    ] = None,
    pg_format: Annotated[
        str, typer.Option(help="PostgreSQL base backup format: tar (gzip) or plain.")
    ] = "tar",
    pg_url: Annotated[
        str | None,
        typer.Option(
            envvar="EVOLUTION_BACKUP_PG_URL",
            help="PostgreSQL: the role that takes the base backup (needs REPLICATION); default: the owner URL. "
            "Prefer the environment variable: a password on the command line is visible to other users.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Back up the registry, the artifacts and the keys into a new, signed backup below DEST."""
    if pg_format not in ("tar", "plain"):
        raise InvalidInput(f"--pg-format is tar or plain, not {pg_format!r}")
    parts = parse_parts(what)
    svc = services()
    with progress_meter() as meter:
        result = create_backup(
            svc.settings,
            dest,
            parts,
            signer=svc.signer,
            store=svc.store,
            registry_tenants=svc.tenants.tenant_ids(),
            wal_archive=wal_archive,
            pg_format="tar" if pg_format == "tar" else "plain",
            pg_url=pg_url,
            progress=typer.echo,
            meter=meter,
        )
    if "keys" in parts:
        typer.echo(
            "note: this backup holds private keys: keep it in a secret store, apart from the other backups",
            err=True,
        )
    if result.problems:
        for problem in result.problems:
            typer.secho(f"  not backed up: {problem}", err=True, fg=typer.colors.RED)
        typer.secho(
            f"error: {len(result.problems)} artifacts could not be backed up (corrupted at the source)",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(EXIT_FAILURE)


@backup_app.command("list")
@friendly_errors
def backup_list(
    dest: Annotated[Path, typer.Argument(help="Backup location.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each backup and its manifest as JSON.")
    ] = False,
) -> None:
    """The backups in DEST, oldest first, with what they hold and the point they restore to."""
    found = list_backups(dest)
    if as_json:
        echo_json(
            [
                {
                    "id": b.backup_id,
                    "complete": b.manifest is not None,
                    "problem": b.problem or None,
                    "manifest": b.manifest.model_dump(mode="json") if b.manifest else None,
                }
                for b in found
            ]
        )
        return
    rows = []
    for b in found:
        m = b.manifest
        if m is None:
            rows.append({"id": b.backup_id, "status": b.problem[:60]})
            continue
        registry = m.registry
        position = ""
        if registry and registry.backend == "postgresql":
            position = f"{registry.end_lsn or '?'}" + (" +WAL" if registry.pitr_possible else "")
        rows.append(
            {
                "id": m.backup_id,
                "status": "complete",
                "parts": ",".join(m.parts),
                "backend": m.database_backend,
                "consistent_at": iso(registry.consistent_at) if registry else "",
                "wal": position,
                "artifacts": str(len(m.artifacts.entries)) if m.artifacts else "",
                "size_mb": f"{m.size_bytes / 1e6:.1f}",
                "signer": m.signer_key_id,
            }
        )
    columns = ["id", "status", "parts", "backend", "consistent_at", "wal", "artifacts", "size_mb", "signer"]
    typer.echo(table(rows, columns))


@backup_app.command("check")
@friendly_errors
def backup_check(
    src: Annotated[Path, typer.Argument(help="A backup, or a location (its newest backup).")],
) -> None:
    """Re-check a backup's signature and every digest without restoring anything; exit 1 on a mismatch."""
    chosen = choose_backup(src)
    parts = list(chosen.manifest.parts)
    entries = chosen.manifest.artifacts.entries if chosen.manifest.artifacts else []
    with progress_meter() as meter:
        problems = check_backup(chosen, parts, entries, progress=typer.echo, meter=meter)
    for problem in problems:
        typer.secho(f"  {problem}", err=True, fg=typer.colors.RED)
    if problems:
        fail(f"backup {chosen.manifest.backup_id}: {len(problems)} problems", EXIT_FAILURE)
    typer.echo(f"backup {chosen.manifest.backup_id}: signature and every digest match")


@friendly_errors
def restore(
    src: Annotated[Path, typer.Argument(help="A backup, or a location (the newest fitting backup in it).")],
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            help="ISO time to recover to (UTC if no offset). PostgreSQL: replays the WAL archive up to it; "
            "SQLite: the newest backup taken at or before it.",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Restore over a home that is not empty.")] = False,
    what: WhatOpt = None,
    pg_data_dir: Annotated[
        Path | None,
        typer.Option(help="PostgreSQL: new data directory to recover into (started on the URL's port)."),
    ] = None,
    wal_archive: Annotated[
        Path | None, typer.Option(help="PostgreSQL: the WAL archive (default: the one the backup names).")
    ] = None,
    pg_socket_dir: Annotated[
        Path | None, typer.Option(help="PostgreSQL: unix socket directory of the recovered server.")
    ] = None,
    archiving: Annotated[
        bool,
        typer.Option(
            "--archiving/--no-archiving",
            help="PostgreSQL: keep the backup's WAL archiving on the recovered server (off for a drill).",
        ),
    ] = True,
    acknowledge: Annotated[
        bool,
        typer.Option(
            "--acknowledge/--no-acknowledge",
            help="Acknowledge (signed, audited, as the operator: admin) a restore to an earlier point for each "
            "tenant whose audit chain lies behind checkpoints signed after that point; without it, verify reports "
            "them as truncations until `evolution audit acknowledge-restore`.",
        ),
    ] = True,
) -> None:
    """Restore a backup into the configured home and database, acknowledge a restore to an earlier point, then
    run `evolution verify` on it."""
    # Verifying loads the numeric and training stack the backup commands do not need.
    from evolution.platform.restores import restore_and_verify

    cfg = settings()
    principal = operator(cfg)
    target_time = None
    if to_time:
        try:
            target_time = parse_iso(to_time)
        except ValueError:
            raise InvalidInput(f"--to-time {to_time!r} is not an ISO 8601 time") from None
    started = time.monotonic()
    # The local signer is not built before the keys are restored: it would create a new key in an empty home.
    kms_key_id = build_signer(cfg).key_id if cfg.signer_backend == "kms" else None
    with progress_meter() as meter:
        outcome = restore_and_verify(
            cfg,
            src,
            store=build_artifact_store(cfg),
            principal=principal,
            acknowledge=acknowledge,
            signer_key_id=kms_key_id,
            parts=parse_parts(what) if what else None,
            to_time=target_time,
            overwrite=yes,
            pg_data_dir=pg_data_dir,
            wal_archive=wal_archive,
            pg_socket_dir=pg_socket_dir,
            pg_settings=None if archiving else {"archive_mode": "off"},
            progress=typer.echo,
            meter=meter,
        )
    result, report = outcome.result, outcome.report
    for note in result.notes:
        typer.echo(f"note: {note}")
    if result.postgres is not None:
        pg = result.postgres
        typer.echo(
            f"PostgreSQL recovered to {result.recovery_target} in {pg.data_dir}, listening on port {pg.port} "
            f"(log {pg.log_path}); it keeps running: hand it to your service manager, or "
            f"`pg_ctl -D {pg.data_dir} stop`"
        )
        if pg.last_transaction_at:
            typer.echo(f"last transaction recovered: {iso(pg.last_transaction_at)}")
    for problem in result.problems:
        typer.secho(f"  not restored: {problem}", err=True, fg=typer.colors.RED)
    for ack in outcome.acknowledgements:
        if ack.acknowledged is not None:
            a = ack.acknowledged.acknowledgement
            typer.echo(
                f"restore acknowledged for {ack.tenant_id}: chain restored to {a.size} entries; "
                f"{len(a.supersedes)} checkpoint(s) beyond it superseded ({ack.acknowledged.key})"
            )
        else:
            typer.secho(
                f"  restore NOT acknowledged for {ack.tenant_id}: {ack.refused}",
                err=True,
                fg=typer.colors.RED,
            )
    _print_report(report)
    typer.echo(f"restore + verify took {time.monotonic() - started:.1f} s (recovery time of this run)")
    if not report.ok or result.problems:
        raise typer.Exit(EXIT_FAILURE)


def _print_report(report: VerificationReport) -> None:
    by_kind: Counter[str] = Counter(c.kind for c in report.checks)
    failed: Counter[str] = Counter(c.kind for c in report.failures)
    rows = [{"kind": k, "checks": n, "failed": failed.get(k, 0)} for k, n in sorted(by_kind.items())]
    typer.echo(table(rows, ["kind", "checks", "failed"]))
    for check in report.failures:
        typer.secho(
            f"  FAILED {check.tenant_id} {check.kind} {check.subject}: {check.detail[:200]}",
            err=True,
            fg=typer.colors.RED,
        )
    typer.echo(f"\n{len(report.checks)} checks, {len(report.failures)} failed")


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.command("restore")(restore)

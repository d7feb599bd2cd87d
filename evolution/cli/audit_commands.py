"""`evolution audit`: the audit trail; `evolution audit checkpoint`: sign the chains' heads now;
`evolution audit acknowledge-restore`: say that a chain behind its checkpoints was restored to an earlier point."""

from __future__ import annotations

from typing import Annotated

import typer

from evolution.cli import registry_commands
from evolution.cli.context import (
    EXIT_FAILURE,
    fail,
    friendly_errors,
    operator,
    require_tenant,
    services,
    settings,
    table,
)
from evolution.errors import InvalidInput
from evolution.registry.audit_checkpoints import AuditCheckpointer

audit_app = typer.Typer(
    help="The audit trail (`evolution audit -t TENANT`) and its signed checkpoints.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@audit_app.callback(invoke_without_command=True)
@friendly_errors
def audit_trail(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id.")] = None,
    limit: Annotated[int, typer.Option(help="Show the last N entries.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON.")] = False,
) -> None:
    """The tenant's audit trail (who moved what, when); `audit checkpoint` signs the chains' heads."""
    if ctx.invoked_subcommand is not None:
        return
    if tenant is None:
        raise InvalidInput("which tenant? pass --tenant (or see `evolution audit --help`)")
    registry_commands.audit(tenant=tenant, limit=limit, as_json=as_json)


@audit_app.command("checkpoint")
@friendly_errors
def audit_checkpoint(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
) -> None:
    """Verify each audit chain and its checkpoints, then sign a checkpoint of its head; exit 1 on any failure.

    Nothing is signed over a chain that does not verify.
    """
    svc = services()
    checkpointer = AuditCheckpointer(svc.factory, svc.store, svc.signer, svc.keyring)
    tenants = [tenant] if tenant else svc.tenants.tenant_ids()
    if tenant:
        require_tenant(svc, tenant)
    rows = []
    failed = 0
    for tenant_id in tenants:
        report = checkpointer.checkpoint(tenant_id)
        if report.problems or (report.refused and report.entries):
            failed += 1
        if report.written:
            result = f"signed at {report.written}"
        elif report.refused and report.entries:
            result = "REFUSED"
        else:
            result = f"up to date at {report.latest_size}" if report.latest_size else "empty"
        rows.append(
            {
                "tenant": tenant_id,
                "entries": report.entries,
                "checkpoints": report.checkpoints + (1 if report.written else 0),
                "result": result,
                "detail": ("; ".join(report.problems[:3]) or report.refused or "")[:120],
            }
        )
    typer.echo(table(rows, ["tenant", "entries", "checkpoints", "result", "detail"]))
    if failed:
        fail(f"{failed} tenant(s) not checkpointed: their audit chain does not verify", EXIT_FAILURE)


@audit_app.command("acknowledge-restore")
@friendly_errors
def audit_acknowledge_restore(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="The tenant whose chain was restored.")],
    reason: Annotated[str, typer.Option(help="Why: the incident, the backup and the point restored to.")],
    backup: Annotated[
        str | None, typer.Option("--backup", help="The backup id restored from, recorded and signed.")
    ] = None,
    restored_to: Annotated[
        str | None, typer.Option(help="The point restored to (e.g. an ISO time), recorded and signed.")
    ] = None,
) -> None:
    """Acknowledge (admin; signed and audited) that the checkpoints beyond the tenant's audit chain belong to the
    history a restore to an earlier point gave up; then checkpoint the new head. Exit 1 if the chain still fails.

    Refused, with nothing written, when no checkpoint lies beyond the chain, or when the chain or a checkpoint
    within it does not verify: an acknowledgement excuses a shorter chain, never a rewritten one.
    """
    svc = services()
    require_tenant(svc, tenant)
    done = svc.audit_checkpoints.acknowledge_restore(
        operator(settings()), tenant, reason, backup_id=backup, restored_to=restored_to
    )
    ack, report = done.acknowledgement, done.report
    typer.echo(
        f"restore acknowledged for {tenant} ({done.key}) by {ack.acknowledged_by}: the chain restored to "
        f"{ack.size} entries (head {ack.head[:16]}…), the acknowledgement audited at position {ack.size + 1}"
    )
    rows = [
        {"superseded": named.key, "position": named.size, "root": named.root[:16]} for named in ack.supersedes
    ]
    rows += [
        {"superseded": key, "position": "", "root": "(acknowledgement)"}
        for key in ack.supersedes_acknowledgements
    ]
    typer.echo(table(rows, ["superseded", "position", "root"]))
    if report.written:
        typer.echo(f"checkpoints resume: signed at {report.written} (epoch {report.epoch})")
    if not report.ok:
        for problem in report.problems[:5]:
            typer.secho(f"  {problem}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")

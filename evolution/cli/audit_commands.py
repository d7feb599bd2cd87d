"""`evolution audit`: the audit trail, and `evolution audit checkpoint`: sign the chains' heads now."""

from __future__ import annotations

from typing import Annotated

import typer

from evolution.cli import registry_commands
from evolution.cli.context import EXIT_FAILURE, friendly_errors, services, table
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
) -> None:
    """The tenant's audit trail (who moved what, when); `audit checkpoint` signs the chains' heads."""
    if ctx.invoked_subcommand is not None:
        return
    if tenant is None:
        raise InvalidInput("which tenant? pass --tenant (or see `evolution audit --help`)")
    registry_commands.audit(tenant=tenant, limit=limit)


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
    if tenant and tenant not in svc.tenants.tenant_ids():
        raise InvalidInput(f"tenant {tenant!r} does not exist")
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
        typer.echo(f"\n{failed} tenant(s) not checkpointed: their audit chain does not verify", err=True)
        raise typer.Exit(EXIT_FAILURE)

"""Commands that talk to the workflow engine through the orchestration port."""

from __future__ import annotations

import math
import shlex
from typing import Annotated

import typer

from evolution.cli.context import (
    echo_json,
    error,
    friendly_errors,
    operator,
    require_tenant,
    run_async,
    services,
    settings,
)
from evolution.cli.exit_codes import EXIT_INTERRUPTED
from evolution.cli.next_step import next_step
from evolution.cli.retrain_wait import display, exit_code, is_over, outcome, wait_until_over
from evolution.cli.stats_commands import drift_app
from evolution.contracts import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalTicket,
    DriftScanInput,
    PrincipalRef,
    RetrainingInput,
    RetrainingStatus,
)
from evolution.errors import InvalidInput
from evolution.lifecycle import VersionView
from evolution.platform.orchestrator import Orchestrator, connect_orchestrator, decide_as, start_retraining_as
from evolution.platform.settings import Settings
from evolution.registry.stranded import STRANDED_REASON
from evolution.security import Action, authorize

TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name.")]
# What Temporal accepts as an interval is wider; a scan more often than a minute or rarer than a week is a slip.
MIN_SCAN_MINUTES, MAX_SCAN_MINUTES = 1.0, 7 * 24 * 60.0


async def _with_orchestrator(work):  # type: ignore[no-untyped-def]
    orchestrator: Orchestrator = await connect_orchestrator(settings())
    try:
        return await work(orchestrator)
    finally:
        await orchestrator.close()


@friendly_errors
def retrain(
    tenant: TenantOpt,
    model: ModelOpt,
    reason: Annotated[str, typer.Option(help="Why; recorded with the new version.")] = "manual request",
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Start it and return at once (follow it with `evolution status`)."),
    ] = False,
) -> None:
    """Start a retraining (refused while one runs for this tenant) and wait for its outcome, printing each phase.

    The exit code is the outcome: 0 the candidate became CHAMPION; 1 the run ended otherwise (failed, blocked,
    rejected, rolled back, no significant difference, approval timed out), with the reason and what to do next.
    Ctrl-C stops the waiting, not the run (exit 130); --no-wait returns once it is started."""
    cfg = settings()
    principal = authorize(operator(cfg), Action.START_RETRAINING, tenant)
    request = RetrainingInput(
        tenant_id=tenant,
        model_name=model,
        trigger="manual",
        reason=reason,
        requested_by=PrincipalRef(user=principal.user, role=principal.role, tenant_id=tenant),
    )
    follow = f"follow it: evolution status --tenant {tenant}"
    if no_wait:
        workflow_id = run_async(_with_orchestrator(lambda o: start_retraining_as(principal, o, request)))
        typer.echo(f"started {workflow_id}")
        typer.echo(follow)
        return

    async def start_and_wait(orchestrator: Orchestrator) -> RetrainingStatus | None:
        workflow_id = await start_retraining_as(principal, orchestrator, request)
        with display() as shown:
            shown.line(f"started {workflow_id} (Ctrl-C stops waiting; the run goes on)")
            return await wait_until_over(orchestrator, tenant, shown.line)

    try:
        final = run_async(_with_orchestrator(start_and_wait))
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting; the retraining goes on. {follow}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if final is None:  # not reached without a timeout; kept for the type
        typer.echo(follow)
        return
    code = exit_code(final)
    if code:
        error(
            f"retraining of {tenant}/{model} ended {outcome(final)}: {final.message.partition(': ')[2] or final.message}"
        )
        step = next_step(tenant, final.model_name or model, final.message, final.held_windows)
        if step:
            typer.echo(f"next: {step}", err=True)
        raise typer.Exit(code)


@friendly_errors
def status(
    tenant: TenantOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """The live retraining of a tenant: phase, state, canary progress."""
    authorize(operator(settings()), Action.VIEW, tenant)
    svc = services()
    require_tenant(svc, tenant)  # not "no retraining recorded", exit 0, for a typo
    reconciler = svc.reconciler

    async def look(orchestrator: Orchestrator) -> tuple[list[VersionView], RetrainingStatus | None]:
        # A run terminated from outside leaves its candidate behind: fail it before reporting.
        stranded = await reconciler.reconcile(tenant, orchestrator)
        return stranded, await orchestrator.retraining_status(tenant)

    stranded, current = run_async(_with_orchestrator(look))
    if as_json:
        echo_json(_status_json(tenant, stranded, current))
        return
    for version in stranded:
        typer.echo(f"v{version.number} of {version.model_name} failed: {STRANDED_REASON}")
    _echo_watches(tenant)
    if current is None:
        typer.echo(f"no retraining recorded for {tenant}")
        return
    # A run blocked before it made a version (breaker open, no quota) has neither a version nor a state to show.
    made = (
        f"  version: v{current.version_number}" if current.version_number is not None else "  no version made"
    )
    typer.echo(f"phase: {current.phase}{made}" + (f"  state: {current.state}" if current.state else ""))
    if current.phase == "finished" and current.message:
        # How the run ended and why: a failed trainer's reason and its last output lines.
        typer.echo(f"outcome: {current.message}")
        step = next_step(tenant, current.model_name, current.message, current.held_windows)
        if step:
            typer.echo(f"next: {step}")
    if current.phase == "shadow" and current.shadow_pairs_needed:
        typer.echo(
            f"shadow pairs: {current.shadow_pairs} of {current.shadow_pairs_needed} needed before the canary "
            "(live predictions whose outcomes have arrived)"
        )
    elif current.shadow_pairs:
        typer.echo(f"shadow pairs: {current.shadow_pairs}")
    if current.guard:
        g = current.guard
        typer.echo(
            f"canary: n={g.n}  p(promote)={g.p_promote:.4g}  q(rollback)={g.q_rollback:.4g}  → {g.reason}"
        )
    if current.refused_approvals:
        typer.echo(f"refused approvals: {current.refused_approvals} (last: {current.last_refusal})")
    if current.held_windows and current.phase == "awaiting_snapshot_acceptance":
        # Why the retraining waits: the drift's window (or the latest) has data-quality alerts, and how to go on.
        typer.echo(f"waiting: {current.message}")
        window = current.held_windows[0]
        typer.echo(f'next: accept it: evolution snapshot accept {tenant} {window} --reason "…"')
    if current.awaiting_approval:
        model = current.model_name or "<model>"
        typer.echo(f"waiting for approval: evolution approve --tenant {tenant} --model {model}")


def _status_json(
    tenant: str, stranded: list[VersionView], current: RetrainingStatus | None
) -> dict[str, object]:
    """What `status --json` prints: the run as the engine reports it, its outcome and next step once finished."""
    ended = current is not None and is_over(current)
    step = (
        next_step(tenant, current.model_name, current.message, current.held_windows)
        if current is not None and ended and current.message
        else None
    )
    watches = services().watches.progress(operator(settings()), tenant)
    return {
        "tenant_id": tenant,
        "retraining": current.model_dump(mode="json") if current is not None else None,
        "over": ended,
        "outcome": outcome(current) if current is not None and ended else None,
        "next_step": step,
        "stranded": [
            {"model_name": v.model_name, "version": v.number, "reason": STRANDED_REASON} for v in stranded
        ],
        "watches": [w.model_dump(mode="json") for w in watches],
    }


def _echo_watches(tenant: str) -> None:
    """The latest post-promotion watch of each model: its progress while it runs, how it ended after."""
    from evolution.timeutil import utcnow

    latest: dict[str, str] = {}
    for watch in services().watches.progress(operator(settings()), tenant):
        latest.setdefault(watch.model_name, watch.summary(utcnow()))
    for model_name, line in sorted(latest.items()):
        typer.echo(f"post-promotion watch of {model_name}: {line}")


def _decide(tenant: str, model: str, decision: ApprovalDecision, reason: str, ticket_only: bool) -> None:
    """Issue a signed ticket for the operator's decision, then send it (or print the signal that sends it)."""
    if not model:
        raise InvalidInput("--model is required")
    cfg = settings()
    principal = operator(cfg)

    tickets = services().approval_tickets
    if ticket_only:

        async def issue(orchestrator: Orchestrator) -> ApprovalTicket:
            current = await orchestrator.retraining_status(tenant)
            return tickets.ticket_for(principal, tenant, current, decision, reason, model)

        ticket = run_async(_with_orchestrator(issue))
        claims = ticket.claims
        typer.echo(
            f"ticket for {decision} by {claims.user} ({claims.role}), valid until {claims.expires_at.isoformat()}"
        )
        typer.echo("send it with plain Temporal tooling (it counts once):")
        typer.echo(signal_command(cfg, ticket))
        return
    answer = run_async(
        _with_orchestrator(lambda o: decide_as(principal, o, tickets, tenant, decision, reason, model))
    )
    if not answer.accepted:
        raise InvalidInput(f"{decision} {answer.message}")
    typer.echo(f"{decision}: {answer.message} → {answer.final_state}")


def signal_command(cfg: Settings, ticket: ApprovalTicket) -> str:
    """The ``temporal workflow signal`` command line that delivers ``ticket``."""
    claims = ticket.claims
    payload = ApprovalRequest.of(ticket).model_dump_json(exclude_defaults=True)
    return shlex.join(
        [
            "temporal",
            "workflow",
            "signal",
            "--address",
            cfg.temporal_address,
            "--namespace",
            cfg.temporal_namespace,
            "--workflow-id",
            claims.workflow_id,
            "--run-id",
            claims.run_id,
            "--name",
            claims.decision,
            "--input",
            payload,
        ]
    )


TicketOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--ticket-only",
        help="Print a signed ticket as the `temporal workflow signal` command that sends it, instead of sending it.",
    ),
]


@friendly_errors
def approve(
    tenant: TenantOpt,
    model: ModelOpt,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "",
    ticket_only: TicketOnlyOpt = False,
) -> None:
    """Approve the candidate waiting after its canary: it becomes CHAMPION (a signed ticket names you)."""
    _decide(tenant, model, "approve", reason, ticket_only)


@friendly_errors
def reject(
    tenant: TenantOpt,
    model: ModelOpt,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "",
    ticket_only: TicketOnlyOpt = False,
) -> None:
    """Reject the candidate waiting after its canary: it goes to FAILED, the champion stays."""
    _decide(tenant, model, "reject", reason, ticket_only)


@friendly_errors
def drift_scan(
    tenant: TenantOpt,
    model: ModelOpt,
    no_retrain: Annotated[
        bool, typer.Option("--no-retrain", help="Report only; do not retrain on alert.")
    ] = False,
) -> None:
    """Run a drift scan now (seal the latest window, scan it against the champion, retrain on alert)."""
    authorize(operator(settings()), Action.WRITE_DRIFT_REPORT, tenant)
    scan = DriftScanInput(tenant_id=tenant, model_name=model, auto_retrain=not no_retrain)
    result = run_async(_with_orchestrator(lambda o: o.run_drift_scan(scan)))
    typer.echo(
        f"level: {result.level}  report: {result.report_id}  retraining: {result.retraining}  {result.message}"
    )


@friendly_errors
def schedule(
    tenant: TenantOpt,
    model: ModelOpt,
    every_minutes: Annotated[float, typer.Option(help="Scan interval (SLO: detection within 4 h).")] = 60.0,
) -> None:
    """Create or update the tenant's drift-scan schedule and its daily gc/{tenant} retention schedule (idempotent)."""
    authorize(operator(settings()), Action.MANAGE_TENANT, tenant)
    if not (math.isfinite(every_minutes) and MIN_SCAN_MINUTES <= every_minutes <= MAX_SCAN_MINUTES):
        raise InvalidInput(
            f"--every-minutes {every_minutes:g}: give {MIN_SCAN_MINUTES:g} to {MAX_SCAN_MINUTES:g} minutes "
            "(the drift SLO asks for a scan within 4 h of a window opening)"
        )
    require_tenant(services(), tenant)  # a schedule for no tenant would fail every scan it starts
    scan = DriftScanInput(tenant_id=tenant, model_name=model)

    async def ensure(orchestrator: Orchestrator) -> tuple[str, str, str]:
        drift = await orchestrator.ensure_drift_schedule(scan, every_minutes * 60)
        gc = await orchestrator.ensure_gc_schedule(tenant)
        return drift, gc, await orchestrator.ensure_escalation_schedule()

    schedule_id, gc_id, escalations_id = run_async(_with_orchestrator(ensure))
    typer.echo(f"schedule {schedule_id}: every {every_minutes:g} min")
    typer.echo(f"schedule {gc_id}: daily retention and garbage collection")
    typer.echo(f"schedule {escalations_id}: the notification escalation policy (all tenants)")


# Once, when this module is first imported: `register` runs for every app the CLI builds.
drift_app.command("scan")(drift_scan)


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain)
    app.command("status")(status)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("schedule")(schedule)
    app.add_typer(drift_app, name="drift")

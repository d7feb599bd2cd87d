"""Tenants, sources, ingestion, snapshots, versions, audit and verification."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from evolution.cli.context import (
    EXIT_FAILURE,
    echo_json,
    friendly_errors,
    operator,
    services,
    settings,
    table,
)
from evolution.errors import InvalidInput
from evolution.timeutil import utcnow

# What only ingestion, sources or verification use is imported by those commands: the read commands start faster.
if TYPE_CHECKING:
    from evolution.data.event_schema import IngestSummary, InputRecord, Reject
    from evolution.platform.wiring import Services
    from evolution.registry.circuit_breaker import CircuitBreaker

tenant_app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)
source_app = typer.Typer(help="Event sources and their signing keys.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Immutable, signed dataset snapshots.", no_args_is_help=True)
quota_app = typer.Typer(help="Monthly GPU-hours quota and budget cap.", no_args_is_help=True)
breaker_app = typer.Typer(help="The retraining circuit breaker.", no_args_is_help=True)
tenant_app.add_typer(quota_app, name="quota")
tenant_app.add_typer(breaker_app, name="breaker")

TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
# Files read as CSV records, and their default delimiter.
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}


@tenant_app.command("create")
@friendly_errors
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id: lowercase letters, digits, '-' or '_'.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    gpu_hours: Annotated[float, typer.Option(help="GPU-hours per month.")] = 100.0,
    budget_usd: Annotated[float, typer.Option(help="Monthly ML-ops budget cap in USD.")] = 500.0,
) -> None:
    """Create a tenant (idempotent)."""
    svc = services()
    created = svc.tenants.ensure_tenant(
        operator(svc.settings), tenant_id, name, gpu_hours_quota=gpu_hours, budget_cap_usd=budget_usd
    )
    typer.echo(f"tenant {tenant_id} {'created' if created else 'already exists'}")


def _given(**options: Any) -> dict[str, Any]:
    """The options the command line set (typer passes the others as None)."""
    return {name: value for name, value in options.items() if value is not None}


@tenant_app.command("configure")
@friendly_errors
def tenant_configure(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    alpha: Annotated[
        float | None, typer.Option(help="Significance level of the drift tests (after BH).")
    ] = None,
    warn_psi: Annotated[float | None, typer.Option(help="PSI a significant drift needs to warn.")] = None,
    alert_psi: Annotated[float | None, typer.Option(help="PSI a significant drift needs to alert.")] = None,
    min_window: Annotated[int | None, typer.Option(help="Smaller windows report insufficient_data.")] = None,
    mae_change: Annotated[
        float | None, typer.Option(help="Relative MAE increase that matters (0.10 = 10 %).")
    ] = None,
    id_column: Annotated[
        list[str] | None,
        typer.Option(help="A column that identifies rows and is never a feature (repeatable)."),
    ] = None,
    breaker_threshold: Annotated[
        int | None,
        typer.Option(help="Consecutive failed retrainings that open the circuit breaker (default 3)."),
    ] = None,
    out_of_range_min_share: Annotated[
        float | None,
        typer.Option(
            help="Data quality: share of values outside the usual range that alerts (default 0.01)."
        ),
    ] = None,
    out_of_range_baseline_multiple: Annotated[
        float | None,
        typer.Option(
            help="Data quality: and at least this multiple of the baseline's share outside (default 5)."
        ),
    ] = None,
    missing_rate_min_increase: Annotated[
        float | None,
        typer.Option(help="Data quality: rise of the missing share that alerts (default 0.05 = 5 points)."),
    ] = None,
    unseen_min_share: Annotated[
        float | None,
        typer.Option(help="Data quality: share of never-seen categories that alerts (default 0.05)."),
    ] = None,
    stuck_min_share: Annotated[
        float | None,
        typer.Option(
            help="Data quality: share of one repeated value that alerts as stuck (> 0.5; default 0.95)."
        ),
    ] = None,
    high_cardinality_share: Annotated[
        float | None,
        typer.Option(
            help="Data quality: a text feature with more distinct values is not measured (default 0.5)."
        ),
    ] = None,
    quality_min_values: Annotated[
        int | None,
        typer.Option(help="Data quality: fewer window values report insufficient_data (default 50)."),
    ] = None,
    hold_on: Annotated[
        list[str] | None,
        typer.Option(
            help="Data quality: a check whose alert holds the window from retraining until an admin accepts it "
            "(repeatable; default missing_rate, unseen_categories, stuck)."
        ),
    ] = None,
    value_per_unit_error_usd: Annotated[
        float | None,
        typer.Option(
            help="Economics: USD saved per unit of forecast error avoided, per forecast (docs/economics.md)."
        ),
    ] = None,
    serving_cost_per_1k_usd: Annotated[
        float | None, typer.Option(help="Economics: USD per 1,000 forecasts served.")
    ] = None,
    target_unit: Annotated[
        str | None, typer.Option(help="Economics: the forecast's unit, e.g. t/ha.")
    ] = None,
) -> None:
    """Admin: change a tenant's drift thresholds, data-quality floors, identifier columns or economics (validated,
    audited)."""
    drift = _given(
        alpha=alpha,
        warn_psi=warn_psi,
        alert_psi=alert_psi,
        min_window=min_window,
        mae_material_change=mae_change,
    )
    patch: dict[str, Any] = {"drift": drift} if drift else {}
    floors = _given(
        out_of_range_min_share=out_of_range_min_share,
        out_of_range_baseline_multiple=out_of_range_baseline_multiple,
        missing_rate_min_increase=missing_rate_min_increase,
        unseen_min_share=unseen_min_share,
        stuck_min_share=stuck_min_share,
        high_cardinality_share=high_cardinality_share,
        min_values=quality_min_values,
    )
    if floors:
        patch["quality"] = floors
    if hold_on:
        patch["quality_hold_checks"] = hold_on
    if id_column:
        patch["id_columns"] = id_column
    if breaker_threshold is not None:
        patch["circuit_breaker_threshold"] = breaker_threshold
    economics = _given(
        value_per_unit_error_usd=value_per_unit_error_usd,
        serving_cost_per_1k_usd=serving_cost_per_1k_usd,
        target_unit=target_unit,
    )
    if economics:
        patch["economics"] = economics
    if not patch:
        raise InvalidInput("nothing to change: pass at least one option (see --help)")
    svc = services()
    settings_now = svc.tenants.configure_tenant(operator(svc.settings), tenant_id, patch)
    typer.echo(settings_now.model_dump_json(indent=2))


@tenant_app.command("show")
@friendly_errors
def tenant_show(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")], as_json: JsonOpt = False
) -> None:
    """A tenant's settings, this month's quota use and whether the circuit breaker lets it retrain."""
    svc = services()
    principal = operator(svc.settings)
    tenant_settings = svc.tenants.tenant_settings(principal, tenant_id)
    quota = svc.quota.status(principal, tenant_id)
    breaker = _breaker(svc).status(principal, tenant_id)
    if as_json:
        echo_json(
            {
                "tenant_id": tenant_id,
                "settings": tenant_settings.model_dump(mode="json"),
                "quota": quota.model_dump(mode="json"),
                "circuit_breaker": breaker.model_dump(mode="json"),
            }
        )
        return
    typer.echo(tenant_settings.model_dump_json(indent=2))
    typer.echo(
        f"{quota.month}: {quota.gpu_hours_used:.3f} of {quota.gpu_hours_quota:g} GPU-hours, "
        f"${quota.cost_usd:.2f} of ${quota.budget_cap_usd:g}"
    )
    typer.echo(
        breaker.blocked_reason
        or f"circuit breaker closed: {breaker.consecutive_failures} of {breaker.threshold} consecutive failures"
    )


@quota_app.command("show")
@friendly_errors
def quota_show(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")], as_json: JsonOpt = False
) -> None:
    """This month's GPU-hours and spend against the tenant's limits, and whether retraining is blocked."""
    svc = services()
    quota = svc.quota.status(operator(svc.settings), tenant_id)
    if as_json:
        echo_json(quota)
        return
    typer.echo(
        f"{quota.month}: {quota.gpu_hours_used:.3f} of {quota.gpu_hours_quota:g} GPU-hours, "
        f"${quota.cost_usd:.2f} of ${quota.budget_cap_usd:g}"
    )
    typer.echo(quota.blocked_reason or "retraining allowed")


@quota_app.command("set")
@friendly_errors
def quota_set(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    gpu_hours: Annotated[float | None, typer.Option(help="New GPU-hours per month.")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="New monthly budget cap in USD.")] = None,
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")] = "",
) -> None:
    """Admin: raise (or lower) a tenant's monthly GPU-hours quota and/or budget cap (audited, old and new)."""
    svc = services()
    after = svc.tenants.set_quota(
        operator(svc.settings), tenant_id, gpu_hours_quota=gpu_hours, budget_cap_usd=budget_usd, reason=reason
    )
    typer.echo(
        f"tenant {tenant_id}: {after['gpu_hours_quota']:g} GPU-hours and ${after['budget_cap_usd']:g} per month"
    )


def _breaker(svc: Services) -> CircuitBreaker:
    return svc.breaker


@breaker_app.command("status")
@friendly_errors
def breaker_status(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")], as_json: JsonOpt = False
) -> None:
    """Whether retraining is enabled, and the current streak of failed retrainings."""
    svc = services()
    status = _breaker(svc).status(operator(svc.settings), tenant_id)
    if as_json:
        echo_json(status)
        return
    typer.echo(
        f"tenant {tenant_id}: breaker {status.state}, {status.consecutive_failures} of {status.threshold} "
        f"consecutive failures (last outcome: {status.last_outcome or 'none'})"
    )
    if status.blocked_reason:
        typer.echo(status.blocked_reason)


@breaker_app.command("reset")
@friendly_errors
def breaker_reset(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    reason: Annotated[str, typer.Option(help="Why retraining may run again; recorded in the audit log.")],
) -> None:
    """Admin: close the circuit breaker and clear the failure streak (audited)."""
    svc = services()
    status = _breaker(svc).reset(operator(svc.settings), tenant_id, reason)
    typer.echo(f"tenant {tenant_id}: breaker {status.state}, retraining enabled")


@tenant_app.command("list")
@friendly_errors
def tenant_list(as_json: JsonOpt = False) -> None:
    """List tenants."""
    tenant_ids = services().tenants.tenant_ids()
    if as_json:
        echo_json(tenant_ids)
        return
    for tenant_id in tenant_ids:
        typer.echo(tenant_id)


@source_app.command("add")
@friendly_errors
def source_add(
    name: Annotated[str, typer.Argument(help="Source name, e.g. field-sensors.")],
    tenant: TenantOpt,
) -> None:
    """Create a signing key for a source and register its public key with the tenant."""
    from evolution.data.sources import create_source_key

    svc = services()
    key_id, public_pem, path = create_source_key(svc.settings.keys_dir, tenant, name)
    svc.events.register_source_key(operator(svc.settings), tenant, key_id, public_pem)
    typer.echo(f"source {name}: key {key_id} registered for {tenant}; private key {path} (mode 0600)")


# Typer keeps a docstring's line breaks, so the help is written as one line per paragraph.
INGEST_HELP = "\n\n".join(
    [
        "Ingest learning events: verify each signature, keep rejects with a reason, accept duplicates once.",
        "Every line (JSON Lines) or record (CSV) is read on its own: one that is not UTF-8, not JSON, too large, "
        "of the wrong shape or type, or badly signed is rejected and kept in the dead-letter table with a reason "
        "naming its line and field; the others are stored. The summary adds up: records read = accepted + "
        "duplicate + rejected. A UTF-8 byte order mark and CRLF line ends are fine; quoted CSV fields may hold "
        "the delimiter and newlines.",
        "Exit codes: 0 every record accepted or a duplicate (an empty file reads 0 records); 1 some records "
        "rejected, the others stored; 2 nothing ingested: the file could not be read (missing, a directory, "
        "binary or UTF-16, a CSV header not separated by the delimiter) or the tenant or source is unknown.",
    ]
)


def _plain_records(handle: IO[bytes], file: Path, delimiter: str | None) -> Iterator[InputRecord]:
    from evolution.data.input_files import CsvRecords, record_lines

    suffix = file.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        chosen = delimiter or TABLE_SUFFIXES[suffix]
        return iter(CsvRecords(handle, str(file), delimiter=chosen, required=("event_time",)))
    if delimiter is not None:
        raise InvalidInput(f"--delimiter applies to CSV files (.csv, .tsv), not to {file.name}")
    return record_lines(handle)


def _print_summary(summary: IngestSummary, as_json: bool) -> None:
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    typer.echo(
        f"records read {summary.records_read}  accepted {summary.accepted}  duplicate {summary.duplicate}  "
        f"rejected {summary.rejected}"
    )
    for reject in summary.rejects:
        typer.echo(f"  {reject.reason}", err=True)
    if summary.rejected > len(summary.rejects):
        typer.echo(
            f"  … {summary.rejected - len(summary.rejects)} more rejects in the dead-letter table", err=True
        )


def _unsigned(reject: Reject) -> bool:
    """A reject of a record that has no event envelope at all: likely a plain record sent without --sign-with."""
    return reject.field in ("tenant", "signature") and "Field required" in reject.reason


@friendly_errors
def ingest(
    file: Annotated[
        Path, typer.Argument(help="JSON Lines of signed events, or CSV/JSONL records with --sign-with.")
    ],
    tenant: TenantOpt,
    sign_with: Annotated[
        str | None, typer.Option(help="Sign plain records with this local source's key (CSV needs it).")
    ] = None,
    target: Annotated[
        str, typer.Option(help="With --sign-with: the column holding the actual outcome.")
    ] = "yield_t_ha",
    delimiter: Annotated[
        str | None, typer.Option(help="CSV only: the field separator (default ',' for .csv, tab for .tsv).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary (counts and the first rejects) as JSON.")
    ] = False,
) -> None:
    """Ingest learning events: verify each signature, keep rejects with a reason, accept duplicates once."""
    from evolution.cli.progress import progress_meter
    from evolution.data.input_files import event_lines, open_input
    from evolution.data.sources import load_source_key, sign_records
    from evolution.progress import metered

    if file.suffix.lower() in TABLE_SUFFIXES and not sign_with:
        raise InvalidInput(
            "CSV rows carry no signatures: pass --sign-with SOURCE to sign them with a local source key"
        )
    if delimiter is not None and not sign_with:
        raise InvalidInput("--delimiter applies to CSV records, which need --sign-with SOURCE")
    svc = services()
    try:
        principal = operator(svc.settings)
        key = load_source_key(svc.settings.keys_dir, tenant, sign_with) if sign_with else None
        size = file.stat().st_size if file.is_file() else 0
        with (
            progress_meter(as_json) as meter,
            metered(meter, f"ingest {file.name}", size, "bytes") as advance,
            open_input(file, advance) as handle,
        ):
            records = (
                event_lines(handle)
                if key is None
                else sign_records(
                    _plain_records(handle, file, delimiter),
                    tenant,
                    *key,
                    target=target,
                    request_prefix=file.stem,
                )
            )
            summary = svc.events.ingest_records(principal, tenant, records, source=str(file))
    finally:
        svc.close()
    _print_summary(summary, as_json)
    if key is None and not as_json and any(_unsigned(r) for r in summary.rejects):
        typer.echo("  (plain records, not signed events? pass --sign-with SOURCE to sign them)", err=True)
    if summary.rejected:
        raise typer.Exit(EXIT_FAILURE)


@snapshot_app.command("seal")
@friendly_errors
def snapshot_seal(tenant: TenantOpt) -> None:
    """Seal every event since the last snapshot into a new signed snapshot."""
    from evolution.cli.progress import progress_meter

    svc = services()
    with progress_meter() as meter:
        snap = svc.snapshots.seal(operator(svc.settings), tenant, utcnow(), meter=meter)
    typer.echo(
        f"{snap.id}: {snap.row_count} events, {snap.leaf_count} leaves, merkle root {snap.merkle_root}"
    )


@snapshot_app.command("accept")
@friendly_errors
def snapshot_accept(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    snapshot_id: Annotated[
        str, typer.Argument(help="The window held for data quality (see evolution status).")
    ],
    reason: Annotated[str, typer.Option(help="Why this window may be trained on (audited).")] = "",
) -> None:
    """Admin: accept a window whose data-quality checks fired, so a retraining may train on it (audited)."""
    svc = services()
    window = svc.snapshot_holds.accept(operator(svc.settings), tenant_id, snapshot_id, reason)
    typer.echo(
        f"snapshot {window.snapshot_id} accepted by {window.accepted_by}: {window.accept_reason} "
        f"(it was held for: {'; '.join(window.checks) or 'data-quality alerts'})"
    )


@snapshot_app.command("list")
@friendly_errors
def snapshot_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """List a tenant's snapshots."""
    svc = services()
    snapshots = svc.snapshots.list_snapshots(operator(svc.settings), tenant)
    if as_json:
        echo_json([s.model_dump(mode="json") for s in snapshots])
        return
    rows = [
        {
            "id": s.id,
            "window_start": s.window_start.isoformat(),
            "window_end": s.window_end.isoformat(),
            "rows": s.row_count,
            "merkle_root": s.merkle_root[:16],
        }
        for s in snapshots
    ]
    typer.echo(table(rows, ["id", "window_start", "window_end", "rows", "merkle_root"]))


@friendly_errors
def versions(
    tenant: TenantOpt,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name.")] = None,
    lineage: Annotated[
        bool,
        typer.Option(
            "--lineage",
            help="Per version, from its verified signed manifest: snapshot and Merkle root, seed, the trainer's "
            "identity (image digest, or command and code file digests) and the config's digest.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every model version with its state."""
    svc = services()
    found = svc.registry.list_versions(operator(svc.settings), tenant, model, strict=True)
    if lineage:
        # Checking a lineage loads the training stack; listing versions does not.
        from evolution.cli.lineage_output import lineage_json, print_lineage

        if as_json:
            echo_json([lineage_json(svc, v) for v in found])
        else:
            print_lineage(svc, found)
        return
    if as_json:
        echo_json([v.model_dump(mode="json") for v in found])
        return
    rows = [
        {
            "model": v.model_name,
            "version": v.number,
            "state": v.state.value,
            "lock": v.lock_version,
            "model_hash": (v.model_hash or "")[:16],
            "updated": v.updated_at.isoformat(timespec="seconds"),
            "holdout_mae": v.metrics.get("holdout_mae", ""),
        }
        for v in found
    ]
    typer.echo(table(rows, ["model", "version", "state", "lock", "model_hash", "holdout_mae", "updated"]))


@friendly_errors
def audit(
    tenant: TenantOpt,
    limit: Annotated[int, typer.Option(help="Show the last N entries.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The tenant's audit trail (who moved what, when)."""
    svc = services()
    entries = svc.registry.audit_trail(operator(svc.settings), tenant)[-limit:] if limit > 0 else []
    if as_json:
        echo_json([e.model_dump(mode="json") for e in entries])
        return
    rows = [
        {
            "seq": e.seq,
            "at": e.at.isoformat(timespec="seconds"),
            "actor": e.actor,
            "role": e.role,
            "action": e.action,
            "subject": e.subject_id,
            "change": f"{e.from_state or ''}->{e.to_state or ''}" if e.to_state else "",
        }
        for e in entries
    ]
    typer.echo(table(rows, ["seq", "at", "actor", "role", "action", "subject", "change"]))


@friendly_errors
def rollback(
    tenant: TenantOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")],
) -> None:
    """Admin: restore the previous champion now (the current one is deprecated)."""
    import uuid

    svc = services()
    result = svc.registry.force_rollback(
        operator(svc.settings), tenant, model, f"cli-rollback-{uuid.uuid4().hex}", reason
    )
    typer.echo(
        f"{model} v{result.version.number} is CHAMPION again; v{result.demoted.number if result.demoted else '?'} deprecated"
    )


@friendly_errors
def verify(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    reproduce: Annotated[
        tuple[str, str, int] | None,
        typer.Option(
            "--reproduce",
            metavar="TENANT MODEL VERSION",
            help="Instead: re-run that version's trainer on the same snapshot and seed, and compare what it "
            "writes with the signed digests (exit 0: they match; 1: what differs, or what stopped it).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every check and the counts as JSON (not with --reproduce).")
    ] = False,
) -> None:
    """Re-check every signature, Merkle root, audit chain and stored object; exit 1 on any failure.

    A stored object nothing references is listed as ORPHAN: worth a look, but not a failure.
    """
    from evolution.cli.lineage_output import run_reproduction
    from evolution.cli.progress import progress_meter
    from evolution.platform.verification import verify_all

    if reproduce is not None:
        svc = services()
        run_reproduction(svc, operator(svc.settings), *reproduce)
        return
    with progress_meter(as_json) as meter:
        report = verify_all(services(), [tenant] if tenant else None, meter=meter)
    if as_json:
        echo_json(
            {
                "checks": [c.model_dump(mode="json") for c in report.checks],
                "failed": len(report.failures),
                "orphans": len(report.orphans),
                "ok": not report.failures,
            }
        )
        if report.failures:
            raise typer.Exit(EXIT_FAILURE)
        return
    rows = [
        {
            "tenant": c.tenant_id,
            "kind": c.kind,
            "subject": c.subject,
            "result": "ORPHAN" if c.orphan else "ok" if c.ok else "FAILED",
            "detail": c.detail[:100],
        }
        for c in report.checks
    ]
    typer.echo(table(rows, ["tenant", "kind", "subject", "result", "detail"]))
    failed = len(report.failures)
    orphans = len(report.orphans)
    summary = f"\n{len(report.checks)} checks, {failed} failed"
    if orphans:
        summary += f", {orphans} orphaned object{'s' if orphans > 1 else ''} (reported, not failed)"
    typer.echo(summary)
    if failed:
        raise typer.Exit(EXIT_FAILURE)


@friendly_errors
def migrate() -> None:
    """Apply database migrations up to head (the CLI and the processes also do this on start)."""
    from evolution.registry.db import upgrade_to_head

    cfg = settings()
    upgrade_to_head(cfg.resolved_database_url)
    typer.echo("registry schema at head")


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")
    app.add_typer(source_app, name="source")
    app.add_typer(snapshot_app, name="snapshot")
    app.command("ingest", help=INGEST_HELP)(ingest)
    app.command("versions")(versions)
    app.command("rollback")(rollback)
    app.command("verify")(verify)
    app.command("migrate")(migrate)

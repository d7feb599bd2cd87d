"""`evolution gc run`: retention and garbage collection of a tenant's model artifacts.

The policy is evolution/governance/retention.py; the collection, evolution/governance/garbage_collection.py.
"""

from __future__ import annotations

from typing import Annotated

import typer

from evolution.cli.context import EXIT_FAILURE, friendly_errors, operator, services, settings, table
from evolution.governance.garbage_collection import GcReport
from evolution.governance.retention import RetentionPlan

gc_app = typer.Typer(
    help="Retention and garbage collection: keep the last versions and every champion, collect old "
    "DRAFT/FAILED artifacts (daily as the gc/{tenant} schedule).",
    no_args_is_help=True,
)

DIGEST_PREFIX = 12


def human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def render_plan(plan: RetentionPlan) -> str:
    """The plan as an operator reads it: what would go (one row per artifact), what stays and why, totals."""
    lines: list[str] = []
    scope = f"{plan.tenant_id}/{plan.model_name}" if plan.model_name else plan.tenant_id
    lines.append(
        f"retention plan for {scope} as of {plan.as_of:%Y-%m-%d %H:%M} UTC: keep the last {plan.keep_last} "
        f"versions, every champion and live version; collect DRAFT/FAILED after {plan.min_age_days:g} days"
    )
    if plan.deferred:
        lines.append(f"deferred: {plan.deferred}")
    rows = [
        {
            "version": f"{e.model_name} v{e.number}",
            "state": e.state.value,
            "age": f"{e.age_days:.1f} d",
            "digest": e.digest[:DIGEST_PREFIX],
            "file": e.name,
            "bytes": e.bytes,
            "reason": e.reason,
        }
        for e in plan.entries
    ]
    if rows:
        lines += [
            "",
            "to delete:",
            table(rows, ["version", "state", "age", "digest", "file", "bytes", "reason"]),
        ]
    else:
        lines += ["", "to delete: nothing"]
    if plan.spared:
        spared = [
            {
                "version": f"{s.model_name} v{s.number}",
                "digest": s.digest[:DIGEST_PREFIX],
                "file": s.name,
                "bytes": s.bytes,
                "reason": s.reason,
            }
            for s in plan.spared
        ]
        lines += [
            "",
            "spared (shared with something kept):",
            table(spared, ["version", "digest", "file", "bytes", "reason"]),
        ]
    others = [
        {
            "version": f"{v.model_name} v{v.number}",
            "state": v.state.value,
            "age": f"{v.age_days:.1f} d",
            "decision": v.decision,
            "why": "; ".join(v.reasons),
        }
        for v in plan.versions
        if v.decision != "collect"
    ]
    if others:
        lines += ["", "kept or skipped:", table(others, ["version", "state", "age", "decision", "why"])]
    t = plan.totals
    lines += [
        "",
        f"totals: {t.versions_collected} versions collected ({t.artifacts_deleted} artifacts, "
        f"{human_bytes(t.bytes_deleted)}), {t.versions_kept} kept ({human_bytes(t.bytes_kept)}), "
        f"{t.versions_skipped} skipped; {t.artifacts_spared} shared artifacts spared ({human_bytes(t.bytes_spared)})",
    ]
    return "\n".join(lines)


def render_report(report: GcReport) -> str:
    """What a real run did: one row per collected version, then whatever it left alone or failed on."""
    lines: list[str] = []
    if report.plan.deferred:
        lines.append(f"nothing collected, deferred: {report.plan.deferred}")
    rows = [
        {
            "version": f"{c.model_name} v{c.number}",
            "state": c.state.value,
            "artifacts": len(c.digests),
            "bytes": c.bytes,
            "digests": ", ".join(d[:DIGEST_PREFIX] for d in c.digests),
            "audit": f"#{c.audit_seq}",
        }
        for c in report.collected
    ]
    if rows:
        lines += ["collected:", table(rows, ["version", "state", "artifacts", "bytes", "digests", "audit"])]
    elif not report.plan.deferred:
        lines.append("collected: nothing")
    lines += [f"left alone: {note}" for note in report.left_alone]
    lines += [f"error: {error}" for error in report.errors]
    t = report.plan.totals
    lines.append(
        f"totals: {len(report.collected)} versions collected, {report.artifacts_deleted} artifacts deleted "
        f"({human_bytes(report.bytes_deleted)}); {t.versions_kept} versions kept ({human_bytes(t.bytes_kept)})"
    )
    return "\n".join(lines)


@gc_app.command("run")
@friendly_errors
def run(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only this model (default: all).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan (what would be deleted and why); delete nothing."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan or report as JSON.")] = False,
) -> None:
    """Collect the tenant's old DRAFT/FAILED model artifacts now (admin), or show the plan (--dry-run)."""
    from evolution.cli.progress import progress_meter

    svc = services()
    try:
        with progress_meter(as_json) as meter:
            report = svc.retention.run(operator(settings()), tenant, model, dry_run=dry_run, meter=meter)
    finally:
        svc.close()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    elif dry_run:
        typer.echo(render_plan(report.plan))
        typer.echo("dry run: nothing was deleted")
    else:
        typer.echo(render_report(report))
    if report.errors:
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    app.add_typer(gc_app, name="gc")

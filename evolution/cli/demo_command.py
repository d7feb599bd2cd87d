"""`evolution demo`: one tenant from raw learning events to a new CHAMPION, on the real services, with progress.

With ``--byo`` the tenant brings its own model: after the built-in first champion, the demo defines the tenant's
model with the example trainer of examples/sklearn_pipeline (a scikit-learn pipeline exported to ONNX, run as a
command under the training contract), so the candidate the drift calls for is the tenant's ONNX model.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

import typer

from evolution.cli.context import friendly_errors, settings
from evolution.cli.demo_season import backfill_season, scan_after_promotion, set_demo_economics
from evolution.contracts import (
    DriftScanInput,
    RetrainingInput,
    RetrainingResult,
    RetrainingStatus,
    RolloutTiming,
)
from evolution.data.sources import create_source_key, load_source_key, records_to_events, source_key_path
from evolution.demo.byo import EXAMPLE, TRAINER_FILE, check_example, example_definition
from evolution.demo.scenario import HttpTransport, Scenario, TrafficDriver, history_records
from evolution.demo.story import TrafficLedger, decision_text, role_split
from evolution.demo.synthetic import TARGET, DriftSpec
from evolution.errors import Conflict, EvolutionError
from evolution.lifecycle import VersionView
from evolution.platform.orchestrator import Orchestrator, connect_orchestrator, decide_as, start_retraining_as
from evolution.platform.processes import ProcessGroup
from evolution.platform.reproduction import lineage_of
from evolution.platform.settings import Settings
from evolution.platform.verification import verify_all
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from evolution.training.formats import ONNX_MODEL

DEMO_ADMIN = "demo-admin"
DEMO_MANAGER = "demo-manager"
DEMO_SERVICE = "demo-service"  # the account of the demo's field app: forecasts and outcome events over HTTP
SOURCE = "field-sensors"


@dataclass(frozen=True)
class DemoSize:
    history_rows: int
    drift_rows: int
    round_rows: int
    timing: RolloutTiming


FAST = DemoSize(
    2000, 1500, 500, RolloutTiming(look_interval_s=1.0, shadow_min_pairs=200, approval_timeout_s=600)
)
FULL = DemoSize(
    8000, 3000, 800, RolloutTiming(look_interval_s=2.0, shadow_min_pairs=400, approval_timeout_s=3600)
)


class Progress:
    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def step(self, message: str) -> None:
        typer.echo(f"[{time.monotonic() - self._t0:6.1f}s] {message}")


def _free_tenant_id(services: Services, base: str) -> str:
    existing = set(services.tenants.tenant_ids())
    if base not in existing:
        return base
    n = 2
    while f"{base}-{n}" in existing:
        n += 1
    return f"{base}-{n}"


async def _wait_phase(
    orchestrator: Orchestrator,
    tenant: str,
    progress: Progress,
    driver: TrafficDriver | None,
    previous_version: str | None = None,
    on_validated: Callable[[str], None] | None = None,
) -> RetrainingStatus:
    """Drive traffic (if any) until the retraining waits for approval; fail if it ends without reaching it.

    Returns the status that waits for approval: its guard is the decision the run stands on, which the last
    progress line states (a canary look before it printed the figures of a look that decided nothing yet).

    ``previous_version``: the candidate of the run before. Until the new run has started, ``retrain/{tenant}``
    still describes that finished run, which must not be mistaken for this one ending early. ``on_validated``
    is called once with the candidate's version id when it has passed validation (before its shadow phase).
    """
    last = ""
    for _ in range(600):
        status = await orchestrator.retraining_status(tenant)
        if status is not None and previous_version is not None and status.version_id == previous_version:
            status = None  # the previous run; the new one has not started yet
        if status is not None:
            past_validation = status.phase in ("shadow", "canary") or status.awaiting_approval
            if on_validated is not None and past_validation and status.version_id is not None:
                on_validated(status.version_id)
                on_validated = None
            line = f"retraining: {status.phase}"
            if status.shadow_pairs and status.phase == "shadow":
                line += f" ({status.shadow_pairs} labelled shadow pairs)"
            if status.guard and status.phase == "canary":
                g = status.guard
                line += f" (n={g.n}, p={g.p_promote:.3g}, q={g.q_rollback:.3g})"
            if status.awaiting_approval and status.guard is not None and status.guard.n > 0:
                line = f"retraining: awaiting approval; the canary decided {decision_text(status.guard)}"
            if line != last:
                progress.step(line)
                last = line
            if status.awaiting_approval:
                return status
            if status.phase == "finished":
                raise EvolutionError(f"retraining ended before approval: {status.message}")
        if driver is not None and status is not None and status.phase in ("shadow", "canary"):
            await asyncio.to_thread(driver.round)
        else:
            await asyncio.sleep(0.5)
    raise EvolutionError("the retraining did not reach approval in time")


async def _approve(
    services: Services, orchestrator: Orchestrator, tenant: str, reason: str
) -> RetrainingResult:
    manager = Principal.for_tenant(DEMO_MANAGER, Role.MANAGER, tenant)
    await decide_as(manager, orchestrator, services.approval_tickets, tenant, "approve", reason)
    return await orchestrator.retraining_result(tenant)


def _service_token(services: Services, admin: Principal, tenant: str) -> str:
    """An API token for the demo's traffic. Ingesting events needs an admin of the tenant (INGEST_EVENTS)."""
    try:
        # Nobody signs in as this account: its password is random and thrown away.
        services.users.add_user(admin, DEMO_SERVICE, secrets.token_urlsafe(32), Role.ADMIN, [tenant])
    except Conflict:
        services.users.grant(admin, DEMO_SERVICE, Role.ADMIN, tenant)
    issued = services.tokens.create_token(admin, DEMO_SERVICE, f"demo traffic {tenant}", timedelta(days=1))
    return issued.token.get_secret_value()


def _define_tenant_model(
    services: Services, admin: Principal, tenant: str, model: str, progress: Progress
) -> None:
    """--byo: the tenant's own trainer (the example) becomes the model's trainer; the next retraining runs it."""
    definition = example_definition()
    view = services.model_definitions.define(
        admin, tenant, model, definition, f"the agronomists' own scikit-learn pipeline ({EXAMPLE})"
    )
    trainer = definition.trainer
    assert trainer.kind == "command"
    categorical = [f.name for f in definition.features if f.type == "categorical"]
    hyperparameters = ", ".join(f"{k}={v}" for k, v in sorted(definition.hyperparameters.items()))
    for line in (
        f"bring your own model: {DEMO_ADMIN} defined {tenant}/{model} revision {view.revision}, trained from now "
        f"on by the tenant's own trainer {EXAMPLE}/train.py",
        "  a scikit-learn pipeline (median-imputed numbers, one-hot categories, gradient boosting) exported to "
        "ONNX; it needs none of our code (docs/bring-your-own-model.md)",
        f"  runs as a command (the package's copy of the example, {TRAINER_FILE.name}): {shlex.join(trainer.argv)}",
        f"  {len(definition.features)} features ({', '.join(categorical)} categorical) -> {definition.target}; "
        f"hyperparameters {hyperparameters}",
        "  v1 (built-in) keeps serving until a candidate of the tenant's trainer beats it",
    ):
        progress.step(line)


def _version_format(version: VersionView) -> str:
    """onnx or builtin, from the files the version's signed manifest lists."""
    files = (version.manifest or {}).get("manifest", {}).get("files", [])
    return "onnx" if any(f.get("name") == ONNX_MODEL for f in files) else "builtin"


def _describe_candidate(services: Services, version: VersionView, progress: Progress) -> dict[str, str]:
    """--byo: what trained the candidate, its format and its lineage, as progress lines; the summary's too."""
    lineage = lineage_of(services, version)  # verifies the signed manifest first
    identity, manifest = lineage.identity, lineage.signed.manifest
    model_format = _version_format(version)
    trainer = identity.describe() if identity is not None else manifest.trainer
    metrics = version.metrics
    onnx = metrics.get("onnx") or {}
    validation = metrics.get("validation") or {}
    train_mae = (metrics.get("trainer") or {}).get("train_mae")
    lines = [f"candidate v{version.number}: trained by the tenant's trainer, format {model_format}"]
    if onnx:
        lines.append(
            f"  {ONNX_MODEL} ({onnx['size_bytes'] / 1024:.0f} KiB) passed the ONNX gate: loads in onnxruntime, "
            f"one input per feature, {onnx['probe_rows']} held-out rows predicted; signed"
        )
    if validation:
        lines.append(
            f"  validated: MAE {validation['candidate_mae']:.3f} against the champion's "
            f"{validation['champion_mae']:.3f} on the same {validation['n']} held-out rows"
            + (f" (the trainer's own training MAE: {train_mae:.3f})" if isinstance(train_mae, float) else "")
        )
    lines.append(f"  lineage: {trainer}")
    code = identity.code_files if identity is not None else []
    lines += [f"  lineage: code {d.path} sha256 {d.sha256[:16]}…" for d in code]
    lines.append(
        f"  lineage: snapshot {manifest.dataset_snapshot_id}, seed {manifest.seed}, contract "
        f"{identity.contract if identity else '?'} (`evolution versions -t {version.tenant_id} --lineage`)"
    )
    for line in lines:
        progress.step(line)
    return {
        "trainer": trainer,
        "format": model_format,
        "code": ", ".join(f"{d.path} sha256 {d.sha256[:16]}…" for d in code) or "-",
    }


async def run_demo(cfg: Settings, size: DemoSize, progress: Progress, byo: bool = False) -> dict[str, object]:
    services = build_services(cfg)
    admin = Principal(user=DEMO_ADMIN, role=Role.ADMIN, tenants=("*",))
    scenario = Scenario(
        tenant_id=_free_tenant_id(services, "acme-agro"),
        history_rows=size.history_rows,
        drift_rows=size.drift_rows,
        round_rows=size.round_rows,
    )
    tenant, model = scenario.tenant_id, scenario.model_name
    services.tenants.ensure_tenant(admin, tenant, "ACME Agro (demo)")
    set_demo_economics(services, admin, tenant)
    if source_key_path(cfg.keys_dir, tenant, SOURCE).exists():
        key_id, private_pem = load_source_key(cfg.keys_dir, tenant, SOURCE)
    else:
        key_id, public_pem, _ = create_source_key(cfg.keys_dir, tenant, SOURCE)
        services.events.register_source_key(admin, tenant, key_id, public_pem)
        _, private_pem = load_source_key(cfg.keys_dir, tenant, SOURCE)
    progress.step(f"tenant {tenant}: source {SOURCE} signs with key {key_id}")

    history = cfg.home / "demo" / f"{tenant}-history.jsonl"
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("w", encoding="utf-8") as out:
        for event in records_to_events(
            history_records(scenario), tenant, key_id, private_pem, target=TARGET, request_prefix="hist"
        ):
            out.write(json.dumps(event) + "\n")
    with history.open(encoding="utf-8") as lines:
        summary = services.events.ingest_lines(admin, tenant, lines, source=str(history))
    progress.step(
        f"ingested {history.name}: accepted {summary.accepted}, duplicate {summary.duplicate}, rejected {summary.rejected}"
    )
    snapshot = services.snapshots.seal(admin, tenant, utcnow())
    progress.step(
        f"snapshot {snapshot.id}: {snapshot.row_count} events, Merkle root {snapshot.merkle_root[:16]}…, signed"
    )

    orchestrator = await connect_orchestrator(cfg)
    await orchestrator.ensure_drift_schedule(
        DriftScanInput(tenant_id=tenant, model_name=model, retraining_timing=size.timing), 3600
    )
    progress.step(f"schedule drift-scan/{tenant} (hourly) in place")
    await orchestrator.ensure_gc_schedule(tenant)
    progress.step(f"schedule gc/{tenant} (daily retention and garbage collection) in place")
    await orchestrator.ensure_escalation_schedule()
    await start_retraining_as(
        Principal.system(tenant, "demo"),
        orchestrator,
        RetrainingInput(
            tenant_id=tenant, model_name=model, trigger="bootstrap", reason="first model", timing=size.timing
        ),
    )
    await _wait_phase(orchestrator, tenant, progress, None)
    first = await _approve(services, orchestrator, tenant, "first model for the agronomists")
    made_by = ", trained by the built-in trainer, built-in format" if byo else ""
    progress.step(f"{DEMO_MANAGER} approved: {model} v1 is CHAMPION ({first.version_id}){made_by}")
    season = backfill_season(services, tenant, model, snapshot.id, scenario.history_days, snapshot.window_end)
    progress.step(f"drift history: {len(season)} windows of the past season scanned against v1's baseline")
    if byo:
        _define_tenant_model(services, admin, tenant, model, progress)

    drift_at: datetime = utcnow()
    token = _service_token(services, admin, tenant)
    transport = HttpTransport(f"http://{cfg.serve_host}:{cfg.serve_port}", token)
    progress.step(f"{DEMO_SERVICE} sends forecasts and outcomes with its API token (admin of {tenant})")
    driver = TrafficDriver(scenario, transport, key_id, private_pem, DriftSpec(at=drift_at))
    progress.step(
        f"drift injected at {drift_at.isoformat(timespec='seconds')}: drier, hotter season; nitrogen response changed"
    )
    traffic = TrafficLedger()
    summary = await asyncio.to_thread(driver.round, size.drift_rows)
    served = traffic.add("after the drift", driver.last_roles)
    progress.step(
        f"served {served:,} live predictions ({role_split(driver.last_roles)}), outcomes arrived: "
        f"accepted {summary.accepted}, rejected {summary.rejected}"
    )

    await orchestrator.trigger_drift_scan(tenant)
    progress.step(f"triggered schedule drift-scan/{tenant}")
    for _ in range(240):
        reports = services.drift_reports.list_reports(admin, tenant, limit=1)
        if reports and reports[0].created_at_time() >= drift_at:
            break
        await asyncio.sleep(0.5)
    report = services.drift_reports.list_reports(admin, tenant, limit=1)[0]
    alerts = [f["feature"] for f in report.report["result"]["features"] if f["status"] == "alert"]
    progress.step(f"drift report {report.id}: level {report.level}; alerts on {', '.join(alerts)}; signed")
    byo_lines: dict[str, str] = {}

    def describe(version_id: str) -> None:
        byo_lines.update(
            _describe_candidate(services, services.registry.get_version(admin, version_id), progress)
        )

    before_rollout = dict(driver.roles)
    status = await _wait_phase(
        orchestrator,
        tenant,
        progress,
        driver,
        previous_version=first.version_id,
        on_validated=describe if byo else None,
    )
    assert status.guard is not None
    during = {role: count - before_rollout.get(role, 0) for role, count in driver.roles.items()}
    served = traffic.add("during shadow and canary", during)
    progress.step(f"served {served:,} predictions during shadow and canary ({role_split(during)})")
    result = await _approve(services, orchestrator, tenant, "canary significantly better")
    served_as = f" ({byo_lines['format']}, the tenant's model)" if byo else ""
    progress.step(
        f"{DEMO_MANAGER} approved: {model} v{status.version_number}{served_as} is CHAMPION; v1 DEPRECATED"
    )
    # The new champion at work, so the executive view has forecasts to credit it with.
    await asyncio.to_thread(driver.round, 2 * size.round_rows)
    served = traffic.add("after the promotion", driver.last_roles)
    through = " through onnxruntime" if byo and byo_lines["format"] == "onnx" else ""
    progress.step(
        f"v{status.version_number} served {served:,} forecasts{through} ({role_split(driver.last_roles)}); "
        "their outcomes arrived"
    )
    await scan_after_promotion(services, orchestrator, admin, tenant, utcnow())
    transport.close()
    await orchestrator.close()

    verification = verify_all(services, [tenant])
    versions = services.registry.list_versions(admin, tenant, model)
    guard = status.guard
    latency = (report.created_at_time() - drift_at).total_seconds()
    summary_out: dict[str, object] = {
        "tenant": tenant,
        "drift injected": drift_at.isoformat(timespec="seconds"),
        "drift detected": f"{latency:.1f} s later, report {report.id} ({report.level}: {', '.join(alerts)})",
        "canary": decision_text(guard),
        "outcome": f"{result.outcome}; approved by {DEMO_MANAGER}",
        **(
            {
                "champion": f"v{status.version_number}, the tenant's own model, format {byo_lines['format']}"
                + (", served through onnxruntime" if byo_lines["format"] == "onnx" else "")
                + "; v1 was the built-in model",
                "trainer": byo_lines["trainer"],
                "code": byo_lines["code"],
                "lineage": f"`evolution versions -t {tenant} --lineage`; `evolution verify --reproduce {tenant} "
                f"{model} {status.version_number}` re-runs the trainer and compares digests",
            }
            if byo
            else {}
        ),
        "versions": ", ".join(f"v{v.number} {v.state.value}" for v in versions),
        **traffic.summary(),
        "audit entries": f"{len(services.registry.audit_trail(admin, tenant))}, chain intact",
        "verify": f"{len(verification.checks)} checks, {len(verification.failures)} failed",
    }
    services.close()
    if not verification.ok:
        raise EvolutionError(f"verification failed: {[c.detail for c in verification.failures]}")
    return summary_out


@friendly_errors
def demo(
    fast: Annotated[
        bool, typer.Option("--fast", help="Smaller data and quicker looks (under 3 minutes).")
    ] = False,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the services up afterwards.")
    ] = False,
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard", help="Do not start the dashboard.")] = False,
    byo: Annotated[
        bool,
        typer.Option(
            "--byo",
            help="Bring your own model: after the built-in first champion, the tenant's model is defined with "
            f"the example trainer of {EXAMPLE} (scikit-learn pipeline -> ONNX, run as a command under the "
            "training contract of docs/bring-your-own-model.md), so the retrained champion is the tenant's ONNX "
            "model. Needs scikit-learn and skl2onnx in this Python (pip install 'controlled-evolution\\[examples]').",
        ),
    ] = False,
) -> None:
    """Seed a tenant, inject drift, and drive the whole lifecycle to a new CHAMPION on the real services."""
    cfg = settings(create_home=True)
    if byo:
        check_example()  # before any service starts: say what is missing now, not after the drift
    progress = Progress()
    group = ProcessGroup(cfg, dashboard=not no_dashboard)
    # Ctrl-C, and SIGTERM, stop the services even when a shell started the demo in the background (which would
    # otherwise leave SIGINT ignored) or a supervisor stops it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        for child in group.start():
            progress.step(f"{child.name:<10} up at {child.address}")
        result = asyncio.run(run_demo(cfg, FAST if fast else FULL, progress, byo=byo))
        typer.echo("\nsummary")
        for key, value in result.items():
            typer.echo(f"  {key:<15} {value}")
        typer.echo(f"\nstate kept in {cfg.home.resolve()}; `evolution up` shows it again (dashboard, API)")
        if keep_running:
            typer.echo("services keep running; Ctrl-C stops them")
            while group.alive():
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        group.stop()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

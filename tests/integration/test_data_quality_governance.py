"""Issue 16 around the data-quality checks: floors as audited tenant settings, the signed report covering the checks,
older baselines given their quality data once (audited) or saying plainly they lack it, and `snapshot accept`."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolution.cli.main import app
from evolution.data.sources import records_to_events
from evolution.demo.scenario import Scenario
from evolution.demo.synthetic import TARGET, SensorFaults, generate_rows, inject_faults
from evolution.drift.reports import DriftReportView
from evolution.errors import IntegrityViolation, InvalidInput, PermissionDenied
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from evolution.stats.drift_models import Baseline, DriftConfig
from evolution.timeutil import utcnow
from tests.support.models import install_model
from tests.support.scenario import seed_tenant

ADMIN = Principal.for_tenant("ada", Role.ADMIN, "acme")
MANAGER = Principal.for_tenant("max", Role.MANAGER, "acme")
FAULTS = SensorFaults(stuck={"soil_ph": 6.5}, renamed={"crop": {"maize": "corn"}})


@pytest.fixture
def services(tmp_path: Path) -> Services:
    svc = build_services(Settings(home=tmp_path / "home"))
    seeded = seed_tenant(svc, Scenario(tenant_id="acme", history_rows=400))
    svc.snapshots.seal(ADMIN, "acme", utcnow() - timedelta(minutes=30))
    install_model(svc, "acme", tmp_path, ModelState.CHAMPION)
    svc.baselines.reset(ADMIN, "acme", "yield", "the healthy history is the norm", svc.keyring)
    rows = inject_faults(generate_rows(300, 11, utcnow() - timedelta(minutes=20), period_s=2), FAULTS)
    events = records_to_events(
        rows, "acme", seeded.key_id, seeded.private_pem, target=TARGET, request_prefix="f"
    )
    svc.events.ingest_objects(ADMIN, "acme", list(events), "test")
    return svc


def faulty_window_report(services: Services) -> DriftReportView:
    snapshot = services.snapshots.seal(ADMIN, "acme", utcnow())
    scanned = services.drift_scanner.scan("acme", "yield", snapshot.id)
    assert set(scanned.quality_alerts) >= {"soil_ph: stuck", "crop: unseen_categories"}
    report = services.drift_reports.list_reports(ADMIN, "acme")[0]
    assert report.id == scanned.report_id
    return report


# ------------------------------------------------------------------------------------------- the signed report
def test_the_report_signature_covers_every_data_quality_field(services: Services) -> None:
    report = faulty_window_report(services)
    services.drift_reports.verify(report, services.keyring)  # as written: verifies
    alert = report.report["data_quality"]["alerts"][0]
    assert {"feature", "reason_code", "k", "m", "p_value", "p_adjusted", "description"} <= set(alert)
    checks = report.report["result"]["quality"]["checks"]
    fired = next(i for i, c in enumerate(checks) if c["status"] == "alert")
    tampers = {
        "summary k": lambda doc: doc["data_quality"]["alerts"][0].__setitem__("k", alert["k"] - 1),
        "summary p": lambda doc: doc["data_quality"]["alerts"][0].__setitem__("p_adjusted", 0.5),
        "summary level": lambda doc: doc["data_quality"].__setitem__("level", "ok"),
        "check status": lambda doc: doc["result"]["quality"]["checks"][fired].__setitem__("status", "ok"),
        "floor": lambda doc: doc["result"]["quality"]["config"].__setitem__("stuck_min_share", 1.0),
    }
    for name, tamper in tampers.items():
        forged = copy.deepcopy(report.report)
        tamper(forged)
        with pytest.raises(IntegrityViolation):
            services.drift_reports.verify(report.model_copy(update={"report": forged}), services.keyring)
            pytest.fail(f"tampering with the {name} was not noticed")


def test_a_data_quality_alert_alone_does_not_raise_the_drift_level_but_holds_the_window(
    services: Services,
) -> None:
    report = faulty_window_report(services)
    assert report.report["data_quality"]["level"] == "alert"
    snapshot_id = report.report["window"]["snapshot_id"]
    window = services.snapshot_holds.window(ADMIN, "acme", snapshot_id)
    assert window is not None and window.held and window.report_id == report.id
    assert "soil_ph stuck on one value" in window.checks


def test_by_default_out_of_range_alerts_and_notifies_but_does_not_hold_the_window(services: Services) -> None:
    """A real shift beyond the historical range trips out_of_range too: it holds only where the tenant says so."""
    services.tenants.configure_tenant(ADMIN, "acme", {"quality_hold_checks": ["out_of_range"]})
    report = faulty_window_report(services)  # only stuck and unseen categories fire here: nothing held
    assert services.snapshot_holds.window(ADMIN, "acme", report.report["window"]["snapshot_id"]) is None
    notified = [n for n in services.notifier.recent("acme") if n["kind"] == "data_quality.alert"]  # type: ignore[attr-defined]
    assert len(notified) == 1 and "does not start a retraining" in notified[0]["subject"]


# ------------------------------------------------------------------------------------------- snapshot accept
def test_snapshot_accept_is_admin_only_needs_a_reason_and_is_audited_once(services: Services) -> None:
    snapshot_id = faulty_window_report(services).report["window"]["snapshot_id"]
    with pytest.raises(PermissionDenied):
        services.snapshot_holds.accept(MANAGER, "acme", snapshot_id, "looks fine to me")
    with pytest.raises(InvalidInput, match="needs a reason"):
        services.snapshot_holds.accept(ADMIN, "acme", snapshot_id, "  ")
    accepted = services.snapshot_holds.accept(ADMIN, "acme", snapshot_id, "probe recalibrated")
    again = services.snapshot_holds.accept(ADMIN, "acme", snapshot_id, "probe recalibrated")
    assert not accepted.held and accepted.accepted_by == "ada" and again.accepted_at == accepted.accepted_at
    assert services.snapshot_holds.waiting_on(ADMIN, "acme", [snapshot_id, None]) == []
    trail = [e for e in services.registry.audit_trail(ADMIN, "acme") if e.action == "snapshot.accepted"]
    assert len(trail) == 1 and trail[0].details["reason"] == "probe recalibrated"


def test_accepting_a_window_that_is_not_held_is_refused_plainly(services: Services) -> None:
    healthy = services.snapshots.list_snapshots(ADMIN, "acme")[0]
    with pytest.raises(InvalidInput, match="is not held"):
        services.snapshot_holds.accept(ADMIN, "acme", healthy.id, "why not")


# ------------------------------------------------------------------------------------------- old baselines
def _without_quality(baseline: Baseline) -> Baseline:
    return baseline.model_copy(
        update={"features": [f.model_copy(update={"quality": None}) for f in baseline.features]}
    )


def test_a_baseline_made_before_the_checks_gets_its_quality_data_once_from_its_snapshot_audited(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion = services.registry.current(ADMIN, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None
    found = services.baselines.effective_source("acme", "yield", champion.id, services.keyring)
    assert found is not None
    fresh, source = found
    old = _without_quality(fresh)
    monkeypatch.setattr(services.baselines, "effective_source", lambda *_a: (old, source))

    report = faulty_window_report(services)  # the scan meets the old baseline and completes it
    assert report.report["data_quality"]["level"] == "alert"
    completed = services.baseline_quality.complete("acme", "yield", old, source)  # read back, not recomputed
    assert [f.quality for f in completed.features] == [f.quality for f in fresh.features]
    trail = [
        e for e in services.registry.audit_trail(ADMIN, "acme") if e.action.startswith("baseline.quality")
    ]
    assert [e.action for e in trail] == ["baseline.quality_computed"]
    assert trail[0].details["snapshot_id"] == source and len(trail[0].details["features"]) == len(
        fresh.features
    )


def test_a_baseline_whose_snapshot_is_unknown_says_plainly_it_lacks_quality_data(services: Services) -> None:
    champion = services.registry.current(ADMIN, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None
    found = services.baselines.effective_source("acme", "yield", champion.id, services.keyring)
    assert found is not None
    old = _without_quality(found[0])
    for _ in range(2):  # recorded once, not retried
        assert services.baseline_quality.complete("acme", "yield", old, None) == old
    trail = [
        e for e in services.registry.audit_trail(ADMIN, "acme") if e.action.startswith("baseline.quality")
    ]
    assert [e.action for e in trail] == ["baseline.quality_unavailable"]
    assert "no snapshot" in trail[0].details["reason"]


# ------------------------------------------------------------------------------------------- tenant settings
def test_quality_floors_are_tenant_settings_audited_and_used_by_the_scan(services: Services) -> None:
    services.tenants.configure_tenant(ADMIN, "acme", {"quality": {"stuck_min_share": 0.9}})
    services.tenants.configure_tenant(ADMIN, "acme", {"quality": {"unseen_min_share": 0.2}})
    settings = services.tenants.tenant_settings(ADMIN, "acme")
    config = settings.drift_config_over(DriftConfig())
    assert (config.quality.stuck_min_share, config.quality.unseen_min_share) == (0.9, 0.2)
    last = services.registry.audit_trail(ADMIN, "acme")[-1]
    assert last.action == "tenant.configured" and last.actor == "ada"
    assert last.details["before"]["quality"]["unseen_min_share"] is None
    assert last.details["after"]["quality"] == {**last.details["after"]["quality"], "stuck_min_share": 0.9}
    report = faulty_window_report(services)
    assert report.report["result"]["quality"]["config"]["stuck_min_share"] == 0.9
    with pytest.raises(PermissionDenied):
        services.tenants.configure_tenant(MANAGER, "acme", {"quality": {"stuck_min_share": 0.99}})


def test_tenant_configure_sets_floors_and_refuses_bad_values_with_a_clear_error(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"EVOLUTION_HOME": str(tmp_path / "home")}
    assert runner.invoke(app, ["tenant", "create", "acme"], env=env).exit_code == 0
    ok = runner.invoke(
        app,
        ["tenant", "configure", "acme", "--stuck-min-share", "0.9", "--quality-min-values", "80"],
        env=env,
    )
    assert ok.exit_code == 0, ok.output
    assert '"stuck_min_share": 0.9' in ok.output and '"min_values": 80' in ok.output
    for option, value, words in [
        ("--stuck-min-share", "0.4", "quality.stuck_min_share: Input should be greater than 0.5 (got 0.4)"),
        ("--unseen-min-share", "1.5", "quality.unseen_min_share: Input should be less than or equal to 1"),
        ("--quality-min-values", "1", "quality.min_values: Input should be greater than or equal to 2"),
    ]:
        refused = runner.invoke(app, ["tenant", "configure", "acme", option, value], env=env)
        assert refused.exit_code != 0 and words in refused.output, refused.output
    held = runner.invoke(
        app, ["tenant", "configure", "acme", "--hold-on", "stuck", "--hold-on", "out_of_range"], env=env
    )
    assert held.exit_code == 0 and '"out_of_range"' in held.output, held.output
    unknown = runner.invoke(app, ["tenant", "configure", "acme", "--hold-on", "sensor"], env=env)
    assert unknown.exit_code != 0 and "quality_hold_checks.0: Input should be" in unknown.output, (
        unknown.output
    )
    shown = build_services(Settings(home=tmp_path / "home"))
    try:
        settings = shown.tenants.tenant_settings(ADMIN, "acme")
        assert settings.quality.stuck_min_share == 0.9 and settings.quality.unseen_min_share is None
        assert settings.quality_hold_checks == ["stuck", "out_of_range"]
    finally:
        shown.close()

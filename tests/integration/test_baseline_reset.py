"""An admin's baseline reset: signed, audited, used by the next scans, refused to others, tamper-evident."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolution.demo.scenario import Scenario
from evolution.errors import IntegrityViolation, InvalidInput, PermissionDenied
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from tests.support.models import install_model
from tests.support.scenario import seed_tenant

ADMIN = Principal.for_tenant("ada", Role.ADMIN, "acme")


@pytest.fixture
def services(tmp_path: Path) -> Services:
    svc = build_services(Settings(home=tmp_path / "home"))
    seed_tenant(svc, Scenario(tenant_id="acme", history_rows=400))
    svc.snapshots.seal(ADMIN, "acme", utcnow())
    install_model(svc, "acme", tmp_path, ModelState.CHAMPION)
    return svc


def test_reset_is_signed_audited_and_used_by_the_next_scan(services: Services) -> None:
    override = services.baselines.reset(
        ADMIN, "acme", "yield", "new irrigation regime is the norm", services.keyring
    )
    champion = services.registry.current(ADMIN, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None and override.champion_version_id == champion.id
    baseline = services.baselines.effective("acme", "yield", champion.id, services.keyring)
    assert baseline is not None and {f.name for f in baseline.features} >= {"rain_mm", "crop"}
    last = services.registry.audit_trail(ADMIN, "acme")[-1]
    assert last.actor == "ada" and last.action == "tenant.configured"
    assert (
        last.details["after"]["baseline_overrides"]["yield"]["reason"] == "new irrigation regime is the norm"
    )

    scanner = services.drift_scanner
    snapshot = services.snapshots.latest(ADMIN, "acme")
    assert snapshot is not None
    result = scanner.scan("acme", "yield", snapshot.id)  # the window the baseline was taken from: no drift
    assert result.level == "ok" and result.alerts == []


def test_only_admins_reset_and_a_reason_is_required(services: Services) -> None:
    manager = Principal.for_tenant("maria", Role.MANAGER, "acme")
    with pytest.raises(PermissionDenied):
        services.baselines.reset(manager, "acme", "yield", "because", services.keyring)
    with pytest.raises(InvalidInput, match="reason"):
        services.baselines.reset(ADMIN, "acme", "yield", "  ", services.keyring)


def test_a_tampered_reset_baseline_is_refused(services: Services) -> None:
    override = services.baselines.reset(ADMIN, "acme", "yield", "accepted", services.keyring)
    path = next((services.settings.artifacts_dir / "acme").rglob(override.digest))
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b'"n":', b'"n": ', 1))
    with pytest.raises(IntegrityViolation):
        services.baselines.effective("acme", "yield", override.champion_version_id, services.keyring)

"""The dashboard's first page renders a seeded tenant's versions and audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from evolution.security import Principal, Role
from evolution.settings import Settings
from evolution.wiring import build_services

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EVOLUTION_HOME", str(tmp_path))
    monkeypatch.setenv("EVOLUTION_DASHBOARD_METRICS_PORT", "0")
    return tmp_path


def test_empty_state_tells_the_user_how_to_start(home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "make demo" in at.info[0].value


def test_tenant_versions_and_intact_audit_chain_are_shown(home: Path) -> None:
    services = build_services(Settings(home=home))
    admin = Principal.for_tenant("root", Role.ADMIN, "acme")
    services.registry.ensure_tenant(admin, "acme")
    services.registry.register_version(Principal.system("acme"), "acme", "yield", request_id="r1")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox[0].value == "acme"
    assert "intact (2 entries)" in at.caption[0].value
    versions = at.dataframe[0].value
    assert list(versions["state"]) == ["DRAFT"]

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from evolution.governance.users import UserAccess
from evolution.security import Principal, Role
from tests.workflows.conftest import orchestrator, services, task_queue, temporal_env, worker  # noqa: F401

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
ROOT = Principal.for_tenant("root", Role.ADMIN, "*")


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, services) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The dashboard reads the same state directory (and workflow engine) as the test's services."""
    monkeypatch.setenv("EVOLUTION_HOME", str(services.settings.home))
    monkeypatch.setenv("EVOLUTION_DASHBOARD_METRICS_PORT", "0")


@pytest.fixture
def app(dashboard_env: None, services) -> Callable[..., AppTest]:  # type: ignore[no-untyped-def]  # noqa: F811
    """The dashboard, signed in as a real user holding ``role`` on ``tenant`` (or signed out)."""

    def make(role: str | None = None, tenant: str = "acme", username: str = "pat") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        if role is not None:
            services.users.add_user(ROOT, username, "a long enough password", role, [tenant])
            at.session_state["signed_in"] = UserAccess(username=username, roles={tenant: Role(role)})
            at.session_state["tenant"] = tenant
        return at

    return make

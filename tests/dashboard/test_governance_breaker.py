"""An open circuit breaker shows on the Governance page, with why and how to reset it; a closed one shows nothing."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from evolution.platform.wiring import Services
from evolution.security import Principal
from tests.dashboard.conftest import ROOT

BANNER = "**Retraining disabled by the circuit breaker.**"


def errors_on_governance(app: Callable[..., AppTest], username: str) -> list[str]:
    at = app("viewer", username=username)
    at.run()
    at.switch_page("views/governance.py").run()
    assert not at.exception, at.exception
    return [e.value for e in at.error]


def test_the_governance_page_shows_an_open_breaker_and_how_to_reset_it(
    app: Callable[..., AppTest], services: Services
) -> None:
    services.tenants.ensure_tenant(ROOT, "acme")
    assert not any(BANNER in e for e in errors_on_governance(app, "before"))
    for run in range(3):
        services.breaker.record(Principal.system("acme"), "acme", f"run-{run}", "failed", "trainer crashed")
    (banner,) = [e for e in errors_on_governance(app, "after") if BANNER in e]
    assert "after 3 consecutive failed retrainings; last: trainer crashed" in banner
    assert "evolution tenant breaker reset acme --reason" in banner

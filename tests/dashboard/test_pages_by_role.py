"""Every page for every role: what each role sees, and that a signed-out visitor sees only the sign-in page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from evolution.demo.scenario import Scenario
from evolution.demo.season import season_windows
from evolution.governance.users import UserService
from evolution.lifecycle import ModelState
from evolution.platform.wiring import Services
from evolution.stats.drift import build_baseline, scan
from evolution.timeutil import utcnow
from evolution.training.explain import ESTIMATE_BACKGROUND_ROWS, ESTIMATE_MAX_ROWS, ESTIMATE_SAMPLES
from tests.dashboard.conftest import ROOT
from tests.dashboard.layout import _elements, layout_problems
from tests.support.models import install_model, install_onnx_model
from tests.support.scenario import seed_tenant

ROLES = ["viewer", "manager", "admin"]
PAGES = ["governance.py", "drift.py", "explainability.py", "executive.py"]


@pytest.fixture
def tenant(services: Services, tmp_path: Path) -> str:
    """A champion, a candidate in canary, and a season of drift reports over the tenant's history (written
    directly: the installed models carry no drift baseline)."""
    scenario = Scenario(tenant_id="acme", history_rows=300)
    seed_tenant(services, scenario)
    snapshot = services.snapshots.seal(ROOT, "acme", utcnow())
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    install_model(services, "acme", tmp_path, ModelState.CANARY, seed=2)
    rows = services.snapshots.load_rows(snapshot, services.keyring)
    baseline = build_baseline(columns(rows))
    end = snapshot.window_end
    windows = season_windows(end - timedelta(days=scenario.history_days), end, count=4)
    for n, (start, stop) in enumerate(windows):
        services.drift_reports.write(
            ROOT, tenant_id="acme", model_name="yield", baseline_version_id="mv-none", baseline_model_hash=None,
            snapshot_id=snapshot.id, window_start=start, window_end=stop,
            result=scan(baseline, columns(rows[n * 75 : (n + 1) * 75])),
        )  # fmt: skip
    return "acme"


def columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {
        name: np.array(
            [r.get(name) for r in rows], dtype=object if name in ("crop", "soil_texture") else float
        )
        for name in ("rain_mm", "temp_mean_c", "crop", "soil_texture")
    }


def buttons(at: AppTest) -> set[str]:
    return {b.label for b in at.button}


def test_signed_out_visitors_see_only_the_sign_in_form(app: Callable[..., AppTest]) -> None:
    at = app().run()
    assert not at.exception
    assert at.title[0].value == "Controlled Evolution"
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    assert not [b for b in at.button if b.label == "Sign out"]


def test_sign_in_with_a_wrong_then_the_right_password(
    app: Callable[..., AppTest], services: Services, tenant: str
) -> None:
    UserService(services.factory).add_user(ROOT, "maria", "a long enough password", "manager", ["acme"])
    at = app().run()
    at.text_input[0].input("maria")
    at.text_input[1].input("wrong password!!")
    at.button[0].click().run()
    assert "invalid username or password" in at.error[0].value
    at.text_input[1].input("a long enough password")
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["signed_in"].username == "maria"
    at.switch_page("views/governance.py").run()  # a browser lands on the default page of the new navigation
    assert at.title[0].value == "Governance · acme"


@pytest.mark.parametrize("role", ROLES)
def test_governance_shows_history_to_all_and_admin_tools_to_admins(
    app: Callable[..., AppTest], tenant: str, role: str
) -> None:
    at = app(role).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Governance · acme"
    assert "audit chain intact" in at.success[0].value
    versions = at.dataframe[0].value
    assert list(versions["state"]) == ["CHAMPION", "CANARY"] and "maria (manager)" in list(
        versions["moved by"]
    )
    admin_tools = {"Force rollback to the previous champion", "Reset the drift baseline to the latest window"}
    assert (admin_tools <= buttons(at)) == (role == "admin")
    assert "Sign out" in buttons(at)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_for_every_role_or_is_hidden(
    app: Callable[..., AppTest], tenant: str, role: str, page: str
) -> None:
    at = app(role)
    at.run()
    visible = page != "executive.py" or role in ("manager", "admin")
    if not visible:
        # The navigation does not offer the page at all.
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(f"views/{page}")
        return
    at.switch_page(f"views/{page}")
    at.run()
    assert not at.exception, at.exception
    assert at.title and "acme" in at.title[0].value
    assert layout_problems(at) == []
    if page == "drift.py":  # the chart checks above are not vacuous
        assert len(_elements(at, "vega_lite_chart")) == 3  # PSI, KL, a distribution


def test_explainability_explains_the_champion_and_the_candidate(
    app: Callable[..., AppTest], tenant: str
) -> None:
    at = app("viewer")
    at.run()
    at.switch_page("views/explainability.py").run()
    assert not at.exception, at.exception
    models = at.radio(key="explain_which")
    assert models.options == ["champion v1", "candidate v2"]
    models.set_value("candidate v2").run()
    assert not at.exception
    assert any(m.value.startswith("Forecast **") for m in at.markdown)


def test_explainability_labels_an_onnx_candidates_values_as_an_estimate_with_its_sample_size(
    app: Callable[..., AppTest], services: Services, tmp_path: Path
) -> None:
    seed_tenant(services, Scenario(tenant_id="acme", history_rows=300))
    services.snapshots.seal(ROOT, "acme", utcnow())
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    install_onnx_model(services, "acme", tmp_path, ModelState.CANARY, seed=2)
    at = app("viewer")
    at.run()
    at.switch_page("views/explainability.py").run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    assert any(c.startswith("champion v1 (builtin): exact TreeSHAP of") for c in captions), captions
    estimate = (
        f"candidate v2 (onnx): estimate (shap.SamplingExplainer): {ESTIMATE_MAX_ROWS} rows explained, "
        f"{ESTIMATE_SAMPLES} samples per feature each, against a background sample of {ESTIMATE_BACKGROUND_ROWS} rows"
    )
    assert estimate in captions, captions
    at.radio(key="explain_which").set_value("candidate v2").run()
    assert not at.exception, at.exception
    assert any(m.value.endswith("(estimated contributions)") for m in at.markdown)


def test_a_revoked_role_takes_effect_on_the_next_page_run(
    app: Callable[..., AppTest], services: Services, tenant: str
) -> None:
    at = app("admin", username="ada").run()
    assert "Force rollback to the previous champion" in buttons(at)
    services.users.grant(ROOT, "ada", "viewer", "acme")
    at.run()
    assert not at.exception
    assert "Force rollback to the previous champion" not in buttons(at)
    services.users.disable_user(ROOT, "ada")
    at.run()
    assert "signed_in" not in at.session_state

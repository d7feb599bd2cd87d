"""A real browser (Debian's headless Chromium) on a running dashboard: sign in, open every page, approve a waiting
candidate, and save screenshots; any Streamlit exception on a page fails the test."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.e2e.conftest import EVOLUTION, seed_tenant_with_cli, services_up
from tests.e2e.conftest import cli as run

CHROMIUM = os.environ.get("EVOLUTION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "correct horse battery staple"
TIMEOUT_MS = 60_000


@pytest.fixture
def stack(cli_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """`evolution up`, a tenant with history, a manager, and a retraining waiting for approval."""
    with services_up(cli_env):
        seed_tenant_with_cli(cli_env, tmp_path)
        added = subprocess.run(
            [EVOLUTION, "users", "add", "maria", "--role", "manager", "--tenant", "acme", "--password-stdin"],
            env=cli_env,
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert added.returncode == 0, added.stderr
        assert run(cli_env, "retrain", "-t", "acme", "-m", "yield", "--no-wait").returncode == 0
        for _ in range(240):
            if "waiting for approval" in run(cli_env, "status", "-t", "acme").stdout:
                break
            time.sleep(0.5)
        yield cli_env


def no_streamlit_exception(page: Page, where: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()}"


def open_page(page: Page, title: str, heading: str, shots: Path) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=heading).wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)  # let the page finish its run
    no_streamlit_exception(page, title)
    page.screenshot(path=str(shots / f"{title.lower()}.png"), full_page=True)


def test_a_manager_signs_in_browses_every_page_and_approves_in_a_real_browser(
    stack: dict[str, str], tmp_path: Path
) -> None:
    shots = Path(os.environ.get("EVOLUTION_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{stack['EVOLUTION_DASHBOARD_PORT']}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, timeout=TIMEOUT_MS)
        page.get_by_role("textbox", name="Username").fill("maria")
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Governance · acme").wait_for(timeout=TIMEOUT_MS)
        page.get_by_text("waits for a manager's decision").wait_for(timeout=TIMEOUT_MS)
        no_streamlit_exception(page, "Governance")
        page.screenshot(path=str(shots / "governance.png"), full_page=True)

        for title in ("Drift", "Explainability", "Executive"):
            open_page(page, title, f"{title} · acme", shots)

        open_page(page, "Governance", "Governance · acme", shots)
        page.get_by_role("textbox", name="Reason (recorded in the audit log)").fill("first model looks right")
        page.get_by_role("button", name="Approve").click()
        # The success message, not the audit table's new "CANARY → CHAMPION" row (that one may render first).
        page.get_by_text("approved by maria → CHAMPION").wait_for(timeout=TIMEOUT_MS)
        no_streamlit_exception(page, "Governance after Approve")
        page.screenshot(path=str(shots / "approved.png"), full_page=True)
        browser.close()

    assert "CHAMPION" in run(stack, "versions", "-t", "acme").stdout
    audit = run(stack, "audit", "-t", "acme").stdout
    assert "maria" in audit and "CANARY->CHAMPION" in audit
    assert sorted(p.name for p in shots.iterdir()) == [
        "approved.png",
        "drift.png",
        "executive.png",
        "explainability.png",
        "governance.png",
    ]

"""A real browser (Debian's headless Chromium) on a running dashboard: a manager approves a waiting candidate, then a
viewer, a manager and an admin each open every page they may see; every page is saved as a full-page screenshot.

A page fails on a Streamlit exception, on the Deploy button or the developer menu, on a chart axis without a title
and on a time axis ticking in milliseconds (".863"), all read from the page itself (charts render as SVG). Tables
draw on a canvas, so a cut column header or value cannot be read back here: tests/dashboard/layout.py checks the
widths each table asks for against its headers and values, on every page for every role.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from evolution.demo.synthetic import generate_rows
from evolution.timeutil import utcnow
from tests.e2e.conftest import EVOLUTION, seed_tenant_with_cli, services_up
from tests.e2e.conftest import cli as run

CHROMIUM = os.environ.get("EVOLUTION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "correct horse battery staple"
TIMEOUT_MS = 60_000
WIDTH = 1400
USERS = {"ana": "viewer", "maria": "manager", "ada": "admin"}
PAGES = {
    "viewer": ["Governance", "Drift", "Explainability"],
    "manager": ["Governance", "Drift", "Explainability", "Executive"],
    "admin": ["Governance", "Drift", "Explainability", "Executive"],
}
MILLISECOND_TICK = re.compile(r"^\.\d{3}$")


def add_user(env: dict[str, str], name: str, role: str) -> None:
    added = subprocess.run(
        [EVOLUTION, "users", "add", name, "--role", role, "--tenant", "acme", "--password-stdin"],
        env=env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr


@pytest.fixture
def stack(cli_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """`evolution up`, a tenant with history, a user of each role, and a retraining waiting for approval."""
    with services_up(cli_env):
        seed_tenant_with_cli(cli_env, tmp_path)
        for name, role in USERS.items():
            add_user(cli_env, name, role)
        assert run(cli_env, "retrain", "-t", "acme", "-m", "yield", "--no-wait").returncode == 0
        for _ in range(240):
            if "waiting for approval" in run(cli_env, "status", "-t", "acme").stdout:
                break
            time.sleep(0.5)
        yield cli_env


def a_window_scanned(env: dict[str, str], work: Path) -> None:
    """Fresh events sealed and scanned against the new champion: the Drift page has a report to draw."""
    # After the last sealed window (the retraining sealed one moments ago: older events would be refused), and in
    # the past by the time the scan seals (the CLI takes seconds to start).
    records = generate_rows(300, seed=12, start=utcnow() + timedelta(seconds=0.5), period_s=0.001)
    window = work / "window.jsonl"
    window.write_text("\n".join(json.dumps(r) for r in records))
    assert run(env, "ingest", str(window), "-t", "acme", "--sign-with", "sensors").returncode == 0
    scanned = run(env, "drift", "scan", "-t", "acme", "-m", "yield", "--no-retrain")
    assert scanned.returncode == 0, scanned.stderr


def sign_in(browser: Browser, url: str, username: str) -> Page:
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    page.goto(url, timeout=TIMEOUT_MS)
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Governance · acme").wait_for(timeout=TIMEOUT_MS)
    return page


def page_problems(page: Page, where: str) -> list[str]:
    problems = []
    errors = page.locator('[data-testid="stException"]')
    if errors.count():
        problems.append(f"{where}: {errors.first.inner_text()}")
    labels = [b.inner_text() for b in page.get_by_role("button").all()]
    if (
        any("Deploy" in label for label in labels)
        or page.locator('[data-testid="stMainMenu"], [data-testid="stAppDeployButton"]').count()
    ):
        problems.append(f"{where}: Streamlit's Deploy button or developer menu is showing")
    for n, table in enumerate(page.locator('[data-testid="stTable"]').all()):
        if table.evaluate("t => t.scrollWidth > t.clientWidth + 1"):
            problems.append(f"{where}, wrapped table {n + 1}: wider than the page")
    for n, chart in enumerate(page.locator('[data-testid="stVegaLiteChart"] svg.marks').all()):
        axes = chart.evaluate(
            """svg => [...svg.querySelectorAll('g.role-axis')].map(axis => ({
                title: [...axis.querySelectorAll('g.role-axis-title text')].map(t => t.textContent).join(' '),
                labels: [...axis.querySelectorAll('g.role-axis-label text')].map(t => t.textContent),
            }))"""
        )
        axes = [a for a in axes if a["labels"]]  # a grid is drawn as an axis of its own, without labels
        if not axes:
            problems.append(f"{where}, chart {n + 1}: no axis drawn")
        for axis in axes:
            if not axis["title"].strip():
                problems.append(
                    f"{where}, chart {n + 1}: an axis without a title (labels {axis['labels'][:3]})"
                )
            if any(MILLISECOND_TICK.match(label) for label in axis["labels"]):
                problems.append(f"{where}, chart {n + 1}: a time axis ticking in milliseconds")
    return problems


def show_whole_page(page: Page) -> None:
    """Make the window as tall as the page (Streamlit scrolls inside its own container, and draws a chart only once
    it is in view), then wait until every chart has drawn."""
    page.wait_for_function(  # Streamlit marks its root with the script's run state
        "() => document.querySelector('[data-testid=stApp]')?.dataset.testScriptState === 'notRunning'",
        timeout=TIMEOUT_MS,
    )
    height, settled = 0, 0
    for _ in range(60):  # until the page's height holds for a second: the script's run has finished
        page.wait_for_timeout(500)
        now = page.evaluate(
            "() => Math.max(1000, ...[...document.querySelectorAll('*')].map(e => e.scrollHeight))"
        )
        settled = settled + 1 if now == height else 0
        height = now
        if settled == 3:
            break
    page.set_viewport_size({"width": WIDTH, "height": int(height) + 40})
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stVegaLiteChart]')]"
        ".every(c => c.querySelector('svg.marks g.role-axis'))",
        timeout=TIMEOUT_MS,
    )
    page.wait_for_timeout(500)


def check_and_shoot(page: Page, where: str, path: Path) -> list[str]:
    show_whole_page(page)
    problems = page_problems(page, where)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": WIDTH, "height": 1000})
    return problems


def open_page(page: Page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=f"{title} · acme").wait_for(timeout=TIMEOUT_MS)


def test_every_role_sees_every_page_it_may_whole_and_labelled_in_a_real_browser(
    stack: dict[str, str], tmp_path: Path
) -> None:
    shots = Path(os.environ.get("EVOLUTION_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{stack['EVOLUTION_DASHBOARD_PORT']}/"
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = sign_in(browser, url, "maria")
        page.get_by_text("waits for a manager's decision").wait_for(timeout=TIMEOUT_MS)
        page.get_by_role("textbox", name="Reason (recorded in the audit log)").fill("first model looks right")
        page.get_by_role("button", name="Approve").click()
        # The success message, not the audit table's new "CANARY → CHAMPION" row (that one may render first).
        page.get_by_text("approved by maria → CHAMPION").wait_for(timeout=TIMEOUT_MS)
        problems += check_and_shoot(page, "Governance after Approve", shots / "manager-approved.png")
        page.close()
        a_window_scanned(stack, tmp_path)

        for username, role in USERS.items():
            page = sign_in(browser, url, username)
            for title in PAGES[role]:
                open_page(page, title)
                problems += check_and_shoot(page, f"{role}: {title}", shots / f"{role}-{title.lower()}.png")
            page.close()
        browser.close()

    assert problems == []
    assert "CHAMPION" in run(stack, "versions", "-t", "acme").stdout
    audit = run(stack, "audit", "-t", "acme").stdout
    assert "maria" in audit and "CANARY->CHAMPION" in audit
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        ["manager-approved.png"] + [f"{role}-{t.lower()}.png" for role in USERS.values() for t in PAGES[role]]
    )

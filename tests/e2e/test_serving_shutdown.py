"""Stopping `evolution serve` with SIGTERM (Kubernetes, `evolution up`) loses no prediction record it still holds.

Records are written behind the answers, and kept in memory while the registry does not take them. uvicorn ends the
process on SIGTERM by raising the signal again once it has shut down, so code after ``uvicorn.run`` never runs:
the records' last chance has to be the app's own shutdown. Here the registry (SQLite) is locked by the test while
predictions are served, so their records are still in memory when SIGTERM arrives; the lock is released a moment
later, and every record must be in the registry when the process has gone.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.security import Principal, Role
from tests.e2e.conftest import EVOLUTION
from tests.support.models import demo_features, demo_rows, install_model
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

STARTUP_S = 180.0  # bounds on waiting, not measurements: they only turn a hang into a failure
EXIT_S = 60.0
PREDICT = "/v1/tenants/acme/models/yield/predict"
HELD = 20


def _recorded(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("select count(*) from predictions where tenant_id = 'acme'").fetchone()[0])


def test_sigterm_writes_the_prediction_records_still_in_memory_before_the_process_ends(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    services = build_services(Settings(home=home))
    root = Principal.for_tenant("root", Role.ADMIN, "*")
    services.tenants.ensure_tenant(root, "acme")
    install_model(services, "acme", tmp_path / "models", ModelState.CHAMPION)
    services.users.add_user(root, "field-app", "a long enough password", Role.VIEWER, ["acme"])
    token = services.tokens.create_token(root, "field-app", "shutdown").token.get_secret_value()
    services.close()
    database = home / "registry.db"
    row = demo_rows(1, 3)[0]
    features = {name: row[name] for name in demo_features([row])}

    port = free_port()
    env = {
        **os.environ,
        "EVOLUTION_HOME": str(home),
        "EVOLUTION_SERVE_PORT": str(port),
        "EVOLUTION_TRACING": "off",
    }
    log_path = tmp_path / "serving.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([EVOLUTION, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    lock: sqlite3.Connection | None = None
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            deadline = time.monotonic() + STARTUP_S
            while True:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "evolution serve did not answer /healthz"
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)

            def predict(request_id: str) -> None:
                body = {"instances": [{"request_id": request_id, "features": features}]}
                response = client.post(PREDICT, json=body)
                assert response.status_code == 200, response.text

            predict("warm-up")  # loads the model and caches the token: what follows needs no registry read
            deadline = time.monotonic() + STARTUP_S
            while _recorded(database) < 1:
                assert time.monotonic() < deadline, "the warm-up prediction was never recorded"
                time.sleep(0.05)

            lock = sqlite3.connect(database, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")  # no other writer until it ends: the records wait in memory
            for i in range(HELD):
                predict(f"held-{i}")
            assert _recorded(database) == 1

            process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert process.poll() is None, "the process ended with records it had not written"
            lock.execute("ROLLBACK")
            lock.close()
            lock = None
            process.wait(timeout=EXIT_S)
    finally:
        if lock is not None:
            lock.close()
        if process.poll() is None:
            process.kill()
            process.wait()

    assert _recorded(database) == 1 + HELD, log_path.read_text()
    assert "Traceback" not in log_path.read_text()

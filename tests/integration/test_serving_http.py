"""The serving process over real HTTP on loopback: champion answers, canary routing, ingestion, quarantine.

Every call carries an API token of an admin of tenant acme (authentication itself: tests/integration/test_api_tokens.py).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from evolution.demo.synthetic import generate_rows
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from evolution.serving.app import create_app
from evolution.serving.predictor import canary_bucket
from evolution.timeutil import utcnow
from tests.support.models import install_model


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home"))
    svc.tenants.ensure_tenant(Principal.for_tenant("root", Role.ADMIN, "acme"), "acme")
    yield svc
    svc.close()


@pytest.fixture
def token(services: Services) -> str:
    root = Principal.for_tenant("root", Role.ADMIN, "*")
    services.users.add_user(root, "field-app", "a long enough password", Role.ADMIN, ["acme"])
    return services.tokens.create_token(root, "field-app", "tests").token.get_secret_value()


@pytest.fixture
def base_url(services: Services) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    predictor = services.predictor(canary_share=0.3, refresh_s=0.0)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(predictor, services.events, services.token_authenticator()),
            port=port,
            log_config=None,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/healthz")
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(base_url: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as authenticated:
        yield authenticated


def instances(n: int) -> list[dict[str, object]]:
    rows = generate_rows(n, 5, utcnow())
    return [
        {
            "request_id": f"q-{i}",
            "features": {k: v for k, v in r.items() if k not in ("event_time", "yield_t_ha")},
        }
        for i, r in enumerate(rows)
    ]


def test_no_champion_is_a_clear_404(services: Services, client: httpx.Client) -> None:
    response = client.post("/v1/tenants/acme/models/yield/predict", json={"instances": instances(1)})
    assert response.status_code == 404 and "no champion" in response.json()["detail"], response.text


def test_champion_answers_and_canary_share_is_routed_by_request_id(
    services: Services, client: httpx.Client, tmp_path: Path
) -> None:
    champion = install_model(services, "acme", tmp_path, ModelState.CHAMPION, seed=1)
    candidate = install_model(services, "acme", tmp_path, ModelState.CANARY, seed=2)
    body = {"instances": instances(200)}
    first = client.post("/v1/tenants/acme/models/yield/predict", json=body).json()["predictions"]
    again = client.post("/v1/tenants/acme/models/yield/predict", json=body).json()["predictions"]
    routed = {p["request_id"]: p["served_by"] for p in first}
    assert routed == {p["request_id"]: p["served_by"] for p in again}  # deterministic per request id
    for p in first:
        expected = candidate.id if canary_bucket("acme", "yield", p["request_id"]) < 0.3 else champion.id
        assert p["served_by"] == expected
    assert 30 < sum(p["role"] == "canary" for p in first) < 90
    assert services.outcomes.candidate_health("acme", candidate.id) == (400, 0)
    assert services.outcomes.traffic_counts("acme", candidate.id) == {
        "canary": sum(p["role"] == "canary" for p in first + again),
        "champion": sum(p["role"] == "champion" for p in first + again),
    }


def test_bad_requests_name_the_problem(client: httpx.Client) -> None:
    response = client.post("/v1/tenants/acme/models/yield/predict", json={"instances": []})
    assert response.status_code == 422 and "instances" in response.text
    events = client.post("/v1/tenants/acme/events", json={"events": [{"tenant": "acme"}]})
    assert events.status_code == 200 and events.json()["rejected"] == 1


def test_a_tampered_champion_is_never_served_and_is_quarantined_with_a_reason(
    services: Services, client: httpx.Client, tmp_path: Path
) -> None:
    champion = install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    entry = champion.manifest["manifest"]["files"][0]  # type: ignore[index]
    path = next((services.settings.artifacts_dir / "acme").rglob(entry["sha256"]))
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes() + b"tampered")
    response = client.post("/v1/tenants/acme/models/yield/predict", json={"instances": instances(1)})
    assert response.status_code == 404
    system = Principal.system("acme")
    assert services.registry.get_version(system, champion.id).state == ModelState.QUARANTINED
    last = services.registry.audit_trail(system, "acme", subject_id=champion.id)[-1]
    assert last.to_state == "QUARANTINED" and "integrity check failed" in last.details["reason"]


def test_metrics_count_requests_by_role_and_client_errors_do_not_hurt_availability(
    services: Services, client: httpx.Client, tmp_path: Path
) -> None:
    def scrape() -> dict[str, float]:
        text = client.get("/metrics").text
        return {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line and line[0] != "#"
        }

    # The gauge is per process and earlier tests in this one may have counted failures: this test's requests
    # (a client error, then answers) must not lower it.
    before = scrape()["inference_availability_ratio"]
    client.post("/v1/tenants/acme/models/yield/predict", json={"instances": instances(1)})  # 404
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    client.post("/v1/tenants/acme/models/yield/predict", json={"instances": instances(5)})
    samples = scrape()
    served = 'inference_requests_total{model="yield",role="champion",status="ok",tenant="acme"}'
    refused = 'inference_requests_total{model="yield",role="none",status="client_error",tenant="acme"}'
    assert samples[served] >= 5 and samples[refused] >= 1
    assert samples["inference_availability_ratio"] >= before
    assert any(k.startswith("inference_latency_seconds_bucket") and 'role="champion"' in k for k in samples)

"""The serving process over real HTTP on loopback: champion answers, canary routing, ingestion, quarantine, features
a model does not know, body limits, bounded metric labels.

Every call carries an API token of an admin of tenant acme (authentication itself: tests/integration/test_api_tokens.py;
floods against the real serving process: tests/e2e/test_serving_floods.py).
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from evolution.demo.synthetic import generate_rows
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from evolution.serving.app import create_app
from evolution.serving.body_limits import BodyLimits
from evolution.serving.predictor import PredictInstance, Predictor, UnknownFeatures, canary_bucket
from evolution.timeutil import utcnow
from tests.support.http_server import serving
from tests.support.models import install_model

PREDICT = "/v1/tenants/acme/models/yield/predict"


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
    # (client errors, then answers) must not lower it.
    before = scrape()["inference_availability_ratio"]
    client.post("/v1/tenants/acme/models/yield/predict", json={"instances": instances(1)})  # 404
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    client.post("/v1/tenants/acme/models/yield/predict", json={"instances": instances(5)})
    unknown_feature = {"request_id": "q-x", "features": {"soil_colour": "red"}}
    client.post("/v1/tenants/acme/models/yield/predict", json={"instances": [unknown_feature]})  # 422
    samples = scrape()
    served = 'inference_requests_total{model="yield",role="champion",status="ok",tenant="acme"}'
    refused = 'inference_requests_total{model="yield",role="none",status="client_error",tenant="acme"}'
    # Before the model was served, the 404 named a model this process did not know: it is counted, unnamed.
    unnamed = 'inference_requests_total{model="_unknown",role="none",status="client_error",tenant="_unknown"}'
    assert samples[served] >= 5 and samples[refused] >= 1 and samples[unnamed] >= 1
    assert samples["inference_availability_ratio"] >= before
    assert any(k.startswith("inference_latency_seconds_bucket") and 'role="champion"' in k for k in samples)


# ------------------------------------------------------------------------------------ features a model does not know
def test_a_feature_no_serving_model_was_trained_on_is_refused_with_422_naming_it(
    services: Services, client: httpx.Client, tmp_path: Path
) -> None:
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    body = instances(3)
    body[1]["features"]["soil_colour"] = "red"  # type: ignore[index]
    body[2]["features"]["rain_mmm"] = 3.0  # type: ignore[index]
    response = client.post(PREDICT, json={"instances": body})
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "InvalidInput"
    assert answer["detail"].startswith("unknown feature(s) 'rain_mmm', 'soil_colour' (first in instances[1])")
    assert "rain_mm, soil_organic_matter_pct" in answer["detail"]  # the features it does know
    assert [(e["loc"], e["type"]) for e in answer["errors"]] == [
        (["body", "instances", "1", "features", "soil_colour"], "unknown_feature"),
        (["body", "instances", "2", "features", "rain_mmm"], "unknown_feature"),
    ]


def test_missing_features_and_unseen_categories_are_predicted_as_missing_and_identifier_columns_are_accepted(
    services: Services, client: httpx.Client, tmp_path: Path
) -> None:
    champion = install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    full = instances(1)[0]
    features: dict[str, Any] = full["features"]  # type: ignore[assignment]
    assert "field_id" in features  # the tenant's identifier column, never a feature of the model
    sent = [
        full,
        {"request_id": "sparse", "features": {"rain_mm": 410.0}},
        {"request_id": "nulls", "features": dict.fromkeys(features)},
        {"request_id": "unseen", "features": {**features, "crop": "a crop never seen in training"}},
    ]
    response = client.post(PREDICT, json={"instances": sent})
    assert response.status_code == 200, response.text
    served = {p["request_id"]: p["prediction"] for p in response.json()["predictions"]}
    model = services.loader.load(champion).model
    as_missing = model.predict(
        [
            {"rain_mm": 410.0},  # every other feature missing
            {},
            {**features, "crop": None},
        ]
    )
    assert all(math.isfinite(value) for value in served.values())
    assert served["sparse"] == pytest.approx(as_missing[0])
    assert served["nulls"] == pytest.approx(as_missing[1])
    assert served["unseen"] == pytest.approx(as_missing[2])


def test_a_model_definition_may_say_to_ignore_unknown_features(services: Services, tmp_path: Path) -> None:
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    app_user = Principal.for_tenant("field-app", Role.VIEWER, "acme")
    features: dict[str, Any] = instances(1)[0]["features"]  # type: ignore[assignment]
    extra = [PredictInstance(request_id="q-1", features={**features, "soil_colour": "red"})]
    plain = [PredictInstance(request_id="q-1", features=features)]
    strict = services.predictor()
    with pytest.raises(UnknownFeatures, match="soil_colour"):
        strict.predict(app_user, "acme", "yield", extra)
    lenient = Predictor(
        services.registry,
        services.loader,
        services.outcomes,
        0.1,
        tenants=services.tenants,
        extra_features=lambda tenant, model: "ignore" if (tenant, model) == ("acme", "yield") else "refuse",
    )
    assert lenient.predict(app_user, "acme", "yield", extra)[0].prediction == pytest.approx(
        strict.predict(app_user, "acme", "yield", plain)[0].prediction
    )


# ------------------------------------------------------------------------------------------------------ body limits
def test_a_body_one_byte_over_its_operations_limit_is_refused_with_413_whether_announced_or_streamed(
    services: Services, token: str, tmp_path: Path
) -> None:
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    limits = BodyLimits(predict=16 * 1024, ingest=64 * 1024)
    app = create_app(
        services.predictor(refresh_s=0.0), services.events, services.token_authenticator(), limits
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"instances": instances(2)}).encode()
    at_limit = body + b" " * (limits.predict - len(body))  # still JSON: trailing white space
    with serving(app) as url, httpx.Client(base_url=url, headers=headers) as http:
        spec = http.get("/openapi.json").json()
        for streamed in (False, True):
            # A generator has no length: httpx sends it chunked, so only the bytes counted can refuse it.
            def content(data: bytes, streamed: bool = streamed) -> Any:
                return iter([data[:1000], data[1000:]]) if streamed else data

            assert http.post(PREDICT, content=content(at_limit)).status_code == 200
            refused = http.post(PREDICT, content=content(at_limit + b" "))
            assert refused.status_code == 413, refused.text
            assert refused.json() == {
                "error": "ContentTooLarge",
                "detail": "the request body is larger than this operation's limit of 16384 bytes "
                "(0.015625 MiB); send it in smaller requests",
            }
            assert refused.headers["connection"] == "close"  # the rest of a flood is never read
            events = http.post("/v1/tenants/acme/events", content=content(b" " * (64 * 1024 + 1)))
            assert events.status_code == 413 and "65536 bytes" in events.json()["detail"]
    for path, limit in (
        ("/v1/tenants/{tenant_id}/models/{model_name}/predict", 16384),
        ("/v1/tenants/{tenant_id}/events", 65536),
    ):
        assert f"{limit} bytes" in spec["paths"][path]["post"]["responses"]["413"]["description"]


# ---------------------------------------------------------------------------------------------------- metric labels
def _sample_keys(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_naming_unknown_tenants_and_models_cannot_grow_the_metric_label_set(
    services: Services, client: httpx.Client, base_url: str, tmp_path: Path
) -> None:
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    assert client.post(PREDICT, json={"instances": instances(2)}).status_code == 200
    root = Principal.for_tenant("root", Role.ADMIN, "*")
    services.users.add_user(root, "everywhere", "a long enough password", Role.ADMIN, ["*"])
    everywhere = services.tokens.create_token(root, "everywhere", "tests").token.get_secret_value()
    callers = [client.headers["Authorization"], f"Bearer {everywhere}", None]  # acme only, every tenant, none
    names = random.Random(14)
    sent: list[str] = []

    def flood(http: httpx.Client, rounds: int) -> None:
        for _ in range(rounds):
            tenant, model = f"t{names.getrandbits(48):x}", f"M{names.getrandbits(48):x}"
            sent.extend((tenant, model))
            for path in (
                f"/v1/tenants/{tenant}/models/{model}/predict",
                f"/v1/tenants/acme/models/{model}/predict",
            ):
                for authorization in callers:
                    headers = {"Authorization": authorization} if authorization else {}
                    answer = http.post(path, json={"instances": instances(1)}, headers=headers)
                    assert answer.status_code in (401, 403, 404), answer.text

    with httpx.Client(base_url=base_url) as http:
        flood(http, 2)  # from here on the one label for names this process does not know exists
        before = http.get("/metrics").text
        flood(http, 12)
        after = http.get("/metrics").text
    assert _sample_keys(after) == _sample_keys(before)
    assert not [name for name in sent if name in after]
    labels = {
        (dict(key)["tenant"], dict(key)["model"])
        for name, key in _sample_keys(after)
        if name == "inference_requests_total"
    }
    assert {("acme", "yield"), ("acme", "_unknown"), ("_unknown", "_unknown")} <= labels

"""Schemathesis against the serving API's own OpenAPI schema, over real HTTP on loopback.

For every operation, positive and negative cases (valid and invalid by the schema) are sent with a valid token and
checked: no server error, every answer conforms to the declared responses (status, content type, headers, body
schema), every invalid input is rejected. Then the same case is sent without a token, with a forged token, and with
another tenant's token: it must be refused (401, 401, 403), never answered with 2xx.

Cases per operation and generation mode come from ``EVOLUTION_FUZZ_CASES`` (default 25, what ``make test`` runs;
``make fuzz`` runs 1000). Generation is deterministic (derandomized), so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from evolution.data.event_schema import sign_event
from evolution.data.sources import create_source_key, records_to_events
from evolution.demo.synthetic import TARGET, generate_rows
from evolution.governance.users import UserService
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import upgrade_to_head
from evolution.security import Principal, Role
from evolution.serving.app import create_app
from evolution.timeutil import utcnow
from tests.support.http_server import serving
from tests.support.models import install_model
from tests.support.postgres import app_role_url, create_database

CASES = int(os.environ.get("EVOLUTION_FUZZ_CASES", "25"))
ROOT = Principal.for_tenant("root", Role.ADMIN, "*")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
FORGED = "evo_0123456789abcdef_" + "A" * 43


@dataclass
class Api:
    url: str
    services: Services
    source: tuple[str, bytes]  # tenant acme's source: key id and private key
    token: str  # an admin of every tenant
    other_tenant_token: str  # an admin of tenant "globex" only
    sent: Counter[str] = field(default_factory=Counter)
    client: httpx.Client = field(
        default_factory=lambda: httpx.Client(timeout=60)
    )  # keep-alive: fewer handshakes
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, pg_server: str
) -> Iterator[Api]:
    """The serving API over a real PostgreSQL, as production runs it: the application's role, under row-level
    security (what a fuzzed byte does to SQLite and to PostgreSQL differs: NUL, for one)."""
    home = tmp_path_factory.mktemp("fuzz") / "home"
    database = create_database(pg_server)
    upgrade_to_head(database)  # as the owner; the services connect as the application's role
    services = build_services(Settings(home=home, database_url=app_role_url(database)), migrate=False)
    for tenant in ("acme", "globex"):
        services.tenants.ensure_tenant(ROOT, tenant)
    install_model(services, "acme", home.parent, ModelState.CHAMPION)
    key_id, public_pem, key_path = create_source_key(services.settings.keys_dir, "acme", "fuzz-source")
    services.events.register_source_key(ROOT, "acme", key_id, public_pem)
    users = UserService(
        services.factory, hasher=PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    )
    users.add_user(ROOT, "fuzzer", "a long enough password", Role.ADMIN, ["*"])
    users.add_user(ROOT, "globex-admin", "a long enough password", Role.ADMIN, ["globex"])
    token = services.tokens.create_token(ROOT, "fuzzer", "fuzz").token.get_secret_value()
    other = services.tokens.create_token(ROOT, "globex-admin", "fuzz").token.get_secret_value()
    predictor = services.predictor(canary_share=0.1, refresh_s=60)
    app = create_app(
        predictor, services.events, services.token_authenticator(), definitions=services.model_definitions
    )
    with serving(app) as url:
        found = Api(url, services, (key_id, key_path.read_bytes()), token, other)
        yield found
        found.client.close()
        found.session.close()
    services.close()
    lines = [f"fuzz cases sent per operation and mode (EVOLUTION_FUZZ_CASES={CASES}):"]
    lines += [f"  {count:6d}  {key}" for key, count in sorted(found.sent.items())]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + "\n".join(lines))


# Every operation of the API (test_the_schema_is_tight fails when one is added without being listed here).
OPERATIONS = [
    ("POST", "/v1/tenants/{tenant_id}/models/{model_name}/predict"),
    ("GET", "/v1/tenants/{tenant_id}/models/{model_name}"),
    ("POST", "/v1/tenants/{tenant_id}/events"),
    ("PUT", "/v1/tenants/{tenant_id}/models/{model_name}/definition"),
    ("GET", "/v1/tenants/{tenant_id}/models/{model_name}/definition"),
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def api_schema(api: Api) -> Any:
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json")


def _aim_at_the_real_tenant(case: Any, mode: GenerationMode) -> None:
    """Half of the valid cases name the tenant and model that have a champion, so that predictions are made."""
    params = case.path_parameters or {}
    if mode != GenerationMode.POSITIVE or "tenant_id" not in params:
        return
    if int(hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest(), 16) % 2:
        params["tenant_id"] = "acme"
        if "model_name" in params:
            params["model_name"] = "yield"


def _resend(api: Api, case: Any, authorization: str | None) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url=api.url)
    headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() != "authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return api.client.request(kwargs.pop("method"), kwargs.pop("url"), headers=headers, **kwargs)


def check_case(api: Api, case: Any, mode: GenerationMode) -> None:
    _aim_at_the_real_tenant(case, mode)
    api.sent[f"{case.operation.label} [{mode.value}]"] += 1
    case.call_and_validate(base_url=api.url, session=api.session, headers=api.auth, checks=CHECKS)

    anonymous = _resend(api, case, None)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    forged = _resend(api, case, f"Bearer {FORGED}")
    assert forged.status_code == 401, forged.text
    if (case.path_parameters or {}).get("tenant_id") != "globex":
        other = _resend(api, case, f"Bearer {api.other_tenant_token}")
        assert not 200 <= other.status_code < 300, other.text
        if mode == GenerationMode.POSITIVE:
            assert other.status_code == 403, other.text
        else:
            assert other.status_code in (400, 403, 404, 405, 422), other.text


@pytest.mark.postgres
@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_api_conforms_rejects_invalid_input_and_never_ignores_authentication(
    api: Api, api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    strategy = api_schema[path][method].as_strategy(generation_mode=mode)

    @settings(
        max_examples=CASES,
        derandomize=True,  # fixed: the same cases on every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        check_case(api, case, mode)

    fuzz()


def test_the_schema_is_tight(api: Api) -> None:
    """Path ids have patterns, bodies have bounds, and every operation declares its refusals."""
    spec = httpx.get(f"{api.url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["apiToken"]["description"],
    }
    listed = {(m.upper(), p) for p, item in spec["paths"].items() for m in item if p.startswith("/v1/")}
    assert listed == set(OPERATIONS), "every operation is fuzzed"
    for path, item in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in item.items():
            assert operation["security"] == [{"apiToken": []}], (method, path)
            assert {"401", "403", "422", "503"} <= set(operation["responses"]), (method, path)
            if method in ("post", "put"):  # a body: refused with 413 over its operation's limit
                assert "413" in operation["responses"], (method, path)
            for parameter in operation.get("parameters", []):
                assert parameter["schema"].get("pattern"), (method, path, parameter["name"])
    schemas = spec["components"]["schemas"]
    assert schemas["PredictRequest"]["properties"]["instances"]["maxItems"] == 1000
    assert schemas["EventsRequest"]["properties"]["events"]["maxItems"] == 5000
    assert schemas["PredictInstance"]["additionalProperties"] is False
    assert schemas["DefinitionRequest"]["additionalProperties"] is False
    assert schemas["DefinitionRequest"]["properties"]["reason"]["maxLength"] == 500


# ----------------------------------------------------------------------------------------------- learning events
# The events operation takes each event as an object on purpose: an event that fails its checks is rejected on its
# own, with a reason and a dead-letter row, and the others are accepted. So schemathesis's generic objects rarely look
# like events; here valid, signed events are mutated one field at a time (and re-signed when the mutation still
# parses, so that odd but well-formed values reach the accepting path and the database).
HOSTILE_TEXT = st.sampled_from(
    [
        "\x00",
        "a\x00b",
        "\ud800",
        "x\udfffy",
        "\u202e",
        "' OR 1=1 --",
        "%s%n",
        "\\",
        "\n\r\t",
        "𝔘𝔫𝔦",
        "x" * 5000,
    ]
)
TEXT = st.text(max_size=40) | HOSTILE_TEXT
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
EVENT_FIELDS = [
    "tenant",
    "request_id",
    "event_time",
    "features",
    "prediction_id",
    "actual",
    "source_key_id",
    "sequence",
    "signature",
]


@st.composite
def mutated_events(draw: st.DrawFn, key_id: str, private_pem: bytes) -> tuple[list[dict[str, Any]], bool]:
    """A batch of one to three events, one of them mutated; True when the mutant is validly signed."""
    seed = draw(st.integers(min_value=0, max_value=2**31))
    records = generate_rows(
        draw(st.integers(min_value=1, max_value=3)), seed, utcnow() - timedelta(minutes=1)
    )
    prefix = f"fz-{draw(st.uuids()).hex[:12]}"
    events = list(
        records_to_events(records, "acme", key_id, private_pem, target=TARGET, request_prefix=prefix)
    )
    victim = dict(events[0])
    where = draw(st.sampled_from([*EVENT_FIELDS, "a feature", "an extra field", "a removed field"]))
    value = draw(JSON_VALUES)
    if where == "a feature":
        victim["features"] = {**victim["features"], draw(st.text(max_size=120) | HOSTILE_TEXT): value}
    elif where == "an extra field":
        victim[draw(st.text(max_size=20))] = value
    elif where == "a removed field":
        victim.pop(draw(st.sampled_from(EVENT_FIELDS)), None)
    else:
        victim[where] = value
    signed = False
    if draw(st.booleans()) and where not in ("signature", "source_key_id"):
        try:
            unsigned = {k: v for k, v in victim.items() if k not in ("signature", "source_key_id")}
            victim = sign_event(unsigned, private_pem, key_id)
            signed = True
        except (ValidationError, TypeError, ValueError):
            pass  # the mutant does not parse as an event: sent as it is, to be rejected
    events[0] = victim
    return events, signed


@pytest.mark.postgres
def test_mutated_signed_events_are_each_accepted_or_rejected_with_a_reason_never_a_server_error(
    api: Api,
) -> None:
    key_id, private_pem = api.source
    url = f"{api.url}/v1/tenants/acme/events"

    @settings(
        max_examples=CASES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=mutated_events(key_id, private_pem))
    def fuzz(batch: tuple[list[dict[str, Any]], bool]) -> None:
        events, _signed = batch
        api.sent["POST /v1/tenants/{tenant_id}/events [mutated signed events]"] += 1
        # ASCII-escaped JSON, so that lone surrogates travel as the escapes a hostile client would send.
        body = json.dumps({"events": events}).encode()
        headers = {**api.auth, "Content-Type": "application/json"}
        response = api.client.post(url, content=body, headers=headers)
        assert response.status_code == 200, response.text
        summary = response.json()
        assert summary["accepted"] + summary["duplicate"] + summary["rejected"] == len(events), summary
        assert all(r["reason"] for r in summary["rejects"])
        unauthenticated = api.client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert unauthenticated.status_code == 401

    fuzz()


@pytest.mark.postgres
def test_text_a_database_cannot_keep_is_refused_with_a_reason_not_a_server_error(api: Api) -> None:
    """Found by the mutation fuzzer: NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8) in an event."""
    key_id, private_pem = api.source
    record = generate_rows(1, 99, utcnow() - timedelta(minutes=1))[0]
    valid = next(
        records_to_events([record], "acme", key_id, private_pem, target=TARGET, request_prefix="nul")
    )
    unsigned = {k: v for k, v in valid.items() if k not in ("signature", "source_key_id")}
    hostile = [
        {**valid, "request_id": "a\x00b"},  # unsigned mutation: a bad signature, dead-lettered
        {**valid, "tenant": "acme\ud800"},
        {**valid, "features": {**valid["features"], "x\x00": 1}},
        {**unsigned, "request_id": "nul\x00", "source_key_id": key_id, "signature": "x"},
    ]
    body = json.dumps({"events": hostile}).encode()
    response = api.client.post(
        f"{api.url}/v1/tenants/acme/events",
        content=body,
        headers={**api.auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["rejected"] == len(hostile) and summary["accepted"] == 0
    # A source cannot even sign such an event: the text is refused before signing.
    with pytest.raises(ValidationError, match="NUL"):
        sign_event({**unsigned, "features": {"soil": "clay\x00"}}, private_pem, key_id)

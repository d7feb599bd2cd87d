"""API tokens on SQLite and a real PostgreSQL, and the serving API's bearer authentication over real HTTP.

The service layer: `evo_` tokens of 256 random bits, stored only as SHA-256, refused alike when unknown, malformed,
revoked, expired or of a disabled user, managed by admins only, audited without the token. The HTTP layer: 401 with
WWW-Authenticate before anything else, 403 from the service layer's refusal, revocation taking effect, and answers
kept flowing from the token cache while the registry database is down.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from evolution.governance.tokens import TOKEN_REFUSED, TokenService
from evolution.governance.users import UserService
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.schema import ApiToken, Base
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal, Role
from evolution.serving.app import create_app
from evolution.timeutil import utcnow
from tests.integration.test_serving_http import instances
from tests.support.http_server import serving
from tests.support.models import install_model
from tests.support.postgres import libpq_dsn, with_database

ROOT = Principal(user="root", role=Role.ADMIN, tenants=("*",))
ACME_ADMIN = Principal.for_tenant("acme-boss", Role.ADMIN, "acme")
ACME_MANAGER = Principal.for_tenant("maria", Role.MANAGER, "acme")
PASSWORD = "correct horse battery"
TOKEN_SHAPE = re.compile(r"^evo_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")


def cheap_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def factory(registry_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    tenants = TenantService(registry_factory)
    tenants.ensure_tenant(ROOT, "acme")
    tenants.ensure_tenant(ROOT, "globex")
    return registry_factory


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(factory: sessionmaker[Session], clock: Clock) -> UserService:
    service = UserService(factory, clock=clock, hasher=cheap_hasher())
    service.add_user(ROOT, "alice", PASSWORD, Role.MANAGER, ["acme"])
    return service


@pytest.fixture
def tokens(factory: sessionmaker[Session], clock: Clock, users: UserService) -> TokenService:
    """Tokens over the same database and clock; ``users`` first, so that alice exists."""
    return TokenService(factory, clock=clock)


# ----------------------------------------------------------------------------------------------- service layer
def test_a_token_is_evo_prefixed_with_256_random_bits_and_stored_only_as_its_sha256(
    factory: sessionmaker[Session], tokens: TokenService
) -> None:
    issued = tokens.create_token(ROOT, "alice", "field gateway")
    token = issued.token.get_secret_value()
    assert TOKEN_SHAPE.match(token)
    assert token not in repr(issued) and token not in str(issued)  # a SecretStr: never printed by accident
    secret_part = token.split("_", 2)[2]
    assert len(secret_part) == 43  # base64url of 32 bytes
    with factory() as session:
        row = session.scalars(select(ApiToken)).one()
        stored = [str(getattr(row, c.name)) for c in ApiToken.__table__.columns]
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert not any(secret_part in value for value in stored)
    assert issued.view.id == row.id and token.startswith(f"evo_{row.id}_")
    assert tokens.create_token(ROOT, "alice", "field gateway").token.get_secret_value() != token


def test_a_token_authenticates_as_its_user_with_their_roles_per_tenant(
    users: UserService, tokens: TokenService
) -> None:
    users.grant(ROOT, "alice", Role.VIEWER, "globex")
    token = tokens.create_token(ROOT, "alice", "app").token.get_secret_value()
    access = tokens.authenticate_token(token)
    assert access.username == "alice"
    assert access.roles == {"acme": Role.MANAGER, "globex": Role.VIEWER}
    assert access.principal("acme") == Principal.for_tenant("alice", Role.MANAGER, "acme")
    users.revoke(ROOT, "alice", "globex")  # roles are read at each authentication
    assert tokens.authenticate_token(token).roles == {"acme": Role.MANAGER}


def test_unknown_malformed_revoked_expired_and_disabled_are_refused_with_one_message(
    users: UserService, tokens: TokenService, clock: Clock
) -> None:
    token = tokens.create_token(ROOT, "alice", "app").token.get_secret_value()
    short = tokens.create_token(ROOT, "alice", "short", ttl=timedelta(minutes=5)).token.get_secret_value()
    revoked = tokens.create_token(ROOT, "alice", "revoked")
    tokens.revoke_token(ROOT, revoked.view.id)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")  # right id, wrong secret
    refused = [
        forged,
        "evo_0123456789abcdef_" + "A" * 43,  # unknown id
        "not-a-token",
        "",
        token + "x",
        "evo_" + "a" * 5000,
        revoked.token.get_secret_value(),
    ]
    assert tokens.authenticate_token(short).username == "alice"
    clock.now += timedelta(minutes=5)
    refused.append(short)  # expired exactly at its expiry
    for bad in refused:
        with pytest.raises(PermissionDenied) as caught:
            tokens.authenticate_token(bad)
        assert str(caught.value) == TOKEN_REFUSED
    assert tokens.authenticate_token(token).username == "alice"
    users.disable_user(ROOT, "alice")
    with pytest.raises(PermissionDenied, match=re.escape(TOKEN_REFUSED)):
        tokens.authenticate_token(token)


@pytest.mark.parametrize("actor", [ACME_MANAGER, Principal.for_tenant("vic", Role.VIEWER, "acme")])
def test_only_admins_create_list_and_revoke_tokens(tokens: TokenService, actor: Principal) -> None:
    issued = tokens.create_token(ROOT, "alice", "app")
    with pytest.raises(PermissionDenied):
        tokens.create_token(actor, "alice", "mine")
    with pytest.raises(PermissionDenied):
        tokens.list_tokens(actor)
    with pytest.raises(PermissionDenied):
        tokens.revoke_token(actor, issued.view.id)
    with pytest.raises(PermissionDenied):
        tokens.revoke_token(actor, "0123456789abcdef")  # not even whether a token exists
    assert tokens.authenticate_token(issued.token.get_secret_value()).username == "alice"


def test_a_tenant_admin_cannot_mint_a_token_for_an_account_reaching_other_tenants(
    users: UserService, tokens: TokenService
) -> None:
    assert tokens.create_token(ACME_ADMIN, "alice", "app").view.username == "alice"
    users.grant(ROOT, "alice", Role.VIEWER, "globex")
    with pytest.raises(PermissionDenied, match="globex"):
        tokens.create_token(ACME_ADMIN, "alice", "wider")
    assert [t.username for t in tokens.list_tokens(ACME_ADMIN)] == []  # alice now reaches globex too
    assert len(tokens.list_tokens(ROOT, "alice")) == 1


def test_listing_shows_status_and_never_the_token_or_its_digest(tokens: TokenService, clock: Clock) -> None:
    live = tokens.create_token(ROOT, "alice", "live")
    short = tokens.create_token(ROOT, "alice", "short", ttl=timedelta(hours=1))
    gone = tokens.create_token(ROOT, "alice", "gone")
    tokens.revoke_token(ROOT, gone.view.id)
    assert tokens.revoke_token(ROOT, gone.view.id).revoked_at is not None  # revoking again changes nothing
    clock.now += timedelta(hours=2)
    views = tokens.list_tokens(ROOT)
    assert {v.name: v.status(clock.now) for v in views} == {
        "live": "active",
        "short": "expired",
        "gone": "revoked",
    }
    dumped = json.dumps([v.model_dump(mode="json") for v in views])
    for issued in (live, short, gone):
        token = issued.token.get_secret_value()
        assert token not in dumped and hashlib.sha256(token.encode()).hexdigest() not in dumped
    with pytest.raises(NotFound):
        tokens.revoke_token(ROOT, "0123456789abcdef")
    with pytest.raises(NotFound):
        tokens.list_tokens(ROOT, "nobody")


def test_bad_names_lifetimes_and_disabled_users_are_refused_clearly(
    users: UserService, tokens: TokenService
) -> None:
    for name in ("", " ", "-dash-first", "x" * 65, "new\nline"):
        with pytest.raises(InvalidInput, match="token name"):
            tokens.create_token(ROOT, "alice", name)
    for ttl in (timedelta(0), timedelta(seconds=-1), timedelta(days=5000)):
        with pytest.raises(InvalidInput, match="lifetime"):
            tokens.create_token(ROOT, "alice", "app", ttl=ttl)
    with pytest.raises(NotFound, match="nobody"):
        tokens.create_token(ROOT, "nobody", "app")
    users.disable_user(ROOT, "alice")
    with pytest.raises(Conflict, match="disabled"):
        tokens.create_token(ROOT, "alice", "app")
    assert tokens.list_tokens(ROOT) == []


def test_creation_and_revocation_are_audited_in_each_tenant_chain_without_the_token(
    factory: sessionmaker[Session], users: UserService, tokens: TokenService
) -> None:
    users.grant(ROOT, "alice", Role.VIEWER, "globex")
    issued = tokens.create_token(ROOT, "alice", "app", ttl=timedelta(days=30))
    tokens.revoke_token(ROOT, issued.view.id)
    token = issued.token.get_secret_value()
    registry = ModelRegistryService(factory)
    for tenant in ("acme", "globex"):
        trail = [e for e in registry.audit_trail(ROOT, tenant) if e.action.startswith("user.token")]
        assert [(e.action, e.actor, e.subject_id) for e in trail] == [
            ("user.token_created", "root", "alice"),
            ("user.token_revoked", "root", "alice"),
        ]
        assert trail[0].details["token_id"] == issued.view.id and trail[0].details["expires_at"]
        dumped = json.dumps([e.model_dump(mode="json") for e in trail])
        assert token not in dumped and hashlib.sha256(token.encode()).hexdigest() not in dumped
        assert registry.verify_audit(ROOT, tenant).ok


def test_the_api_tokens_migration_matches_the_model(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        diffs = compare_metadata(MigrationContext.configure(session.connection()), Base.metadata)
    assert [d for d in diffs if "api_tokens" in repr(d)] == []


# ----------------------------------------------------------------------------------------------- over HTTP
@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home"))
    for tenant in ("acme", "globex"):
        svc.tenants.ensure_tenant(ROOT, tenant)
    yield svc
    svc.close()


def let_through(response: httpx.Response) -> bool:
    """Authenticated and authorised: the model is not there (404, no version yet), but the caller got that far."""
    return response.status_code == 404 and response.json()["error"] == "NotFound"


def token_for(services: Services, username: str, role: Role, tenant: str) -> str:
    services.users.add_user(ROOT, username, PASSWORD, role, [tenant])
    return services.tokens.create_token(ROOT, username, "tests").token.get_secret_value()


@contextmanager
def serve(services: Services, fresh_s: float = 60.0) -> Iterator[str]:
    predictor = services.predictor(canary_share=0.1, refresh_s=0)
    authenticator = services.token_authenticator(fresh_s=fresh_s)
    with serving(create_app(predictor, services.events, authenticator)) as url:
        yield url


@pytest.fixture
def base_url(services: Services) -> Iterator[str]:
    with serve(services, fresh_s=0.0) as url:  # no cache: every request asks the registry
        yield url


PREDICT = "/v1/tenants/acme/models/yield/predict"


def test_no_or_a_bad_token_gets_401_with_a_challenge_before_the_body_is_read(base_url: str) -> None:
    body = {"instances": instances(1)}
    cases = {
        "none": {},
        "basic": {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        "empty bearer": {"Authorization": "Bearer"},
        "unknown": {"Authorization": "Bearer evo_0123456789abcdef_" + "A" * 43},
        "garbage": {"Authorization": "Bearer ' OR 1=1 --"},
    }
    for name, headers in cases.items():
        for method, path, kwargs in [
            ("POST", PREDICT, {"json": body}),
            ("POST", PREDICT, {"content": b"{not json"}),  # no token: 401, not a parse error
            ("GET", "/v1/tenants/acme/models/yield", {}),
            ("POST", "/v1/tenants/acme/events", {"json": {"events": [{}]}}),
            ("GET", "/v1/tenants/NOT A TENANT/anything", {}),
        ]:
            response = httpx.request(method, base_url + path, headers=headers, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 401, (name, path, response.text)
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="evolution"')
            assert ('error="invalid_token"' in challenge) == (name in ("unknown", "garbage")), name
    assert httpx.get(f"{base_url}/healthz").status_code == 200  # open
    assert httpx.get(f"{base_url}/metrics").status_code == 200  # open: bounded labels only
    assert httpx.get(f"{base_url}/openapi.json").status_code == 200


def test_the_service_layer_decides_role_and_tenant_and_http_answers_403(
    services: Services, base_url: str
) -> None:
    viewer = {"Authorization": f"Bearer {token_for(services, 'vic', Role.VIEWER, 'acme')}"}
    admin = {"Authorization": f"Bearer {token_for(services, 'ada', Role.ADMIN, 'acme')}"}
    events = {"events": [{"tenant": "acme"}]}
    # A viewer may predict (404: authorised, no champion yet) but not ingest.
    assert httpx.post(base_url + PREDICT, json={"instances": instances(1)}, headers=viewer).status_code == 404
    refused = httpx.post(f"{base_url}/v1/tenants/acme/events", json=events, headers=viewer)
    assert refused.status_code == 403 and refused.json()["error"] == "PermissionDenied"
    assert "ingest_events" in refused.json()["detail"]
    ingested = httpx.post(f"{base_url}/v1/tenants/acme/events", json=events, headers=admin)
    assert ingested.status_code == 200 and ingested.json()["rejected"] == 1  # per-event signature checks stay
    # Another tenant: refused for every operation, whatever the role.
    for headers in (viewer, admin):
        for method, path, kwargs in [
            ("POST", "/v1/tenants/globex/models/yield/predict", {"json": {"instances": instances(1)}}),
            ("GET", "/v1/tenants/globex/models/yield", {}),
            ("POST", "/v1/tenants/globex/events", {"json": events}),
        ]:
            response = httpx.request(method, base_url + path, headers=headers, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 403, (path, response.text)
            assert "globex" in response.json()["detail"]


def test_a_star_grant_reaches_every_tenant(services: Services, base_url: str) -> None:
    services.users.add_user(ROOT, "ops", PASSWORD, Role.VIEWER, ["*"])
    token = services.tokens.create_token(ROOT, "ops", "tests").token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    for tenant in ("acme", "globex"):
        # Authorised in both (404, not 403): neither has a version of the model yet.
        response = httpx.get(f"{base_url}/v1/tenants/{tenant}/models/yield", headers=headers)
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == f"tenant {tenant!r} has no model 'yield' (no version registered)"
    unknown = httpx.get(f"{base_url}/v1/tenants/nosuch/models/yield", headers=headers)
    assert unknown.status_code == 404 and unknown.json()["detail"] == "tenant 'nosuch' does not exist"


def test_a_revoked_token_or_a_disabled_user_is_refused_at_the_next_check(
    services: Services, base_url: str
) -> None:
    token = token_for(services, "vic", Role.VIEWER, "acme")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base_url}/v1/tenants/acme/models/yield"
    assert let_through(httpx.get(url, headers=headers))
    services.tokens.revoke_token(ROOT, services.tokens.list_tokens(ROOT, "vic")[0].id)
    assert httpx.get(url, headers=headers).status_code == 401
    second = {
        "Authorization": f"Bearer {services.tokens.create_token(ROOT, 'vic', 'again').token.get_secret_value()}"
    }
    assert let_through(httpx.get(url, headers=second))
    services.users.disable_user(ROOT, "vic")
    assert httpx.get(url, headers=second).status_code == 401


def test_within_the_fresh_window_a_revocation_waits_for_the_cache(services: Services) -> None:
    token = token_for(services, "vic", Role.VIEWER, "acme")
    headers = {"Authorization": f"Bearer {token}"}
    with serve(services, fresh_s=600) as url:
        current = f"{url}/v1/tenants/acme/models/yield"
        assert let_through(httpx.get(current, headers=headers))
        services.tokens.revoke_token(ROOT, services.tokens.list_tokens(ROOT, "vic")[0].id)
        # The documented revocation latency: the cached check stands until it is no longer fresh.
        assert let_through(httpx.get(current, headers=headers))


@pytest.mark.postgres
def test_predictions_keep_flowing_on_cached_tokens_while_the_registry_is_down(
    pg_url: str, tmp_path: Path
) -> None:
    services = build_services(Settings(home=tmp_path / "home", database_url=pg_url))
    services.tenants.ensure_tenant(ROOT, "acme")
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    seen = {"Authorization": f"Bearer {token_for(services, 'vic', Role.VIEWER, 'acme')}"}
    unseen = {"Authorization": f"Bearer {token_for(services, 'ana', Role.VIEWER, 'acme')}"}
    body = {"instances": instances(3)}
    database = make_url(pg_url).database
    admin_dsn = libpq_dsn(with_database(pg_url, "postgres"))
    try:
        with serve(services, fresh_s=0.0) as url:  # every request asks the registry while it can
            assert httpx.post(url + PREDICT, json=body, headers=seen).status_code == 200
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
                )
            # The registry is down: the token checked a moment ago still serves (the stale window) ...
            for _ in range(3):
                response = httpx.post(url + PREDICT, json=body, headers=seen)
                assert response.status_code == 200, response.text
                assert len(response.json()["predictions"]) == 3
            # ... a token never checked cannot be, and a bad one is still refused.
            unavailable = httpx.post(url + PREDICT, json=body, headers=unseen)
            assert unavailable.status_code == 503 and unavailable.headers["Retry-After"]
            assert httpx.post(url + PREDICT, json=body).status_code == 401
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        services.close()

"""The model-definition operations of the HTTP API, over real HTTP on loopback.

PUT /v1/tenants/{tenant_id}/models/{model_name}/definition: admins of the tenant only (403 for a manager or viewer
whatever the body, 403 for another tenant's admin, 401 without a token, 404 for an unknown tenant), 201 for the first
revision and 200 for a later one, 422 naming every bad field in the API's error shape; nothing is stored when it is
refused. GET of the same path: any role of the tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from evolution.governance.users import UserService
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.model_definitions import DEFAULT_DEFINITION
from evolution.security import Principal, Role
from evolution.serving.app import MAX_DEFINITION_BYTES, create_app
from tests.support.http_server import serving

ROOT = Principal.for_tenant("root", Role.ADMIN, "*")
PATH = "/v1/tenants/{tenant}/models/{model}/definition"
DIGEST = "sha256:" + "a" * 64
BYO: dict[str, Any] = {
    "features": [{"name": "rain_mm", "type": "numeric"}, {"name": "crop", "type": "categorical"}],
    "target": "yield_t_ha",
    "hyperparameters": {"max_depth": 4, "learning_rate": 0.1},
    "trainer": {
        "kind": "image",
        "image": f"registry.example.com/acme/yield-trainer@{DIGEST}",
        "command": ["python"],
        "args": ["/app/train.py"],
        "resources": {"cpu": "2", "memory": "4Gi", "gpus": 0},
        "timeout_s": 10800,
    },
}


@dataclass
class Api:
    url: str
    services: Services
    tokens: dict[str, str]  # actor -> API token

    def call(
        self, method: str, actor: str | None, tenant: str = "acme", model: str = "yield", **kw: Any
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[actor]}"} if actor else {}
        return httpx.request(
            method, self.url + PATH.format(tenant=tenant, model=model), headers=headers, timeout=30, **kw
        )

    def revision(self, tenant: str = "acme", model: str = "yield") -> int:
        return self.services.model_definitions.current(ROOT, tenant, model).revision


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    services = build_services(Settings(home=tmp_path_factory.mktemp("definitions") / "home"))
    for tenant in ("acme", "globex"):
        services.tenants.ensure_tenant(ROOT, tenant)
    users = UserService(
        services.factory, hasher=PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    )
    grants = {
        "admin": (Role.ADMIN, "acme"),
        "manager": (Role.MANAGER, "acme"),
        "viewer": (Role.VIEWER, "acme"),
        "globex-admin": (Role.ADMIN, "globex"),
        "root": (Role.ADMIN, "*"),
    }
    tokens = {}
    for actor, (role, tenant) in grants.items():
        users.add_user(ROOT, actor, "a long enough password", role, [tenant])
        tokens[actor] = services.tokens.create_token(ROOT, actor, "tests").token.get_secret_value()
    app = create_app(
        services.predictor(refresh_s=60),
        services.events,
        services.token_authenticator(),
        definitions=services.model_definitions,
    )
    with serving(app) as url:
        yield Api(url, services, tokens)
    services.close()


def test_an_admin_defines_201_then_200_revisions_increase_and_every_role_of_the_tenant_reads_it(
    api: Api,
) -> None:
    model = "put-get"
    never = api.call("GET", "viewer", model=model)
    assert never.status_code == 200, never.text
    assert never.json()["revision"] == 0 and never.json()["definition"] == DEFAULT_DEFINITION.model_dump(
        mode="json"
    )

    first = api.call("PUT", "admin", model=model, json={**BYO, "reason": "bring our own model"})
    assert first.status_code == 201, first.text
    assert (first.json()["revision"], first.json()["defined_by"]) == (1, "admin")
    second = api.call("PUT", "admin", model=model, json={"reason": "back to the built-in trainer"})
    assert second.status_code == 200, second.text
    assert second.json()["revision"] == 2
    assert second.json()["definition"] == DEFAULT_DEFINITION.model_dump(mode="json")  # whole, not merged

    for actor in ("viewer", "manager", "admin", "root"):
        read = api.call("GET", actor, model=model)
        assert read.status_code == 200, (actor, read.text)
        assert read.json()["revision"] == 2 and read.json()["defined_by"] == "admin"
    history = api.services.model_definitions.history(ROOT, "acme", model)
    assert [v.revision for v in history] == [1, 2]
    assert history[0].definition.model_dump(mode="json")["trainer"]["image"] == BYO["trainer"]["image"]


def test_the_audit_row_holds_the_revision_before_and_after_and_the_reason(api: Api) -> None:
    model = "audited"
    assert api.call("PUT", "admin", model=model, json={"reason": "start"}).status_code == 201
    assert api.call("PUT", "admin", model=model, json={**BYO, "reason": "our trainer"}).status_code == 200
    trail = api.services.registry.audit_trail(ROOT, "acme", subject_id=model)
    entry = [e for e in trail if e.action == "model.defined"][-1]
    assert (entry.actor, entry.role, entry.details["revision"], entry.details["reason"]) == (
        "admin",
        "admin",
        2,
        "our trainer",
    )
    assert entry.details["before"] == DEFAULT_DEFINITION.model_dump(mode="json")
    assert entry.details["after"]["trainer"]["image"] == BYO["trainer"]["image"]
    assert entry.details["after"]["features"] == BYO["features"]


@pytest.mark.parametrize(
    ("actor", "tenant", "status"),
    [
        ("manager", "acme", 403),
        ("viewer", "acme", 403),
        ("globex-admin", "acme", 403),
        (None, "acme", 401),
        ("root", "ghost", 404),
    ],
    ids=["manager", "viewer", "another-tenants-admin", "anonymous", "unknown-tenant"],
)
def test_only_an_admin_of_an_existing_tenant_may_define_and_a_refusal_stores_nothing(
    api: Api, actor: str | None, tenant: str, status: int
) -> None:
    model = "refused"
    response = api.call("PUT", actor, tenant=tenant, model=model, json=BYO)
    assert response.status_code == status, response.text
    assert response.json()["error"] in ("PermissionDenied", "Unauthorized", "NotFound")
    if status == 403:  # the permission is asked before the body is read: a bad body is refused the same way
        bad = api.call("PUT", actor, tenant=tenant, model=model, json={"trainer": {"kind": "image"}})
        assert bad.status_code == 403, bad.text
    if tenant == "acme":
        assert api.revision(model=model) == 0


def test_reading_another_tenants_definition_or_an_unknown_tenants_is_refused(api: Api) -> None:
    assert api.call("GET", "globex-admin").status_code == 403
    assert api.call("GET", None).status_code == 401
    unknown = api.call("GET", "root", tenant="ghost")
    assert unknown.status_code == 404 and "tenant 'ghost' does not exist" in unknown.json()["detail"]


def _with_trainer(**trainer: Any) -> dict[str, Any]:
    return {**BYO, "trainer": {**BYO["trainer"], **trainer}}


BAD_FIELDS = [
    (
        "tag-only image",
        _with_trainer(image="registry.example.com/acme/trainer:latest"),
        "trainer.image",
        "not pinned",
    ),
    (
        "empty argv",
        {**BYO, "trainer": {"kind": "command", "argv": []}},
        "trainer.argv",
        "the command is empty",
    ),
    (
        "duplicate feature",
        {**BYO, "features": [{"name": "rain_mm"}, {"name": "rain_mm"}]},
        "features",
        "rain_mm listed twice",
    ),
    (
        "target listed as a feature",
        {**BYO, "features": [{"name": "yield_t_ha"}]},
        "target",
        "'yield_t_ha' is also listed as a feature",
    ),
    (
        "unknown trainer",
        {**BYO, "trainer": {"kind": "notebook"}},
        "trainer.kind",
        "'notebook' is not a trainer",
    ),
    ("unknown field", {**BYO, "optimizer": "adam"}, "optimizer", "unknown field"),
    (
        "feature type",
        {**BYO, "features": [{"name": "rain_mm", "type": "float"}]},
        "features.0.type",
        "numeric",
    ),
    ("feature name", {**BYO, "features": [{"name": "rain mm"}]}, "features.0.name", "letters, digits"),
    ("loss", {**BYO, "loss": "mse"}, "loss", "'mae'"),
    ("a number as text", {**BYO, "max_model_mb": "200"}, "max_model_mb", "valid integer"),
    ("true for a number", _with_trainer(timeout_s=True), "trainer.timeout_s", "valid number"),
    ("cpu", _with_trainer(resources={"cpu": "lots"}), "trainer.resources.cpu", "CPU quantity"),
    ("memory", _with_trainer(resources={"memory": "4 gigs"}), "trainer.resources.memory", "memory quantity"),
    ("timeout", _with_trainer(timeout_s=8 * 86400), "trainer.timeout_s", "less than or equal"),
    ("nul in hyperparameters", {**BYO, "hyperparameters": {"a": "b\u0000"}}, "hyperparameters", "NUL"),
    (
        "features missing",
        {**BYO, "trainer": {"kind": "command", "argv": ["python"]}, "features": []},
        "features",
        "",
    ),
    ("reason too long", {**BYO, "reason": "x" * 501}, "reason", "at most 500"),
]


@pytest.mark.parametrize(
    ("body", "field", "says"), [c[1:] for c in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS]
)
def test_a_bad_field_is_422_naming_it_and_nothing_is_stored(
    api: Api, body: dict[str, Any], field: str, says: str
) -> None:
    response = api.call("PUT", "admin", model="bad-fields", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "InvalidInput"
    named = {".".join(p["loc"][1:]): p["msg"] for p in answer["errors"]}  # loc[0] is "body"
    assert field in named, answer
    assert says in named[field] and says in answer["detail"], answer
    assert api.revision(model="bad-fields") == 0


def test_every_bad_field_of_one_body_is_named_in_one_answer(api: Api) -> None:
    body = {
        "features": [{"name": "rain_mm"}, {"name": "rain_mm"}],
        "loss": "rmse",
        "trainer": {"kind": "image", "image": "trainer:latest", "resources": {"gpus": -1}},
        "max_model_mb": 0,
        "colour": "blue",
    }
    response = api.call("PUT", "admin", model="many-bad-fields", json=body)
    assert response.status_code == 422, response.text
    named = {".".join(p["loc"][1:]) for p in response.json()["errors"]}
    assert named == {"features", "loss", "trainer.image", "trainer.resources.gpus", "max_model_mb", "colour"}
    assert api.revision(model="many-bad-fields") == 0


def test_a_body_that_is_not_a_definition_or_too_large_is_refused_unread(api: Api) -> None:
    junk = httpx.put(
        api.url + PATH.format(tenant="acme", model="junk"),
        content=b"{not json",
        headers={"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "application/json"},
    )
    assert junk.status_code in (400, 422), junk.text
    too_large = api.call("PUT", "admin", model="junk", json={**BYO, "reason": "x" * MAX_DEFINITION_BYTES})
    assert too_large.status_code == 413 and too_large.json()["error"] == "ContentTooLarge"
    assert api.revision(model="junk") == 0


def test_a_bad_model_name_in_the_path_is_422(api: Api) -> None:
    response = api.call("PUT", "admin", model="-dash-first", json=BYO)
    assert response.status_code == 422 and "model_name" in response.json()["detail"]


def test_a_command_trainer_is_refused_over_the_api_since_it_would_run_on_the_workers_host(api: Api) -> None:
    body = {**BYO, "trainer": {"kind": "command", "argv": ["sh", "-c", "cat ~/.evolution/keys/*"]}}
    response = api.call("PUT", "admin", model="host-command", json=body)
    assert response.status_code == 403, response.text
    assert "only the platform's operator" in response.json()["detail"]
    assert "image trainer" in response.json()["detail"]
    assert api.revision(model="host-command") == 0

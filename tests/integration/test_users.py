"""Local users on SQLite and on a real PostgreSQL: argon2id hashes, sign-in, per-tenant roles, audited admin work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher
from argon2.profiles import get_default_parameters
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from evolution.governance.users import UserService
from evolution.registry.audit import load_chain, verify_chain
from evolution.registry.db import tenant_session
from evolution.registry.schema import AuditEntry, Base, User
from evolution.registry.tenants import TenantService
from evolution.security import Action, Principal, Role, authorize

ROOT = Principal(user="root", role=Role.ADMIN, tenants=("*",))
ACME_ADMIN = Principal.for_tenant("acme-boss", Role.ADMIN, "acme")
ACME_MANAGER = Principal.for_tenant("maria", Role.MANAGER, "acme")
ACME_VIEWER = Principal.for_tenant("vic", Role.VIEWER, "acme")
PASSWORD = "correct horse battery"


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    """Still argon2id, with a small cost so that the tests stay fast."""
    return PasswordHasher(time_cost=time_cost, memory_cost=8 * 1024, parallelism=1)


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8 * 1024, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified += 1
        return super().verify(hash, password)


@pytest.fixture
def factory(registry_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    tenants = TenantService(registry_factory)
    tenants.ensure_tenant(ROOT, "acme")
    tenants.ensure_tenant(ROOT, "globex")
    return registry_factory


@pytest.fixture
def users(factory: sessionmaker[Session]) -> UserService:
    return UserService(factory, hasher=cheap_hasher())


def stored_hash(factory: sessionmaker[Session], username: str) -> str:
    with factory() as session:
        return session.scalars(select(User.password_hash).where(User.username == username)).one()


def test_the_password_is_stored_only_as_an_argon2id_hash_with_the_default_parameters(
    factory: sessionmaker[Session],
) -> None:
    UserService(factory).add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme"])
    password_hash = stored_hash(factory, "alice")
    assert password_hash.startswith("$argon2id$")
    assert PASSWORD not in password_hash
    defaults = get_default_parameters()
    assert f"m={defaults.memory_cost},t={defaults.time_cost},p={defaults.parallelism}" in password_hash


def test_authenticate_returns_the_users_role_on_each_tenant(users: UserService) -> None:
    users.add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme"])
    users.grant(ROOT, "alice", Role.MANAGER, "globex")
    access = users.authenticate("Alice", PASSWORD)  # usernames are case-insensitive
    assert access.username == "alice"
    assert access.roles == {"acme": Role.VIEWER, "globex": Role.MANAGER}
    assert access.principal("acme") == Principal.for_tenant("alice", Role.VIEWER, "acme")
    assert access.tenants(["globex", "acme", "initech"]) == ["acme", "globex"]


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "disabled user"])
def test_sign_in_is_refused_with_one_message_for_wrong_unknown_and_disabled(
    users: UserService, case: str
) -> None:
    users.add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme"])
    username, password = "alice", PASSWORD
    if case == "wrong password":
        password = "not the password at all"
    elif case == "unknown user":
        username = "mallory"
    else:
        users.disable_user(ROOT, "alice")
    with pytest.raises(PermissionDenied, match=r"^invalid username or password$"):
        users.authenticate(username, password)


def test_an_unknown_user_costs_a_hash_verification_like_a_known_one(factory: sessionmaker[Session]) -> None:
    hasher = CountingHasher()
    users = UserService(factory, hasher=hasher)
    users.add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme"])
    for username in ("alice", "mallory"):
        before = hasher.verified
        with pytest.raises(PermissionDenied):
            users.authenticate(username, "not the password at all")
        assert hasher.verified - before == 1, username


def test_a_hash_made_with_old_parameters_is_renewed_at_the_next_sign_in(
    factory: sessionmaker[Session],
) -> None:
    UserService(factory, hasher=cheap_hasher(time_cost=1)).add_user(
        ROOT, "alice", PASSWORD, "viewer", ["acme"]
    )
    old = stored_hash(factory, "alice")
    assert ",t=1," in old
    UserService(factory, hasher=cheap_hasher(time_cost=2)).authenticate("alice", PASSWORD)
    renewed = stored_hash(factory, "alice")
    assert renewed != old and ",t=2," in renewed
    UserService(factory, hasher=cheap_hasher(time_cost=2)).authenticate("alice", PASSWORD)  # still signs in


def test_a_short_password_is_refused_with_a_clear_message(users: UserService) -> None:
    with pytest.raises(InvalidInput, match="password too short: it needs at least 12 characters"):
        users.add_user(ROOT, "alice", "short", Role.VIEWER, ["acme"])
    users.add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme"])
    with pytest.raises(InvalidInput, match="at least 12 characters"):
        users.set_password(ROOT, "alice", "elevenchars")


@pytest.mark.parametrize("principal", [ACME_MANAGER, ACME_VIEWER, Principal.system("acme")])
def test_only_admins_add_users(users: UserService, principal: Principal) -> None:
    with pytest.raises(PermissionDenied, match="manage_users"):
        users.add_user(principal, "alice", PASSWORD, Role.VIEWER, ["acme"])


def test_a_tenant_admin_adds_users_to_their_tenant_only(users: UserService) -> None:
    added = users.add_user(ACME_ADMIN, "alice", PASSWORD, Role.MANAGER, ["acme"])
    assert added.roles == {"acme": Role.MANAGER}
    with pytest.raises(PermissionDenied, match="globex"):
        users.add_user(ACME_ADMIN, "bob", PASSWORD, Role.VIEWER, ["acme", "globex"])
    with pytest.raises(PermissionDenied, match=r"'\*'"):
        users.add_user(ACME_ADMIN, "carol", PASSWORD, Role.VIEWER, ["*"])
    for refused in ("bob", "carol"):
        with pytest.raises(PermissionDenied, match="not a registered"):
            users.access_for(refused)
    users.add_user(ROOT, "carol", PASSWORD, Role.VIEWER, ["*"])


def test_a_tenant_admin_cannot_take_over_an_account_that_reaches_other_tenants(users: UserService) -> None:
    users.add_user(ROOT, "alice", PASSWORD, Role.ADMIN, ["acme", "globex"])
    with pytest.raises(PermissionDenied, match="globex"):
        users.set_password(ACME_ADMIN, "alice", "a brand new password")
    with pytest.raises(PermissionDenied, match="globex"):
        users.disable_user(ACME_ADMIN, "alice")
    users.authenticate("alice", PASSWORD)


def test_roles_are_per_tenant_and_the_tenants_own_grant_wins_over_star(users: UserService) -> None:
    users.add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme"])
    users.grant(ROOT, "alice", Role.MANAGER, "globex")
    access = users.authenticate("alice", PASSWORD)
    authorize(access.principal("globex"), Action.APPROVE, "globex")
    with pytest.raises(PermissionDenied, match="role viewer"):
        authorize(access.principal("acme"), Action.APPROVE, "acme")
    with pytest.raises(PermissionDenied, match="no role on tenant 'initech'"):
        access.principal("initech")
    with pytest.raises(PermissionDenied):  # a tenant's Principal never reaches another tenant
        authorize(access.principal("acme"), Action.VIEW, "globex")

    users.grant(ROOT, "alice", Role.ADMIN, "*")
    access = users.authenticate("alice", PASSWORD)
    assert access.role_for("initech") == Role.ADMIN
    assert access.role_for("acme") == Role.VIEWER
    assert access.principals()["*"] == Principal(user="alice", role=Role.ADMIN, tenants=("*",))
    users.revoke(ROOT, "alice", "*")
    assert users.authenticate("alice", PASSWORD).role_for("initech") is None


def test_the_system_role_and_unknown_tenants_are_refused(users: UserService) -> None:
    with pytest.raises(InvalidInput, match="reserved for the orchestrator"):
        users.add_user(ROOT, "robot", PASSWORD, Role.SYSTEM, ["acme"])
    with pytest.raises(InvalidInput, match="use viewer, manager or admin"):
        users.add_user(ROOT, "robot", PASSWORD, "superuser", ["acme"])
    with pytest.raises(NotFound, match="tenant 'initech' does not exist"):
        users.add_user(ROOT, "robot", PASSWORD, Role.VIEWER, ["initech"])
    with pytest.raises(InvalidInput, match="username"):
        users.add_user(ROOT, "system:orchestrator", PASSWORD, Role.VIEWER, ["acme"])


def test_a_duplicate_username_is_refused_clearly(users: UserService) -> None:
    users.add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme"])
    with pytest.raises(Conflict, match="username 'alice' already exists"):
        users.add_user(ROOT, "ALICE", "another long password", Role.ADMIN, ["globex"])
    assert users.authenticate("alice", PASSWORD).roles == {"acme": Role.VIEWER}


def test_every_change_is_audited_per_tenant_without_password_or_hash(
    factory: sessionmaker[Session], users: UserService
) -> None:
    users.add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme", "globex"])
    users.grant(ROOT, "alice", Role.ADMIN, "*")
    new_password = "an entirely new passphrase"
    users.set_password(ROOT, "alice", new_password)
    users.change_own_password("alice", new_password, "yet another passphrase")
    users.disable_user(ROOT, "alice")
    secrets = [PASSWORD, new_password, "yet another passphrase", stored_hash(factory, "alice"), "$argon2"]
    rows: list[AuditEntry] = []
    for tenant_id in ("acme", "globex", "*"):  # each tenant's chain, read as that tenant (row-level security)
        with tenant_session(factory, tenant_id) as session:
            rows += session.scalars(
                select(AuditEntry)
                .where(AuditEntry.tenant_id == tenant_id, AuditEntry.subject_type == "user")
                .order_by(AuditEntry.id)
            )
            assert verify_chain(tenant_id, load_chain(session, tenant_id)).ok
    rows.sort(key=lambda r: r.id)
    dumped = json.dumps([[r.details, r.actor, r.subject_id, r.action] for r in rows])
    assert all(secret not in dumped for secret in secrets)
    by_tenant = {t: [r.action for r in rows if r.tenant_id == t] for t in ("acme", "globex", "*")}
    assert by_tenant["acme"] == [
        "user.added",
        "user.password_set",
        "user.password_changed",
        "user.disabled",
    ]
    assert by_tenant["*"] == [
        "user.role_granted",
        "user.password_set",
        "user.password_changed",
        "user.disabled",
    ]


def test_trusted_header_mode_names_only_existing_enabled_users(users: UserService) -> None:
    users.add_user(ROOT, "alice", PASSWORD, Role.MANAGER, ["acme"])
    assert users.principal_for("alice", "acme") == Principal.for_tenant("alice", Role.MANAGER, "acme")
    assert set(users.principals_for("alice")) == {"acme"}
    with pytest.raises(PermissionDenied, match="not a registered, enabled user"):
        users.principal_for("mallory", "acme")
    users.disable_user(ROOT, "alice")
    with pytest.raises(PermissionDenied, match="not a registered, enabled user"):
        users.principal_for("alice", "acme")


def test_list_users_shows_a_tenant_admin_only_their_tenants_roles(users: UserService) -> None:
    users.add_user(ROOT, "alice", PASSWORD, Role.VIEWER, ["acme", "globex"])
    users.add_user(ROOT, "gus", PASSWORD, Role.MANAGER, ["globex"])
    users.add_user(ROOT, "root2", PASSWORD, Role.ADMIN, ["*"])
    seen = {u.username: u.roles for u in users.list_users(ACME_ADMIN)}
    assert seen == {"alice": {"acme": Role.VIEWER}, "root2": {"*": Role.ADMIN}}
    assert {u.username for u in users.list_users(ROOT)} == {"alice", "gus", "root2"}
    with pytest.raises(PermissionDenied):
        users.list_users(ACME_MANAGER)


def test_the_users_migration_matches_the_models(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        connection = session.connection()
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    ours = [d for d in diffs if "users" in repr(d) or "user_roles" in repr(d)]
    assert ours == []


def test_verify_walks_the_chain_of_grants_on_every_tenant(tmp_path: Path) -> None:
    from evolution.platform.settings import Settings
    from evolution.platform.verification import verify_all
    from evolution.platform.wiring import build_services

    services = build_services(Settings(home=tmp_path / "home"))
    root = Principal(user="root", role=Role.ADMIN, tenants=("*",))
    services.tenants.ensure_tenant(root, "acme")
    services.users.add_user(root, "olga", "a long enough password", "admin", ["*"])
    report = verify_all(services)
    star = [c for c in report.checks if c.tenant_id == "*"]
    assert report.ok and len(star) == 1 and star[0].kind == "audit-chain"
    services.close()

"""Local users of the dashboard: argon2id-hashed passwords and a role per tenant.

A user may hold different roles on different tenants (viewer of one, manager of another), or one role on every
tenant (``"*"``). A :class:`~evolution.security.Principal` holds a single role, so a signed-in user is a
:class:`UserAccess`; the dashboard picks a tenant first and then acts with ``access.principal(tenant)``.

Managing users is an admin's job (``Action.MANAGE_USERS``), checked for every tenant concerned, and every change
is audited in the chain of each tenant it touches (``"*"`` has its own chain). Passwords and hashes never reach
the audit log or the logs. API tokens, which act with a user's roles, are
:mod:`evolution.governance.tokens`; what both work on (finding a user, their grants, authorising over a user,
auditing a change to a user) is :mod:`evolution.governance.user_records`.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from evolution.governance.user_records import (
    audit_user_change,
    authorize_over_user,
    find_user,
    get_user,
    user_roles,
)
from evolution.registry.db import act_for_tenant, transaction
from evolution.registry.schema import Tenant, User, UserRole
from evolution.registry.tenants import check_tenant_id
from evolution.security import ALL_TENANTS, Action, Principal, Role, authorize
from evolution.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a cap keeps one request from costing a second of CPU
HUMAN_ROLES = (Role.VIEWER, Role.MANAGER, Role.ADMIN)
SIGN_IN_REFUSED = "invalid username or password"


def normalize_username(username: str) -> str:
    """Usernames are case-insensitive: "Maria" and "maria" are the same person."""
    return username.strip().lower()


def check_username(username: str) -> str:
    name = normalize_username(username)
    if not USERNAME_PATTERN.match(name):
        raise InvalidInput(
            f"username {username!r}: use 3-64 lowercase letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password too short: it needs at least {MIN_PASSWORD_LENGTH} characters (got {len(password)})"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    if not password.strip():
        raise InvalidInput("password is only whitespace")
    return password


def check_role(role: Role | str) -> Role:
    try:
        parsed = Role(role)
    except ValueError:
        raise InvalidInput(f"role {role!r}: use viewer, manager or admin") from None
    if parsed not in HUMAN_ROLES:
        raise InvalidInput(f"role {parsed}: reserved for the orchestrator; use viewer, manager or admin")
    return parsed


def check_grant_tenant(tenant_id: str) -> str:
    return tenant_id if tenant_id == ALL_TENANTS else check_tenant_id(tenant_id)


class UserView(BaseModel):
    """A user as others may see them: no password, no hash."""

    model_config = ConfigDict(frozen=True)

    id: str
    username: str
    created_at: datetime
    disabled_at: datetime | None
    roles: dict[str, Role]  # tenant id (or "*") -> role

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    @classmethod
    def of(cls, user: User, roles: Iterable[UserRole]) -> UserView:
        return cls(
            id=user.id,
            username=user.username,
            created_at=as_utc(user.created_at),
            disabled_at=as_utc(user.disabled_at) if user.disabled_at else None,
            roles={r.tenant_id: Role(r.role) for r in sorted(roles, key=lambda r: r.tenant_id)},
        )


class UserAccess(BaseModel):
    """What a signed-in (enabled) user may do: one role per tenant, turned into a Principal per tenant."""

    model_config = ConfigDict(frozen=True)

    username: str
    roles: dict[str, Role]

    def role_for(self, tenant_id: str) -> Role | None:
        """The tenant's own grant wins over a "*" grant, so an admin can narrow or widen one tenant."""
        if tenant_id in self.roles:
            return self.roles[tenant_id]
        return self.roles.get(ALL_TENANTS) if tenant_id != ALL_TENANTS else None

    def tenants(self, known_tenants: Iterable[str]) -> list[str]:
        """The tenants this user may open, among ``known_tenants`` (a "*" grant opens all of them)."""
        known = sorted(set(known_tenants))
        if ALL_TENANTS in self.roles:
            return known
        return [t for t in known if t in self.roles]

    def principal(self, tenant_id: str) -> Principal:
        """The Principal to act on ``tenant_id`` with; ``"*"`` only for a user holding a "*" grant."""
        role = self.role_for(tenant_id)
        if role is None:
            raise PermissionDenied(f"user {self.username!r} has no role on tenant {tenant_id!r}")
        return Principal(user=self.username, role=role, tenants=(tenant_id,))

    def principals(self) -> dict[str, Principal]:
        """One Principal per grant, keyed by tenant id (or "*")."""
        return {tenant: self.principal(tenant) for tenant in self.roles}

    @classmethod
    def of(cls, session: Session, user: User) -> UserAccess:
        """The access of ``user`` with their grants as the database holds them now (whether enabled is the caller's)."""
        return cls(username=user.username, roles=user_roles(session, user))


class UserService:
    def __init__(
        self,
        factory: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._factory = factory
        self._clock = clock
        # argon2id with the library's RFC 9106 defaults; tests pass a cheaper hasher.
        self._hasher = hasher or PasswordHasher()

    @cached_property
    def _decoy_hash(self) -> str:
        """A hash of a random password, verified against for unknown users so that they cost the same time."""
        return self._hasher.hash(secrets.token_urlsafe(24))

    # ----------------------------------------------------------------- management (admins)
    def add_user(
        self,
        principal: Principal,
        username: str,
        password: str,
        role: Role | str,
        tenants: Sequence[str],
    ) -> UserView:
        name = check_username(username)
        parsed_role = check_role(role)
        if not tenants:
            raise InvalidInput("a new user needs at least one tenant (or '*' for all tenants)")
        wanted = list(dict.fromkeys(check_grant_tenant(t) for t in tenants))
        for tenant_id in wanted:
            authorize(principal, Action.MANAGE_USERS, tenant_id)
        check_password(password)
        password_hash = self._hasher.hash(password)
        try:
            with transaction(self._factory) as session:
                self._require_tenants(session, wanted)
                if find_user(session, name) is not None:
                    raise Conflict(f"username {name!r} already exists")
                now = self._clock()
                user = User(
                    id=f"usr-{uuid.uuid4().hex[:20]}",
                    username=name,
                    password_hash=password_hash,
                    created_at=now,
                    disabled_at=None,
                )
                session.add(user)
                session.flush()
                roles = [UserRole(user_id=user.id, tenant_id=t, role=parsed_role.value) for t in wanted]
                session.add_all(roles)
                session.flush()
                for tenant_id in wanted:
                    audit_user_change(
                        session,
                        tenant_id,
                        principal,
                        "user.added",
                        name,
                        {"user_id": user.id, "role": parsed_role},
                        clock=self._clock,
                    )
                view = UserView.of(user, roles)
        except IntegrityError:
            # Two admins adding the same name at once: the unique index decides, the loser gets a clear error.
            raise Conflict(f"username {name!r} already exists") from None
        log.info("user %s added with role %s on %s by %s", name, parsed_role, wanted, principal.user)
        return view

    def grant(self, principal: Principal, username: str, role: Role | str, tenant: str) -> UserView:
        """Give (or change) the user's role on one tenant, or on every tenant with ``"*"``."""
        name = normalize_username(username)
        parsed_role = check_role(role)
        tenant_id = check_grant_tenant(tenant)
        authorize(principal, Action.MANAGE_USERS, tenant_id)
        with transaction(self._factory) as session:
            self._require_tenants(session, [tenant_id])
            user = get_user(session, name)
            existing = session.get(UserRole, (user.id, tenant_id))
            previous = existing.role if existing else None
            if existing is None:
                session.add(UserRole(user_id=user.id, tenant_id=tenant_id, role=parsed_role.value))
            else:
                existing.role = parsed_role.value
            session.flush()
            audit_user_change(
                session,
                tenant_id,
                principal,
                "user.role_granted",
                name,
                {"user_id": user.id, "role": parsed_role, "previous_role": previous},
                clock=self._clock,
            )
            view = self._view(session, user)
        log.info("user %s: role %s on %s granted by %s", name, parsed_role, tenant_id, principal.user)
        return view

    def revoke(self, principal: Principal, username: str, tenant: str) -> UserView:
        """Take away the user's role on one tenant (or the "*" grant)."""
        name = normalize_username(username)
        tenant_id = check_grant_tenant(tenant)
        authorize(principal, Action.MANAGE_USERS, tenant_id)
        with transaction(self._factory) as session:
            user = get_user(session, name)
            existing = session.get(UserRole, (user.id, tenant_id))
            if existing is None:
                raise NotFound(f"user {name!r} has no role on tenant {tenant_id!r}")
            previous = existing.role
            session.delete(existing)
            session.flush()
            audit_user_change(
                session,
                tenant_id,
                principal,
                "user.role_revoked",
                name,
                {"user_id": user.id, "previous_role": previous},
                clock=self._clock,
            )
            view = self._view(session, user)
        log.info("user %s: role on %s revoked by %s", name, tenant_id, principal.user)
        return view

    def set_password(self, principal: Principal, username: str, password: str) -> UserView:
        """An admin sets a user's password; the admin must manage every tenant the user holds a role on."""
        name = normalize_username(username)
        check_password(password)
        password_hash = self._hasher.hash(password)
        with transaction(self._factory) as session:
            user = get_user(session, name)
            tenants = authorize_over_user(session, principal, user)
            user.password_hash = password_hash
            session.flush()
            for tenant_id in tenants:
                audit_user_change(
                    session,
                    tenant_id,
                    principal,
                    "user.password_set",
                    name,
                    {"user_id": user.id},
                    clock=self._clock,
                )
            view = self._view(session, user)
        log.info("user %s: password set by %s", name, principal.user)
        return view

    def disable_user(self, principal: Principal, username: str) -> UserView:
        """The user can no longer sign in (nor be named by a trusted header); their history stays."""
        name = normalize_username(username)
        with transaction(self._factory) as session:
            user = get_user(session, name)
            tenants = authorize_over_user(session, principal, user)
            if user.disabled_at is None:
                user.disabled_at = self._clock()
                session.flush()
                for tenant_id in tenants:
                    audit_user_change(
                        session,
                        tenant_id,
                        principal,
                        "user.disabled",
                        name,
                        {"user_id": user.id},
                        clock=self._clock,
                    )
            view = self._view(session, user)
        log.info("user %s disabled by %s", name, principal.user)
        return view

    def list_users(self, principal: Principal, tenant: str | None = None) -> list[UserView]:
        """Users holding a role on the tenants the principal manages (or on ``tenant`` only).

        Each user shows only the roles on those tenants, plus any "*" grant (someone who can see every
        tenant can see this one: its admins should know).
        """
        scope = [tenant] if tenant is not None else list(principal.tenants)
        for tenant_id in scope:
            authorize(principal, Action.MANAGE_USERS, tenant_id)

        def visible(tenant_id: str) -> bool:
            if tenant is not None:
                return tenant_id in (tenant, ALL_TENANTS)
            return tenant_id == ALL_TENANTS or principal.covers(tenant_id)

        with self._factory() as session:
            users = list(session.scalars(select(User).order_by(User.username)))
            roles: dict[str, list[UserRole]] = {}
            for row in session.scalars(select(UserRole)):
                if visible(row.tenant_id):
                    roles.setdefault(row.user_id, []).append(row)
            return [UserView.of(u, roles[u.id]) for u in users if u.id in roles]

    # ----------------------------------------------------------------- sign-in
    def authenticate(self, username: str, password: str) -> UserAccess:
        """Check a password; refuse unknown, wrong and disabled alike, in about the same time.

        An unknown user is verified against a decoy hash so that the response time does not tell whether the
        name exists. When the hasher's parameters have changed since the hash was made, it is renewed.
        """
        decoy = self._decoy_hash  # computed up front, so the first call costs the same whoever it is for
        name = normalize_username(username)
        with self._factory() as session:
            user = find_user(session, name) if len(password) <= MAX_PASSWORD_LENGTH else None
            if user is None:
                self._verify(decoy, password[:MAX_PASSWORD_LENGTH])
                log.info("sign-in refused: unknown user or oversized password")
                raise PermissionDenied(SIGN_IN_REFUSED)
            stored_hash = user.password_hash
            matched = self._verify(stored_hash, password)
            if not matched or user.disabled_at is not None:
                log.info(
                    "sign-in refused for user %s (%s)", name, "disabled" if matched else "wrong password"
                )
                raise PermissionDenied(SIGN_IN_REFUSED)
            access = UserAccess.of(session, user)
            user_id = user.id
        if self._hasher.check_needs_rehash(stored_hash):
            self._rehash(user_id, stored_hash, password)
        return access

    def change_own_password(self, username: str, current_password: str, new_password: str) -> None:
        """Self-service: the user proves the current password, then sets a new one (audited per tenant)."""
        access = self.authenticate(username, current_password)
        check_password(new_password)
        password_hash = self._hasher.hash(new_password)
        with transaction(self._factory) as session:
            user = get_user(session, access.username)
            user.password_hash = password_hash
            session.flush()
            for tenant_id, role in user_roles(session, user).items():
                actor = Principal(user=user.username, role=role, tenants=(tenant_id,))
                audit_user_change(
                    session,
                    tenant_id,
                    actor,
                    "user.password_changed",
                    user.username,
                    {"user_id": user.id},
                    clock=self._clock,
                )
        log.info("user %s changed their password", access.username)

    def access_for(self, username: str) -> UserAccess:
        """Trusted-header mode (an authenticating proxy named the user): the roles of an existing, enabled user."""
        name = normalize_username(username)
        with self._factory() as session:
            user = find_user(session, name)
            if user is None or user.disabled_at is not None:
                raise PermissionDenied(f"user {name!r} is not a registered, enabled user")
            return UserAccess.of(session, user)

    def principal_for(self, username: str, tenant: str) -> Principal:
        """Trusted-header mode, once the tenant is chosen: read fresh, so a disable or revoke applies at once."""
        return self.access_for(username).principal(tenant)

    def principals_for(self, username: str) -> dict[str, Principal]:
        """Trusted-header mode: one Principal per grant of an existing, enabled user, keyed by tenant (or "*")."""
        return self.access_for(username).principals()

    # ----------------------------------------------------------------- internals
    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _rehash(self, user_id: str, old_hash: str, password: str) -> None:
        new_hash = self._hasher.hash(password)
        try:
            with transaction(self._factory) as session:
                user = session.get(User, user_id)
                # Only if nobody changed the password meanwhile.
                if user is not None and user.password_hash == old_hash:
                    user.password_hash = new_hash
        except SQLAlchemyError as error:
            # The sign-in itself succeeded; the renewal is retried at the next one.
            log.warning("could not renew the password hash of user %s: %s", user_id, type(error).__name__)
            return
        log.info("password hash of user %s renewed with the current parameters", user_id)

    def _view(self, session: Session, user: User) -> UserView:
        rows = session.scalars(select(UserRole).where(UserRole.user_id == user.id))
        return UserView.of(user, rows)

    @staticmethod
    def _require_tenants(session: Session, tenant_ids: Iterable[str]) -> None:
        for tenant_id in tenant_ids:
            if tenant_id == ALL_TENANTS:
                continue
            act_for_tenant(session, tenant_id)
            if session.get(Tenant, tenant_id) is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")

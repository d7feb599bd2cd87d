"""Local users of the dashboard: argon2id-hashed passwords and a role per tenant.

A user may hold different roles on different tenants (viewer of one, manager of another), or one role on every
tenant (``"*"``). A :class:`~evolution.security.Principal` holds a single role, so a signed-in user is a
:class:`UserAccess`; the dashboard picks a tenant first and then acts with ``access.principal(tenant)``.

Managing users is an admin's job (``Action.MANAGE_USERS``), checked for every tenant concerned, and every change
is audited in the chain of each tenant it touches (``"*"`` has its own chain). Passwords and hashes never reach
the audit log or the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from evolution.registry.audit import append_audit
from evolution.registry.db import act_for_tenant, transaction
from evolution.registry.schema import ApiToken, Tenant, User, UserRole
from evolution.registry.service import check_tenant_id
from evolution.security import ALL_TENANTS, Action, Principal, Role, authorize
from evolution.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a cap keeps one request from costing a second of CPU
HUMAN_ROLES = (Role.VIEWER, Role.MANAGER, Role.ADMIN)
SIGN_IN_REFUSED = "invalid username or password"

# API tokens: "evo_" (so that secret scanners recognise a leak), a public id, then 256 random bits (base64url).
TOKEN_PREFIX = "evo_"
TOKEN_PATTERN = re.compile(r"^evo_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
TOKEN_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
TOKEN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
MAX_TOKEN_TTL = timedelta(days=3660)
TOKEN_REFUSED = "invalid, expired or revoked API token"


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


def token_digest(token: str) -> str:
    """SHA-256 of the whole token: 256 random bits need no slow hash, and the table never holds a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_token_name(name: str) -> str:
    cleaned = name.strip()
    if not TOKEN_NAME_PATTERN.match(cleaned):
        raise InvalidInput(
            f"token name {name!r}: use 1-64 letters, digits, spaces, '.', '_', '-' or '@', "
            "starting with a letter or digit"
        )
    return cleaned


def check_token_ttl(ttl: timedelta | None) -> timedelta | None:
    if ttl is not None and not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise InvalidInput(f"token lifetime {ttl}: must be positive and at most {MAX_TOKEN_TTL.days} days")
    return ttl


class TokenView(BaseModel):
    """An API token as an administrator may see it: never the token itself, nor its digest."""

    model_config = ConfigDict(frozen=True)

    id: str
    username: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    @classmethod
    def of(cls, token: ApiToken, username: str) -> TokenView:
        return cls(
            id=token.id,
            username=username,
            name=token.name,
            created_at=as_utc(token.created_at),
            expires_at=as_utc(token.expires_at) if token.expires_at else None,
            revoked_at=as_utc(token.revoked_at) if token.revoked_at else None,
        )


class IssuedToken(BaseModel):
    """A new token: ``token`` is shown to its holder once and stored nowhere (only its digest is)."""

    model_config = ConfigDict(frozen=True)

    view: TokenView
    token: SecretStr


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
                if self._find(session, name) is not None:
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
                    self._audit(
                        session,
                        tenant_id,
                        principal,
                        "user.added",
                        name,
                        {"user_id": user.id, "role": parsed_role},
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
            user = self._get(session, name)
            existing = session.get(UserRole, (user.id, tenant_id))
            previous = existing.role if existing else None
            if existing is None:
                session.add(UserRole(user_id=user.id, tenant_id=tenant_id, role=parsed_role.value))
            else:
                existing.role = parsed_role.value
            session.flush()
            self._audit(
                session,
                tenant_id,
                principal,
                "user.role_granted",
                name,
                {"user_id": user.id, "role": parsed_role, "previous_role": previous},
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
            user = self._get(session, name)
            existing = session.get(UserRole, (user.id, tenant_id))
            if existing is None:
                raise NotFound(f"user {name!r} has no role on tenant {tenant_id!r}")
            previous = existing.role
            session.delete(existing)
            session.flush()
            self._audit(
                session,
                tenant_id,
                principal,
                "user.role_revoked",
                name,
                {"user_id": user.id, "previous_role": previous},
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
            user = self._get(session, name)
            tenants = self._authorize_over_user(session, principal, user)
            user.password_hash = password_hash
            session.flush()
            for tenant_id in tenants:
                self._audit(session, tenant_id, principal, "user.password_set", name, {"user_id": user.id})
            view = self._view(session, user)
        log.info("user %s: password set by %s", name, principal.user)
        return view

    def disable_user(self, principal: Principal, username: str) -> UserView:
        """The user can no longer sign in (nor be named by a trusted header); their history stays."""
        name = normalize_username(username)
        with transaction(self._factory) as session:
            user = self._get(session, name)
            tenants = self._authorize_over_user(session, principal, user)
            if user.disabled_at is None:
                user.disabled_at = self._clock()
                session.flush()
                for tenant_id in tenants:
                    self._audit(session, tenant_id, principal, "user.disabled", name, {"user_id": user.id})
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
            user = self._find(session, name) if len(password) <= MAX_PASSWORD_LENGTH else None
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
            access = UserAccess(username=user.username, roles=self._roles(session, user))
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
            user = self._get(session, access.username)
            user.password_hash = password_hash
            session.flush()
            for tenant_id, role in self._roles(session, user).items():
                actor = Principal(user=user.username, role=role, tenants=(tenant_id,))
                self._audit(
                    session, tenant_id, actor, "user.password_changed", user.username, {"user_id": user.id}
                )
        log.info("user %s changed their password", access.username)

    def access_for(self, username: str) -> UserAccess:
        """Trusted-header mode (an authenticating proxy named the user): the roles of an existing, enabled user."""
        name = normalize_username(username)
        with self._factory() as session:
            user = self._find(session, name)
            if user is None or user.disabled_at is not None:
                raise PermissionDenied(f"user {name!r} is not a registered, enabled user")
            return UserAccess(username=user.username, roles=self._roles(session, user))

    def principal_for(self, username: str, tenant: str) -> Principal:
        """Trusted-header mode, once the tenant is chosen: read fresh, so a disable or revoke applies at once."""
        return self.access_for(username).principal(tenant)

    def principals_for(self, username: str) -> dict[str, Principal]:
        """Trusted-header mode: one Principal per grant of an existing, enabled user, keyed by tenant (or "*")."""
        return self.access_for(username).principals()

    # ----------------------------------------------------------------- API tokens
    def create_token(
        self, principal: Principal, username: str, name: str, ttl: timedelta | None = None
    ) -> IssuedToken:
        """Admin: a bearer token for the HTTP API that acts with the user's roles (audited, never the token).

        Like a password change, it needs MANAGE_USERS on every tenant the user holds a role on.
        """
        user_name = normalize_username(username)
        token_name = check_token_name(name)
        check_token_ttl(ttl)
        token_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        with transaction(self._factory) as session:
            user = self._get(session, user_name)
            tenants = self._authorize_over_user(session, principal, user)
            if user.disabled_at is not None:
                raise Conflict(f"user {user_name!r} is disabled: a token for them would be refused anyway")
            now = self._clock()
            row = ApiToken(
                id=token_id,
                user_id=user.id,
                name=token_name,
                token_hash=token_digest(token),
                created_at=now,
                expires_at=now + ttl if ttl is not None else None,
                revoked_at=None,
            )
            session.add(row)
            session.flush()
            view = TokenView.of(row, user.username)
            details = {
                "user_id": user.id,
                "token_id": token_id,
                "token_name": token_name,
                "expires_at": view.expires_at.isoformat() if view.expires_at else None,
            }
            for tenant_id in tenants or [ALL_TENANTS]:
                self._audit(session, tenant_id, principal, "user.token_created", user.username, details)
        log.info(
            "API token %s (%s) for user %s created by %s", token_id, token_name, user_name, principal.user
        )
        return IssuedToken(view=view, token=SecretStr(token))

    def revoke_token(self, principal: Principal, token_id: str) -> TokenView:
        """Admin: the token is refused from now on (a serving process that cached it stops within its TTL)."""
        with transaction(self._factory) as session:
            row = session.get(ApiToken, token_id) if TOKEN_ID_PATTERN.match(token_id) else None
            if row is None:
                # Only admins may learn whether a token exists.
                for tenant_id in principal.tenants:
                    authorize(principal, Action.MANAGE_USERS, tenant_id)
                raise NotFound(f"API token {token_id!r} does not exist")
            user = session.get(User, row.user_id)
            assert user is not None  # foreign key
            tenants = self._authorize_over_user(session, principal, user)
            if row.revoked_at is None:
                row.revoked_at = self._clock()
                session.flush()
                details = {"user_id": user.id, "token_id": row.id, "token_name": row.name}
                for tenant_id in tenants or [ALL_TENANTS]:
                    self._audit(session, tenant_id, principal, "user.token_revoked", user.username, details)
            view = TokenView.of(row, user.username)
        log.info("API token %s of user %s revoked by %s", token_id, view.username, principal.user)
        return view

    def list_tokens(self, principal: Principal, username: str | None = None) -> list[TokenView]:
        """Admin: the tokens of ``username``, or of every user whose tenants the principal all manages."""
        for tenant_id in principal.tenants:
            authorize(principal, Action.MANAGE_USERS, tenant_id)
        with self._factory() as session:
            if username is not None:
                users = [self._get(session, normalize_username(username))]
            else:
                users = list(session.scalars(select(User).order_by(User.username)))
            views: list[TokenView] = []
            for user in users:
                try:
                    self._authorize_over_user(session, principal, user)
                except PermissionDenied:
                    if username is not None:
                        raise
                    continue
                rows = session.scalars(
                    select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)
                )
                views.extend(TokenView.of(row, user.username) for row in rows)
            return views

    def authenticate_token(self, token: str) -> UserAccess:
        """The roles of the token's user; unknown, malformed, revoked, expired and disabled are refused alike.

        The digest is compared in constant time. The caller (the HTTP layer) answers 401 to every refusal.
        """
        match = TOKEN_PATTERN.match(token) if len(token) <= 100 else None
        if match is None:
            raise PermissionDenied(TOKEN_REFUSED)
        digest = token_digest(token)
        now = self._clock()
        with self._factory() as session:
            row = session.get(ApiToken, match[1])
            stored = row.token_hash if row is not None else "0" * 64
            if row is None or not hmac.compare_digest(stored.encode(), digest.encode()):
                log.info("API token refused: unknown token")
                raise PermissionDenied(TOKEN_REFUSED)
            user = session.get(User, row.user_id)
            assert user is not None  # foreign key
            problem = None
            if row.revoked_at is not None:
                problem = "revoked"
            elif row.expires_at is not None and as_utc(row.expires_at) <= now:
                problem = "expired"
            elif user.disabled_at is not None:
                problem = "user disabled"
            if problem is not None:
                log.info("API token %s of user %s refused: %s", row.id, user.username, problem)
                raise PermissionDenied(TOKEN_REFUSED)
            return UserAccess(username=user.username, roles=self._roles(session, user))

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

    @staticmethod
    def _find(session: Session, name: str) -> User | None:
        return session.scalar(select(User).where(User.username == name))

    def _get(self, session: Session, name: str) -> User:
        user = self._find(session, name)
        if user is None:
            raise NotFound(f"user {name!r} does not exist")
        return user

    @staticmethod
    def _roles(session: Session, user: User) -> dict[str, Role]:
        rows = session.scalars(
            select(UserRole).where(UserRole.user_id == user.id).order_by(UserRole.tenant_id)
        )
        return {r.tenant_id: Role(r.role) for r in rows}

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

    def _authorize_over_user(self, session: Session, principal: Principal, user: User) -> list[str]:
        """Changing a user's password or state needs MANAGE_USERS on every tenant they hold a role on.

        Otherwise the admin of one tenant could take over an account that also reaches other tenants.
        """
        tenants = list(self._roles(session, user))
        if not tenants:
            # A user with no role left reaches no tenant; only an admin of every tenant may touch it.
            authorize(principal, Action.MANAGE_USERS, ALL_TENANTS)
        for tenant_id in tenants:
            authorize(principal, Action.MANAGE_USERS, tenant_id)
        return tenants

    def _audit(
        self,
        session: Session,
        tenant_id: str,
        principal: Principal,
        action: str,
        username: str,
        details: dict[str, Any],
    ) -> None:
        act_for_tenant(session, tenant_id)
        if tenant_id == ALL_TENANTS and session.get_bind().dialect.name == "postgresql":
            # "*" has no tenants row for append_audit to lock: serialise its chain with an advisory lock.
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext('evolution-audit-all-tenants'))"))
        append_audit(
            session,
            tenant_id=tenant_id,
            principal=principal,
            action=action,
            subject_type="user",
            subject_id=username,
            at=self._clock(),
            details={k: (str(v) if isinstance(v, Role) else v) for k, v in details.items()},
        )

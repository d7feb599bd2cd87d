"""API tokens: bearer tokens for the HTTP API that act with the roles of a local user.

A token is ``evo_`` (so that secret scanners recognise a leak), a public id, then 256 random bits (base64url). It
is shown to its holder once; the table keeps only its SHA-256. Creating, listing and revoking tokens is an admin's
job (``Action.MANAGE_USERS`` on every tenant the token's user reaches), audited in the chain of each of those
tenants without the token. Checking a token (:meth:`TokenService.authenticate_token`) gives the user's
:class:`~evolution.governance.users.UserAccess`, read fresh.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from evolution.governance.user_records import audit_user_change, authorize_over_user, get_user
from evolution.governance.users import UserAccess, normalize_username
from evolution.registry.db import transaction
from evolution.registry.schema import ApiToken, User
from evolution.security import ALL_TENANTS, Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "evo_"
TOKEN_PATTERN = re.compile(r"^evo_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
TOKEN_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
TOKEN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
MAX_TOKEN_TTL = timedelta(days=3660)
TOKEN_REFUSED = "invalid, expired or revoked API token"


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


class TokenService:
    def __init__(self, factory: sessionmaker[Session], clock: Callable[[], datetime] = utcnow) -> None:
        self._factory = factory
        self._clock = clock

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
            user = get_user(session, user_name)
            tenants = authorize_over_user(session, principal, user)
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
                audit_user_change(
                    session,
                    tenant_id,
                    principal,
                    "user.token_created",
                    user.username,
                    details,
                    clock=self._clock,
                )
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
            tenants = authorize_over_user(session, principal, user)
            if row.revoked_at is None:
                row.revoked_at = self._clock()
                session.flush()
                details = {"user_id": user.id, "token_id": row.id, "token_name": row.name}
                for tenant_id in tenants or [ALL_TENANTS]:
                    audit_user_change(
                        session,
                        tenant_id,
                        principal,
                        "user.token_revoked",
                        user.username,
                        details,
                        clock=self._clock,
                    )
            view = TokenView.of(row, user.username)
        log.info("API token %s of user %s revoked by %s", token_id, view.username, principal.user)
        return view

    def list_tokens(self, principal: Principal, username: str | None = None) -> list[TokenView]:
        """Admin: the tokens of ``username``, or of every user whose tenants the principal all manages."""
        for tenant_id in principal.tenants:
            authorize(principal, Action.MANAGE_USERS, tenant_id)
        with self._factory() as session:
            if username is not None:
                users = [get_user(session, normalize_username(username))]
            else:
                users = list(session.scalars(select(User).order_by(User.username)))
            views: list[TokenView] = []
            for user in users:
                try:
                    authorize_over_user(session, principal, user)
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
            return UserAccess.of(session, user)

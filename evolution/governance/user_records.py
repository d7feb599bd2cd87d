"""The user records that :mod:`~evolution.governance.users` and :mod:`~evolution.governance.tokens` both work on.

Finding a user by name, reading their grants, checking that a principal may act over a user (``MANAGE_USERS`` on
every tenant the user reaches) and auditing a change to a user in a tenant's chain (``"*"`` has its own chain).
Plain functions over an open session: the services own their transactions and their clocks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from evolution.errors import NotFound
from evolution.registry.audit import append_audit
from evolution.registry.db import act_for_tenant
from evolution.registry.schema import User, UserRole
from evolution.security import ALL_TENANTS, Action, Principal, Role, authorize


def find_user(session: Session, name: str) -> User | None:
    """The user called ``name`` (already normalised), if any."""
    return session.scalar(select(User).where(User.username == name))


def get_user(session: Session, name: str) -> User:
    user = find_user(session, name)
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    return user


def user_roles(session: Session, user: User) -> dict[str, Role]:
    """The user's grants as the database holds them now: tenant id (or "*") -> role."""
    rows = session.scalars(select(UserRole).where(UserRole.user_id == user.id).order_by(UserRole.tenant_id))
    return {r.tenant_id: Role(r.role) for r in rows}


def authorize_over_user(session: Session, principal: Principal, user: User) -> list[str]:
    """Changing a user's password or state needs MANAGE_USERS on every tenant they hold a role on.

    Otherwise the admin of one tenant could take over an account that also reaches other tenants.
    """
    tenants = list(user_roles(session, user))
    if not tenants:
        # A user with no role left reaches no tenant; only an admin of every tenant may touch it.
        authorize(principal, Action.MANAGE_USERS, ALL_TENANTS)
    for tenant_id in tenants:
        authorize(principal, Action.MANAGE_USERS, tenant_id)
    return tenants


def audit_user_change(
    session: Session,
    tenant_id: str,
    principal: Principal,
    action: str,
    username: str,
    details: dict[str, Any],
    *,
    clock: Callable[[], datetime],
) -> None:
    """Append ``action`` on user ``username`` to the chain of ``tenant_id``, at the time ``clock`` reads."""
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
        at=clock(),
        details={k: (str(v) if isinstance(v, Role) else v) for k, v in details.items()},
    )

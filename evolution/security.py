"""Principals, roles and the one permission table every service action is checked against.

At the top of evolution/ because every room's services authorize against this table (users and tokens, which
authenticate people, are governance's); it imports only errors.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from evolution.errors import PermissionDenied


class Role(StrEnum):
    VIEWER = "viewer"  # ROLE_AGRONOMIST
    MANAGER = "manager"  # ROLE_MANAGER
    ADMIN = "admin"  # ROLE_ADMIN
    SYSTEM = "system"  # the orchestrator acting on a tenant's behalf (workflows, ingestion API)


class Action(StrEnum):
    VIEW = "view"
    PREDICT = "predict"
    INGEST_EVENTS = "ingest_events"
    CREATE_SNAPSHOT = "create_snapshot"
    WRITE_DRIFT_REPORT = "write_drift_report"
    START_RETRAINING = "start_retraining"
    REGISTER_VERSION = "register_version"
    TRANSITION = "transition"
    APPROVE = "approve"
    REJECT = "reject"
    FORCE_ROLLBACK = "force_rollback"
    RESET_BASELINE = "reset_baseline"
    SET_QUOTA = "set_quota"
    MANAGE_TENANT = "manage_tenant"
    REGISTER_SOURCE_KEY = "register_source_key"
    RECORD_USAGE = "record_usage"
    NOTIFY = "notify"
    MANAGE_USERS = "manage_users"
    ACKNOWLEDGE_RESTORE = "acknowledge_restore"
    DEFINE_MODEL = "define_model"
    ACCEPT_SNAPSHOT = "accept_snapshot"
    WATCH_ROLLBACK = "watch_rollback"


R = Role
PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.VIEW: frozenset({R.VIEWER, R.MANAGER, R.ADMIN, R.SYSTEM}),
    Action.PREDICT: frozenset({R.VIEWER, R.MANAGER, R.ADMIN, R.SYSTEM}),
    Action.INGEST_EVENTS: frozenset({R.ADMIN, R.SYSTEM}),
    Action.CREATE_SNAPSHOT: frozenset({R.ADMIN, R.SYSTEM}),
    Action.WRITE_DRIFT_REPORT: frozenset({R.ADMIN, R.SYSTEM}),
    Action.START_RETRAINING: frozenset({R.MANAGER, R.ADMIN, R.SYSTEM}),
    Action.REGISTER_VERSION: frozenset({R.ADMIN, R.SYSTEM}),
    Action.TRANSITION: frozenset({R.ADMIN, R.SYSTEM}),
    Action.APPROVE: frozenset({R.MANAGER, R.ADMIN}),
    Action.REJECT: frozenset({R.MANAGER, R.ADMIN}),
    Action.FORCE_ROLLBACK: frozenset({R.ADMIN}),
    Action.RESET_BASELINE: frozenset({R.ADMIN}),
    Action.SET_QUOTA: frozenset({R.ADMIN}),
    Action.MANAGE_TENANT: frozenset({R.ADMIN}),
    Action.REGISTER_SOURCE_KEY: frozenset({R.ADMIN}),
    Action.RECORD_USAGE: frozenset({R.ADMIN, R.SYSTEM}),
    Action.NOTIFY: frozenset({R.ADMIN, R.SYSTEM}),
    Action.MANAGE_USERS: frozenset({R.ADMIN}),
    # Supersedes signed audit checkpoints after a restore to an earlier point: tamper evidence, so admins only.
    Action.ACKNOWLEDGE_RESTORE: frozenset({R.ADMIN}),
    # Says what trains the tenant's model and so what runs on the cluster: admins only.
    Action.DEFINE_MODEL: frozenset({R.ADMIN}),
    # Lets a retraining train on a window whose data-quality checks fired: admins only.
    Action.ACCEPT_SNAPSHOT: frozenset({R.ADMIN}),
    # The post-promotion watch restores the previous champion when its harm test fires: the orchestrator only
    # (a person uses FORCE_ROLLBACK, which needs no test).
    Action.WATCH_ROLLBACK: frozenset({R.SYSTEM}),
}

ALL_TENANTS = "*"


class Principal(BaseModel):
    """Who acts: a user (or the system), the role they hold, and the tenants they hold it for."""

    model_config = ConfigDict(frozen=True)

    user: str
    role: Role
    tenants: tuple[str, ...]

    @classmethod
    def for_tenant(cls, user: str, role: Role | str, tenant: str) -> Principal:
        return cls(user=user, role=Role(role), tenants=(tenant,))

    @classmethod
    def system(cls, tenant: str, component: str = "orchestrator") -> Principal:
        return cls(user=f"system:{component}", role=Role.SYSTEM, tenants=(tenant,))

    def covers(self, tenant: str) -> bool:
        return ALL_TENANTS in self.tenants or tenant in self.tenants


def authorize(principal: Principal | None, action: Action, tenant: str) -> Principal:
    """Refuse unless the principal's role may do ``action`` and the principal belongs to ``tenant``."""
    if principal is None:
        raise PermissionDenied(f"{action}: anonymous callers may not act on tenant {tenant!r}")
    if principal.role not in PERMISSIONS[action]:
        raise PermissionDenied(f"{action}: role {principal.role} may not do this (user {principal.user!r})")
    if not principal.covers(tenant):
        raise PermissionDenied(f"{action}: user {principal.user!r} does not belong to tenant {tenant!r}")
    return principal

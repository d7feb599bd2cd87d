"""`evolution users`: dashboard users, their passwords and their role per tenant."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from evolution.cli.context import friendly_errors, operator, services, table
from evolution.errors import InvalidInput
from evolution.security import Action, authorize

users_app = typer.Typer(help="Dashboard users and their role per tenant.", no_args_is_help=True)

RoleOpt = Annotated[str, typer.Option("--role", "-r", help="viewer, manager or admin.")]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line; only the line ending is removed (spaces inside and around a password are part of it).
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        raise InvalidInput("no terminal to ask for the password: pipe it in with --password-stdin")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
@friendly_errors
def users_add(
    username: Annotated[str, typer.Argument(help="3-64 lowercase letters, digits, '.', '_', '-' or '@'.")],
    role: RoleOpt,
    tenant: Annotated[
        list[str], typer.Option("--tenant", "-t", help="Tenant id, or '*' for all tenants (repeatable).")
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
) -> None:
    """Admin: create a user with a role on one or more tenants (asks for the password twice)."""
    svc = services()
    principal = operator(svc.settings)
    for tenant_id in tenant:  # refuse before asking for a password the operator may not set
        authorize(principal, Action.MANAGE_USERS, tenant_id)
    password = _read_password(password_stdin)
    user = svc.users.add_user(principal, username, password, role, tenant)
    grants = ", ".join(f"{r} of {t}" for t, r in user.roles.items())
    typer.echo(f"user {user.username} added: {grants}")


@users_app.command("list")
@friendly_errors
def users_list(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant's users.")] = None,
) -> None:
    """Admin: users with their role on each tenant you manage."""
    svc = services()
    rows = [
        {
            "username": user.username,
            "tenant": tenant_id,
            "role": str(role),
            "status": "enabled" if user.enabled else "disabled",
            "created": user.created_at.isoformat(timespec="seconds"),
        }
        for user in svc.users.list_users(operator(svc.settings), tenant)
        for tenant_id, role in user.roles.items()
    ]
    typer.echo(table(rows, ["username", "tenant", "role", "status", "created"]))


@users_app.command("grant")
@friendly_errors
def users_grant(
    username: Annotated[str, typer.Argument(help="An existing user.")],
    role: RoleOpt,
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant id, or '*' for all tenants.")],
) -> None:
    """Admin: give a user a role on a tenant (replaces the role they had there)."""
    svc = services()
    user = svc.users.grant(operator(svc.settings), username, role, tenant)
    typer.echo(f"user {user.username} is now {user.roles[tenant]} of {tenant}")


@users_app.command("revoke")
@friendly_errors
def users_revoke(
    username: Annotated[str, typer.Argument(help="An existing user.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant id, or '*'.")],
) -> None:
    """Admin: take away a user's role on a tenant."""
    svc = services()
    user = svc.users.revoke(operator(svc.settings), username, tenant)
    typer.echo(f"user {user.username} no longer has a role on {tenant}")


@users_app.command("disable")
@friendly_errors
def users_disable(username: Annotated[str, typer.Argument(help="An existing user.")]) -> None:
    """Admin: the user can no longer sign in; their history stays."""
    svc = services()
    user = svc.users.disable_user(operator(svc.settings), username)
    typer.echo(f"user {user.username} disabled")


@users_app.command("set-password")
@friendly_errors
def users_set_password(
    username: Annotated[str, typer.Argument(help="An existing user.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
) -> None:
    """Admin: set a user's password (you must manage every tenant the user has a role on)."""
    svc = services()
    principal = operator(svc.settings)
    # Refuse a viewer before asking; the service then checks every tenant the user holds a role on.
    for tenant_id in principal.tenants:
        authorize(principal, Action.MANAGE_USERS, tenant_id)
    password = _read_password(password_stdin)
    user = svc.users.set_password(principal, username, password)
    typer.echo(f"password of {user.username} set")

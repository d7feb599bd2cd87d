"""`evolution users`: dashboard users, their passwords and their role per tenant."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated

import typer

from evolution.cli.context import echo_json, friendly_errors, operator, services, table
from evolution.errors import InvalidInput
from evolution.security import Action, authorize
from evolution.timeutil import utcnow

users_app = typer.Typer(help="Dashboard users and their role per tenant.", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens: bearer tokens for the HTTP API that act with a user's roles.", no_args_is_help=True
)
users_app.add_typer(token_app, name="token")

RoleOpt = Annotated[str, typer.Option("--role", "-r", help="viewer, manager or admin.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


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
    as_json: JsonOpt = False,
) -> None:
    """Admin: users with their role on each tenant you manage."""
    svc = services()
    users = svc.users.list_users(operator(svc.settings), tenant)
    if as_json:
        echo_json([{**u.model_dump(mode="json"), "enabled": u.enabled} for u in users])
        return
    rows = [
        {
            "username": user.username,
            "tenant": tenant_id,
            "role": str(role),
            "status": "enabled" if user.enabled else "disabled",
            "created": user.created_at.isoformat(timespec="seconds"),
        }
        for user in users
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


@token_app.command("create")
@friendly_errors
def token_create(
    username: Annotated[str, typer.Argument(help="The user the token acts for (with that user's roles).")],
    name: Annotated[str, typer.Option("--name", "-n", help="What the token is for, e.g. 'field-gateway'.")],
    ttl_days: Annotated[
        float | None, typer.Option("--ttl-days", help="Expire after this many days (default: never).")
    ] = None,
) -> None:
    """Admin: a new API token. It is printed once, on stdout, and stored nowhere (only its SHA-256 is)."""
    svc = services()
    try:
        ttl = timedelta(days=ttl_days) if ttl_days is not None else None
    except (OverflowError, ValueError):
        raise InvalidInput(f"--ttl-days {ttl_days}: not a usable number of days") from None
    issued = svc.tokens.create_token(operator(svc.settings), username, name, ttl)
    view = issued.view
    expires = view.expires_at.isoformat(timespec="seconds") if view.expires_at else "never"
    typer.echo(
        f"API token {view.id} ({view.name}) for {view.username}, expires {expires}. "
        "Store it now: it is not shown again.",
        err=True,
    )
    typer.echo(issued.token.get_secret_value())


@token_app.command("list")
@friendly_errors
def token_list(
    username: Annotated[str | None, typer.Argument(help="Only this user's tokens.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Admin: API tokens (never the tokens themselves) of the users you manage."""
    svc = services()
    now = utcnow()
    tokens = svc.tokens.list_tokens(operator(svc.settings), username)
    if as_json:
        echo_json([{**t.model_dump(mode="json"), "status": t.status(now)} for t in tokens])
        return
    rows = [
        {
            "id": t.id,
            "username": t.username,
            "name": t.name,
            "status": t.status(now),
            "created": t.created_at.isoformat(timespec="seconds"),
            "expires": t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never",
        }
        for t in tokens
    ]
    typer.echo(table(rows, ["id", "username", "name", "status", "created", "expires"]))


@token_app.command("revoke")
@friendly_errors
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `token list`).")],
) -> None:
    """Admin: refuse the token from now on (serving processes stop accepting it within a minute)."""
    svc = services()
    view = svc.tokens.revoke_token(operator(svc.settings), token_id)
    typer.echo(f"API token {view.id} ({view.name}) of {view.username} revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")

"""`evolution users` as an operator runs it: add with a piped password, list, grant, disable; a viewer is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

from argon2 import PasswordHasher

from evolution.governance.users import UserService
from evolution.registry.db import make_engine, make_session_factory
from evolution.security import Role
from tests.e2e import conftest as e2e

PASSWORD = "a long enough passphrase"


def evolution(
    env: dict[str, str], *args: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [e2e.EVOLUTION, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def rows(listing: str) -> list[list[str]]:
    return [line.split() for line in listing.splitlines()[1:] if line.strip()]


def test_users_add_with_password_stdin_then_list_grant_and_disable(cli_env: dict[str, str]) -> None:
    assert evolution(cli_env, "tenant", "create", "acme").returncode == 0
    assert evolution(cli_env, "tenant", "create", "globex").returncode == 0
    added = evolution(
        cli_env, "users", "add", "alice", "--role", "manager", "--tenant", "acme", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "user alice added: manager of acme" in added.stdout
    assert PASSWORD not in added.stdout + added.stderr

    granted = evolution(cli_env, "users", "grant", "alice", "--role", "viewer", "--tenant", "globex")
    assert granted.returncode == 0, granted.stderr
    listing = evolution(cli_env, "users", "list")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[0].split() == ["USERNAME", "TENANT", "ROLE", "STATUS", "CREATED"]
    assert [r[:4] for r in rows(listing.stdout)] == [
        ["alice", "acme", "manager", "enabled"],
        ["alice", "globex", "viewer", "enabled"],
    ]

    # The piped line (without its line ending) is the password the dashboard will check.
    home = Path(cli_env["EVOLUTION_HOME"])
    engine = make_engine(f"sqlite:///{(home / 'registry.db').resolve()}")
    try:
        users = UserService(make_session_factory(engine), hasher=PasswordHasher())
        assert users.authenticate("alice", PASSWORD).roles == {"acme": Role.MANAGER, "globex": Role.VIEWER}
    finally:
        engine.dispose()

    assert evolution(cli_env, "users", "disable", "alice").returncode == 0
    assert [r[3] for r in rows(evolution(cli_env, "users", "list", "--tenant", "acme").stdout)] == [
        "disabled"
    ]


def test_bad_input_is_a_clear_error(cli_env: dict[str, str]) -> None:
    assert evolution(cli_env, "tenant", "create", "acme").returncode == 0
    short = evolution(
        cli_env, "users", "add", "bob", "--role", "viewer", "--tenant", "acme", "--password-stdin",
        stdin="short\n",
    )  # fmt: skip
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    system = evolution(
        cli_env, "users", "add", "bob", "--role", "system", "--tenant", "acme", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert system.returncode == 2 and "use viewer, manager or admin" in system.stderr
    for _ in range(2):
        again = evolution(
            cli_env, "users", "add", "bob", "--role", "viewer", "--tenant", "acme", "--password-stdin",
            stdin=PASSWORD + "\n",
        )  # fmt: skip
    assert again.returncode == 1 and "username 'bob' already exists" in again.stderr


def test_a_viewer_operator_is_refused(cli_env: dict[str, str]) -> None:
    assert evolution(cli_env, "tenant", "create", "acme").returncode == 0
    viewer = {**cli_env, "EVOLUTION_OPERATOR_ROLE": "viewer"}
    refused = evolution(
        viewer, "users", "add", "bob", "--role", "admin", "--tenant", "acme", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert refused.returncode == 2
    assert "manage_users" in refused.stderr and "role viewer may not" in refused.stderr
    assert evolution(viewer, "users", "list").returncode == 2
    assert rows(evolution(cli_env, "users", "list").stdout) == []


def test_api_tokens_are_created_shown_once_listed_without_the_token_and_revoked(
    cli_env: dict[str, str],
) -> None:
    assert evolution(cli_env, "tenant", "create", "acme").returncode == 0
    added = evolution(
        cli_env, "users", "add", "gateway", "--role", "admin", "--tenant", "acme", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    created = evolution(
        cli_env, "users", "token", "create", "gateway", "--name", "field gateway", "--ttl-days", "30"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()  # alone on stdout, so that a script can capture it
    assert token.startswith("evo_") and len(token) == 64 and "not shown again" in created.stderr
    token_id = token.split("_")[1]

    listing = evolution(cli_env, "users", "token", "list")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[0].split() == [
        "ID",
        "USERNAME",
        "NAME",
        "STATUS",
        "CREATED",
        "EXPIRES",
    ]
    assert rows(listing.stdout)[0][:2] == [token_id, "gateway"] and "active" in listing.stdout
    assert token not in listing.stdout and token.split("_", 2)[2] not in listing.stdout

    viewer = {**cli_env, "EVOLUTION_OPERATOR_ROLE": "viewer"}
    assert evolution(viewer, "users", "token", "create", "gateway", "--name", "mine").returncode == 2

    revoked = evolution(cli_env, "users", "token", "revoke", token_id)
    assert (
        revoked.returncode == 0
        and f"API token {token_id} (field gateway) of gateway revoked" in revoked.stdout
    )
    assert "revoked" in evolution(cli_env, "users", "token", "list", "gateway").stdout
    home = Path(cli_env["EVOLUTION_HOME"])
    assert token.encode() not in (home / "registry.db").read_bytes()
    bad = evolution(cli_env, "users", "token", "create", "gateway", "--name", "x", "--ttl-days", "-1")
    assert bad.returncode == 2 and "lifetime" in bad.stderr

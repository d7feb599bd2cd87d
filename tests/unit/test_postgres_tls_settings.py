"""The database TLS settings reach every PostgreSQL URL the system connects with, and the backup's programs; a URL's
own parameters win for it; a half-given client certificate is refused; connection failures read as one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from evolution.backup.postgres_server import PgConnection
from evolution.platform.doctor import database_checks
from evolution.platform.settings import Settings
from evolution.registry.pg_tls import (
    explain_connection_failure,
    file_problems,
    tls_parameters,
    with_tls_defaults,
)

APP = "postgresql+psycopg://evolution_svc:pw-secret@db.example:5432/evolution"
OWNER = "postgresql+psycopg://evolution_owner:pw-owner@db.example:5432/evolution?sslcert=/o.crt&sslkey=/o.key"
TLS = {
    "database_sslmode": "verify-full",
    "database_sslrootcert": "/run/secrets/pg/ca.crt",
    "database_sslcert": "/run/secrets/pg/client.crt",
    "database_sslkey": "/run/secrets/pg/client.key",
}


def test_the_settings_are_added_to_both_urls_and_a_urls_own_parameters_win(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=APP, database_owner_url=OWNER, **TLS)
    assert tls_parameters(settings.resolved_database_url) == {
        "sslmode": "verify-full",
        "sslrootcert": "/run/secrets/pg/ca.crt",
        "sslcert": "/run/secrets/pg/client.crt",
        "sslkey": "/run/secrets/pg/client.key",
    }
    owner = tls_parameters(settings.resolved_owner_database_url)
    assert owner["sslcert"] == "/o.crt" and owner["sslkey"] == "/o.key" and owner["sslmode"] == "verify-full"
    assert "pw-secret" in settings.resolved_database_url  # the password stays in the URL it came in


def test_without_tls_settings_urls_are_as_given_and_sqlite_is_never_touched(tmp_path: Path) -> None:
    assert Settings(home=tmp_path, database_url=APP).resolved_database_url == APP
    sqlite = Settings(home=tmp_path, **TLS).resolved_database_url
    assert sqlite.startswith("sqlite:///") and "ssl" not in sqlite
    assert with_tls_defaults("sqlite:///x.db", {"sslmode": "verify-full"}) == "sqlite:///x.db"


def test_the_tls_settings_come_from_evolution_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EVOLUTION_DATABASE_URL", APP)
    monkeypatch.setenv("EVOLUTION_DATABASE_SSLMODE", "verify-full")
    monkeypatch.setenv("EVOLUTION_DATABASE_SSLROOTCERT", "system")
    settings = Settings(home=tmp_path)
    assert tls_parameters(settings.resolved_database_url) == {
        "sslmode": "verify-full",
        "sslrootcert": "system",
    }


def test_an_unknown_sslmode_and_half_a_client_certificate_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="database_sslmode"):
        Settings(home=tmp_path, database_sslmode="verify_full")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="database_sslcert is set without database_sslkey"):
        Settings(home=tmp_path, database_sslcert="/c.crt")


def test_the_backups_programs_and_connections_get_the_same_tls(tmp_path: Path) -> None:
    url = Settings(home=tmp_path, database_url=APP, **TLS).resolved_database_url
    conn = PgConnection.from_url(url)
    env = conn.env()
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == "/run/secrets/pg/ca.crt"
    assert (
        env["PGSSLCERT"] == "/run/secrets/pg/client.crt" and env["PGSSLKEY"] == "/run/secrets/pg/client.key"
    )
    moved = conn.with_port(5433, "127.0.0.1")
    assert tls_parameters(moved.sqlalchemy_url()) == tls_parameters(url)
    assert "pw-secret" not in repr(conn)


def test_missing_files_are_named_with_their_setting(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    problems = file_problems(
        {
            "sslrootcert": str(tmp_path / "ca.crt"),
            "sslcert": str(tmp_path / "gone.crt"),
            "sslkey": str(tmp_path),
        }
    )
    assert problems == [
        f"sslcert={tmp_path / 'gone.crt'} (EVOLUTION_DATABASE_SSLCERT or the URL): no such file",
        f"sslkey={tmp_path} (EVOLUTION_DATABASE_SSLKEY or the URL): not a file",
    ]
    assert file_problems({"sslrootcert": "system"}) == []


@pytest.mark.parametrize(
    ("libpq_says", "we_say"),
    [
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: SSL error: certificate '
            "verify failed",
            "not signed by the CA in sslrootcert=/ca.crt (EVOLUTION_DATABASE_SSLROOTCERT or the URL)",
        ),
        (
            'connection failed: server certificate for "db.internal" does not match host name "db.example"',
            "does not name the host db.example (host-name mismatch)",
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  password '
            'authentication failed for user "evolution_svc"',
            "password authentication failed for evolution_svc",
        ),
    ],
)
def test_connection_failures_read_as_one_line_without_the_password(libpq_says: str, we_say: str) -> None:
    url = with_tls_defaults(APP, {"sslmode": "verify-full", "sslrootcert": "/ca.crt"})
    line = explain_connection_failure(Exception(libpq_says + "\nmore detail"), url)
    assert line.startswith(
        "cannot connect to PostgreSQL at db.example:5432 as evolution_svc (sslmode=verify-full): "
    )
    assert we_say in line and "\n" not in line and "pw-secret" not in line


def test_doctor_fails_tls_settings_that_a_sqlite_registry_ignores_and_names_them(tmp_path: Path) -> None:
    meant = Settings(home=tmp_path, database_sslmode="verify-full", database_sslrootcert="system")
    tls = [c for c in database_checks(meant) if c.name == "TLS"]
    assert len(tls) == 1 and not tls[0].ok
    assert tls[0].detail.startswith(
        "EVOLUTION_DATABASE_SSLMODE, EVOLUTION_DATABASE_SSLROOTCERT set, but EVOLUTION_DATABASE_URL is not set: "
        "the registry is sqlite"
    )
    assert not [c for c in database_checks(Settings(home=tmp_path)) if c.name == "TLS"]

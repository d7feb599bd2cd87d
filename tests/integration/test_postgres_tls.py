"""PostgreSQL over TLS, against the suite's own server (ssl=on, a test CA, TLS-only pg_hba, the app login role by
client certificate): the settings reach every connection, the server is verified (verify-full), and each way the
connection can be wrong is refused in one line that names the problem — by the CLI, and in `evolution doctor`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from evolution.backup.postgres_server import PgConnection, PgTools, run_tool
from evolution.platform.doctor import CHECKS, Check, run_checks
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.registry.db import upgrade_to_head
from tests.support.postgres import app_role_url, create_database, libpq_dsn, tls_as_settings
from tests.support.tls_authority import CertificateAuthority

pytestmark = pytest.mark.postgres

EVOLUTION = str(Path(sys.executable).parent / "evolution")
PASSWORD = "pw-canary-7f3a"  # trust auth ignores it; it must never be printed
NOT_DATABASE = [component for component in CHECKS if component != "database"]


@pytest.fixture(scope="module")
def database(pg_server: str) -> str:
    """One migrated database for the module; the owner's URL (TLS in its query)."""
    url = create_database(pg_server)
    upgrade_to_head(url)
    return url


@pytest.fixture(scope="module")
def app(database: str) -> tuple[str, dict[str, str]]:
    """The app login role's URL without TLS parameters (with a password, to show it is never echoed), and its TLS
    as the EVOLUTION_DATABASE_SSL… settings."""
    plain, tls = tls_as_settings(app_role_url(database))
    return make_url(plain).set(password=PASSWORD).render_as_string(hide_password=False), tls


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """Another CA: it signed neither the server's certificate nor the server's trusted clients."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("foreign-ca"), "foreign-ca")


def _settings(tmp_path: Path, url: str, tls: dict[str, str], **changes: str) -> Settings:
    values = {key.removeprefix("EVOLUTION_").lower(): value for key, value in {**tls, **changes}.items()}
    return Settings(home=tmp_path / "home", database_url=url, **values)


def _database(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks if c.component == "database"}


def _one_line_failure(check: Check) -> str:
    assert not check.ok, check
    assert "\n" not in check.detail and PASSWORD not in check.detail, check.detail
    return check.detail


def test_the_server_refuses_connections_without_tls_and_the_app_role_without_its_certificate(
    database: str,
) -> None:
    owner = make_url(database)
    for refused, why in (
        (owner.update_query_dict({"sslmode": "disable"}), "no encryption"),
        (make_url(app_role_url(database)).difference_update_query(["sslcert", "sslkey"]), "certificate"),
    ):
        with pytest.raises(psycopg.OperationalError) as error:
            psycopg.connect(
                libpq_dsn(refused.render_as_string(hide_password=False)), connect_timeout=10
            ).close()
        assert why in str(error.value), str(error.value)


def test_the_settings_reach_every_connection_verified_and_authenticated_by_certificate(
    app: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, tls = app
    settings = _settings(tmp_path, url, tls)
    assert settings.database_sslmode == "verify-full"
    services = build_services(settings, migrate=False)
    try:
        with services.engine.connect() as connection:
            user, ssl = connection.execute(
                text(
                    "SELECT current_user, ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                    "WHERE pid = pg_backend_pid()"
                )
            ).one()
        assert (user, ssl) == ("evolution_app_login", True)
    finally:
        services.close()

    checks = _database(run_checks(settings, skip=NOT_DATABASE))
    assert all(c.ok for c in checks.values()), checks
    assert "sslmode=verify-full, TLSv1.3" in checks["TLS"].detail
    assert "server certificate verified for 127.0.0.1, client certificate presented" in checks["TLS"].detail
    assert "CN=evolution_app_login, issued by CN=evolution-test-ca, expires" in (
        checks["client certificate"].detail
    )
    assert "CN=evolution-test-ca" in checks["server CA"].detail
    assert PASSWORD not in repr(checks)


def _wrong_ca_env(
    app: tuple[str, dict[str, str]], foreign: CertificateAuthority, home: Path
) -> dict[str, str]:
    url, tls = app
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("EVOLUTION_", "PGSSL"))},
        **tls,
        "EVOLUTION_HOME": str(home),
        "EVOLUTION_DATABASE_URL": url,
        "EVOLUTION_DATABASE_SSLROOTCERT": str(foreign.cert_path),
    }


# `evolution worker` stops the same way (workers/worker.py); it is left out here only for its start-up time.
@pytest.mark.parametrize("command", [["tenant", "list"], ["serve"]], ids=" ".join)
def test_a_wrong_ca_stops_the_cli_and_the_processes_with_one_line_naming_the_ca(
    command: list[str], app: tuple[str, dict[str, str]], foreign: CertificateAuthority, tmp_path: Path
) -> None:
    env = _wrong_ca_env(app, foreign, tmp_path / "home")
    run = subprocess.run([EVOLUTION, *command], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "certificate verify failed" in lines[0] and str(foreign.cert_path) in lines[0], lines[0]
    assert "EVOLUTION_DATABASE_SSLROOTCERT" in lines[0] and PASSWORD not in run.stderr + run.stdout


def test_doctor_fails_on_a_wrong_ca_naming_it_and_says_nothing_of_the_password(
    app: tuple[str, dict[str, str]], foreign: CertificateAuthority, tmp_path: Path
) -> None:
    env = _wrong_ca_env(app, foreign, tmp_path / "home")
    skip = [arg for component in NOT_DATABASE for arg in ("--skip", component)]
    run = subprocess.run([EVOLUTION, "doctor", *skip], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    (failed,) = [line for line in run.stdout.splitlines() if " FAIL " in line]
    assert failed.startswith("database") and "reachable" in failed, run.stdout
    assert "certificate verify failed" in failed and str(foreign.cert_path) in failed, failed
    assert PASSWORD not in run.stdout + run.stderr and "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def expired_client(pg_server: str) -> Iterator[tuple[str, str]]:
    """The app role's certificate, expired (signed by the server's own CA)."""
    ca = CertificateAuthority.open(Path(str(make_url(pg_server).query["sslrootcert"])))
    issued = ca.issue("client-app-expired", "evolution_app_login", expired=True)
    yield str(issued.cert), str(issued.key)


def test_doctor_names_each_tls_failure_in_one_line(
    app: tuple[str, dict[str, str]],
    foreign: CertificateAuthority,
    expired_client: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, tls = app
    missing = str(tmp_path / "nowhere" / "ca.crt")
    stranger = foreign.issue("stranger", "evolution_app_login")
    wrong_host = make_url(url).set(host="db.wrong.test").update_query_dict({"hostaddr": "127.0.0.1"})
    cases = {
        "wrong CA": (url, {"EVOLUTION_DATABASE_SSLROOTCERT": str(foreign.cert_path)}, "reachable"),
        "missing CA file": (url, {"EVOLUTION_DATABASE_SSLROOTCERT": missing}, "reachable"),
        "missing client certificate": (
            url,
            {"EVOLUTION_DATABASE_SSLCERT": str(tmp_path / "client.crt")},
            "reachable",
        ),
        "host-name mismatch": (wrong_host.render_as_string(hide_password=False), {}, "reachable"),
        "client certificate of another CA": (
            url,
            {
                "EVOLUTION_DATABASE_SSLCERT": str(stranger.cert),
                "EVOLUTION_DATABASE_SSLKEY": str(stranger.key),
            },
            "reachable",
        ),
        "expired client certificate": (
            url,
            {"EVOLUTION_DATABASE_SSLCERT": expired_client[0], "EVOLUTION_DATABASE_SSLKEY": expired_client[1]},
            "client certificate",
        ),
    }
    expected = {
        "wrong CA": ["certificate verify failed", str(foreign.cert_path), "EVOLUTION_DATABASE_SSLROOTCERT"],
        "missing CA file": [f"sslrootcert={missing}", "EVOLUTION_DATABASE_SSLROOTCERT", "no such file"],
        "missing client certificate": ["EVOLUTION_DATABASE_SSLCERT", "client.crt", "no such file"],
        "host-name mismatch": ["does not name the host db.wrong.test", "host-name mismatch"],
        "client certificate of another CA": ["does not trust the CA that signed the client certificate"],
        "expired client certificate": ["expired on", "renew it (EVOLUTION_DATABASE_SSLCERT)"],
    }
    for case, (case_url, changes, check_name) in cases.items():
        checks = _database(run_checks(_settings(tmp_path, case_url, tls, **changes), skip=NOT_DATABASE))
        detail = _one_line_failure(checks[check_name])
        for words in expected[case]:
            assert words in detail, f"{case}: {detail}"


def test_the_backups_connections_and_libpq_programs_use_the_same_tls(
    app: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, tls = app
    conn = PgConnection.from_url(_settings(tmp_path, url, tls).resolved_database_url)
    query = "SELECT current_user, ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE pid = pg_backend_pid()"
    with conn.connect() as db:
        assert db.execute(query).fetchone() == ("evolution_app_login", True)
    # pg_basebackup reads the same PGSSL… variables as psql: the app role gets in only with its certificate.
    psql = PgTools.discover().bin_dir / "psql"
    out = run_tool([str(psql), "-At", "-c", query], what="psql", env=conn.env(), timeout=60)
    assert out.strip() == "evolution_app_login|t"

"""A real, throwaway PostgreSQL server for the tests: initdb + pg_ctl from the machine's binaries.

It runs with ``ssl=on`` and a test CA made by :mod:`tests.support.tls_authority`, and refuses connections without
TLS: its URLs say ``sslmode=verify-full`` and the CA, so every test that uses it talks to it over verified TLS. The
application's login role (:func:`app_role_url`) is authenticated by a client certificate (``hostssl … cert``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.tls_authority import SERVER_NAMES, CertificateAuthority, Issued

CANDIDATE_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def find_pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    for candidate in CANDIDATE_BIN_DIRS:
        if (candidate / "pg_ctl").exists():
            return candidate
    return None


def _as_db_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PgServer:
    """A running test server that can be stopped and started again on the same port, keeping its data dir."""

    bin_dir: Path
    root: Path
    data: Path
    port: int
    options: str

    tls: ServerTls

    @property
    def url(self) -> str:
        """A superuser URL of its ``postgres`` database, over TLS that verifies the server (``verify-full``)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres?{self.tls.query}"

    def start(self) -> None:
        """Start (again): waits until it accepts connections (after crash recovery, if it was killed)."""
        subprocess.run(
            _as_db_user(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    self.options,
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "-t",
                    "120",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            env=_pg_env(),
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop it; ``immediate`` is a crash (no checkpoint, clients cut off). The data dir stays."""
        subprocess.run(
            _as_db_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            env=_pg_env(),
        )


def _pg_env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C.UTF-8"}


APP_LOGIN_ROLE = "evolution_app_login"
APP_CLIENT_STEM = "client-app"


@dataclass(frozen=True)
class ServerTls:
    """The test server's TLS material: the CA (its certificate is what clients verify the server with), the
    server's certificate (for localhost and 127.0.0.1) and the app login role's client certificate."""

    ca: CertificateAuthority
    server: Issued
    app_client: Issued

    @property
    def query(self) -> str:
        return f"sslmode=verify-full&sslrootcert={self.ca.cert_path}"

    def server_options(self) -> str:
        return (
            f"-c ssl=on -c ssl_cert_file={self.server.cert} -c ssl_key_file={self.server.key} "
            f"-c ssl_ca_file={self.ca.cert_path}"
        )


# First match wins: the app login role only with a certificate its CA signed (CN = role), everyone else over TLS
# (trusted, as a throwaway server may), and nobody without TLS.
PG_HBA = f"""\
local all all trust
hostssl all {APP_LOGIN_ROLE} 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 trust
hostnossl all all all reject
"""


def _server_tls(root: Path) -> ServerTls:
    """A CA, the server's certificate and key (owned by the server's OS user when we are root: it refuses a key
    others can read) and the app role's client certificate (ours, 0600, as libpq demands)."""
    ca = CertificateAuthority.create(root / "tls")
    server = ca.issue("server", "localhost", server_names=SERVER_NAMES)
    client = ca.issue(APP_CLIENT_STEM, APP_LOGIN_ROLE)
    if os.geteuid() == 0:
        shutil.chown(root / "tls", "postgres", "postgres")
        for path in (ca.cert_path, server.cert, server.key):
            shutil.chown(path, "postgres", "postgres")
    return ServerTls(ca=ca, server=server, app_client=client)


@contextmanager
def stoppable_postgres_server() -> Iterator[PgServer]:
    """Like :func:`postgres_server`, but yields the handle, to stop and start the server during a test."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries not found: `make test` installs Debian's postgresql package")
    root = Path(tempfile.mkdtemp(prefix="evolution-pg-"))
    data = root / "data"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_db_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
        env=_pg_env(),
    )
    tls = _server_tls(root)
    (data / "pg_hba.conf").write_text(PG_HBA, encoding="utf-8")
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 "
        + tls.server_options()
    )
    server = PgServer(bin_dir=bin_dir, root=root, data=data, port=port, options=options, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server on a free loopback port; yield a superuser URL of its ``postgres`` database."""
    with stoppable_postgres_server() as server:
        yield server.url


def libpq_dsn(url: str) -> str:
    """The libpq URI of a SQLAlchemy URL (its TLS parameters kept), for psycopg.connect."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """``url`` naming another database of the same server (its TLS parameters kept)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def create_database(server_url: str) -> str:
    """A fresh, empty database on the server; returns its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_dsn(server_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return with_database(server_url, name)


def app_role_url(database_url: str) -> str:
    """The URL of ``database_url`` for the application's login role: a member of ``evolution_app`` (created by the
    migrations) that owns no table and has neither SUPERUSER nor BYPASSRLS, as in production."""
    import psycopg
    from sqlalchemy.engine import make_url

    from evolution.registry.row_security import APP_ROLE

    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
        conn.execute(
            "DO $$ BEGIN "
            f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_LOGIN_ROLE}') THEN "
            f"CREATE ROLE {APP_LOGIN_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE IN ROLE {APP_ROLE}; "
            "END IF; END $$"
        )
    url = make_url(database_url).set(username=APP_LOGIN_ROLE)
    root_cert = url.query.get("sslrootcert")
    if isinstance(root_cert, str):
        # The test server lets this role in only with its client certificate, issued beside the CA.
        cert, key = (Path(root_cert).parent / f"{APP_CLIENT_STEM}.{ext}" for ext in ("crt", "key"))
        url = url.update_query_dict({"sslcert": str(cert), "sslkey": str(key)})
    return url.render_as_string(hide_password=False)


def tls_as_settings(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its TLS parameters, and those parameters as the ``EVOLUTION_DATABASE_SSL…`` settings: how a
    deployment configures them (docs/production.md, "PostgreSQL over TLS")."""
    from sqlalchemy.engine import make_url

    from evolution.registry.pg_tls import SETTING_OF, TLS_PARAMETERS

    parsed = make_url(url)
    env = {SETTING_OF[name]: str(parsed.query[name]) for name in TLS_PARAMETERS if name in parsed.query}
    plain = parsed.difference_update_query(TLS_PARAMETERS).render_as_string(hide_password=False)
    return plain, env

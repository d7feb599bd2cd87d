"""A real, throwaway PostgreSQL server for the tests: initdb + pg_ctl from the machine's binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CANDIDATE_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def find_pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    for candidate in CANDIDATE_BIN_DIRS:
        if (candidate / "pg_ctl").exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    @property
    def url(self) -> str:
        """A superuser URL of its ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

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


@contextmanager
def stoppable_postgres_server() -> Iterator[PgServer]:
    """Like :func:`postgres_server`, but yields the handle, to stop and start the server during a test."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries not found: `make test` installs Debian's postgresql package")
    root = Path(tempfile.mkdtemp(prefix="evolution-pg-"))
    data = root / "data"
    port = _free_port()
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
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    server = PgServer(bin_dir=bin_dir, root=root, data=data, port=port, options=options)
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


def create_database(server_url: str) -> str:
    """A fresh, empty database on the server; returns its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"


APP_LOGIN_ROLE = "evolution_app_login"


def app_role_url(database_url: str) -> str:
    """The URL of ``database_url`` for the application's login role: a member of ``evolution_app`` (created by the
    migrations) that owns no table and has neither SUPERUSER nor BYPASSRLS, as in production."""
    import psycopg

    from evolution.registry.row_security import APP_ROLE

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "DO $$ BEGIN "
            f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_LOGIN_ROLE}') THEN "
            f"CREATE ROLE {APP_LOGIN_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE IN ROLE {APP_ROLE}; "
            "END IF; END $$"
        )
    return database_url.replace(
        "postgresql+psycopg://postgres@", f"postgresql+psycopg://{APP_LOGIN_ROLE}@", 1
    )

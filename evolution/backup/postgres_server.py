"""Reaching PostgreSQL: its programs, the OS user the server-side ones run as, and a server from its URL.

Shared by the base backup (:mod:`evolution.backup.postgres_backup`) and recovery
(:mod:`evolution.backup.postgres_recovery`): :class:`PgTools` finds ``pg_basebackup``, ``pg_ctl`` and friends,
:func:`run_tool` runs one and turns a failure into ``BackupFailed``, :class:`PgConnection` is where the
registry's server is (the password only ever in the environment).
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from evolution.backup.manifest import BackupFailed
from evolution.errors import InvalidInput, NotFound
from evolution.registry.pg_tls import libpq_environment, tls_parameters

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PgTools:
    """PostgreSQL's programs, and the OS user the server-side ones run as (initdb and postgres refuse root)."""

    bin_dir: Path
    os_user: str | None = None

    @classmethod
    def discover(cls, os_user: str | None = None) -> PgTools:
        """``pg_config --bindir``, else the newest ``/usr/lib/postgresql/*/bin``, else ``pg_ctl`` on PATH."""
        if os_user is None and os.geteuid() == 0:
            os_user = "postgres"
        candidates: list[Path] = []
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
        for candidate in candidates:
            if (candidate / "pg_ctl").exists() and (candidate / "pg_basebackup").exists():
                return cls(candidate, os_user)
        raise NotFound(
            "PostgreSQL programs (pg_basebackup, pg_ctl) not found: install the server package "
            "(Debian: postgresql) or put its bin directory on PATH"
        )

    def program(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise NotFound(f"{path} does not exist")
        return str(path)

    def as_server_user(self, cmd: list[str]) -> list[str]:
        if self.os_user and os.geteuid() == 0:
            return ["runuser", "-u", self.os_user, "--", *cmd]
        return cmd

    def chown_to_server_user(self, path: Path) -> None:
        """Give ``path`` (recursively) to the server's OS user, when running as root."""
        if not self.os_user or os.geteuid() != 0:
            return
        entry = pwd.getpwnam(self.os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        if path.is_dir() and not path.is_symlink():
            for current, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(os.path.join(current, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def version(self) -> str:
        out = subprocess.run(
            [self.program("pg_ctl"), "--version"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in path.parent.name.split("."))
    except ValueError:
        return (0,)


def run_tool(
    cmd: list[str], *, what: str, env: Mapping[str, str] | None = None, timeout: float = 3600
) -> str:
    """Run a PostgreSQL program; BackupFailed with the tail of its stderr if it fails. Returns stdout."""
    logger.info("running %s", " ".join(shlex.quote(c) for c in cmd))
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C.UTF-8", **(env or {})},
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BackupFailed(f"{what} did not finish within {timeout:.0f} s") from None
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise BackupFailed(f"{what} failed (exit {out.returncode}): {' | '.join(tail)}")
    return out.stdout


@dataclass(frozen=True)
class PgConnection:
    """Where the registry's server is, from its SQLAlchemy URL. The password only ever goes in the environment."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = field(default=None, repr=False)
    # libpq's TLS parameters from the URL (sslmode, sslrootcert, sslcert, sslkey): the backup's programs and
    # connections reach the server as the registry does.
    tls: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str) -> PgConnection:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise InvalidInput(f"{parsed.render_as_string(hide_password=True)} is not a PostgreSQL URL")
        host = parsed.host or str(parsed.query.get("host") or "localhost")
        return cls(
            host=host,
            port=int(parsed.port or 5432),
            user=parsed.username or pwd.getpwuid(os.geteuid()).pw_name,
            database=parsed.database or "postgres",
            password=parsed.password if isinstance(parsed.password, str) else None,
            tls=tuple(sorted(tls_parameters(url).items())),
        )

    def env(self) -> dict[str, str]:
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
            **libpq_environment(dict(self.tls)),
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    @contextmanager
    def connect(self, database: str | None = None) -> Iterator[Any]:
        import psycopg

        # libpq keywords (the TLS ones among them) go in as one mapping; psycopg's own options stay typed.
        keywords: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": database or self.database,
            "connect_timeout": 10,
            **dict(self.tls),
        }
        with psycopg.connect(autocommit=True, **keywords) as conn:
            yield conn

    def with_port(self, port: int, host: str | None = None) -> PgConnection:
        return PgConnection(host or self.host, port, self.user, self.database, self.password, self.tls)

    def sqlalchemy_url(self) -> str:
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
            query=dict(self.tls),
        ).render_as_string(hide_password=False)


def port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False

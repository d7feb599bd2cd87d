"""A dedicated PostgreSQL cluster with settings of its own (WAL archiving for the recovery drill).

Like :func:`tests.support.postgres.postgres_server` (and built from its helpers), but the settings are written
into the cluster's ``postgresql.conf`` so that base backups carry them, and the handle exposes the data
directory and port. The shared server fixture is left as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from evolution.backup.postgres_conf import conf_lines
from tests.support.ports import free_port
from tests.support.postgres import _as_db_user, find_pg_bin


@dataclass
class PgCluster:
    bin_dir: Path
    root: Path
    data: Path
    port: int
    log: Path

    @property
    def server_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(
            _as_db_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            check=False,
        )


def server_owned_dir(path: Path) -> Path:
    """A directory the server process can write (WAL archive, sockets): owned by postgres when we are root."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


@contextmanager
def postgres_cluster(
    settings: Mapping[str, str] | None = None,
    initdb_args: Sequence[str] = (),
    root: Path | None = None,
) -> Iterator[PgCluster]:
    """initdb + start on a free loopback port, with ``settings`` in postgresql.conf; stopped and removed after."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries not found: `make test` installs Debian's postgresql package")
    owns_root = root is None
    root = Path(tempfile.mkdtemp(prefix="evolution-pgc-")) if root is None else root
    server_owned_dir(root)
    data = root / "data"
    log = root / "log"
    port = free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run(
        _as_db_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                *initdb_args,
            ]
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    base = {"fsync": "off", "max_connections": "200", "listen_addresses": "127.0.0.1"}
    with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write("\n# tests/support/pg_cluster.py\n" + conf_lines({**base, **(settings or {})}))
    subprocess.run(
        _as_db_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                f"-p {port} -k {root}",
                "-l",
                str(log),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    cluster = PgCluster(bin_dir=bin_dir, root=root, data=data, port=port, log=log)
    try:
        yield cluster
    finally:
        cluster.stop()
        if owns_root:
            shutil.rmtree(root, ignore_errors=True)

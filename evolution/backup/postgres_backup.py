"""PostgreSQL: base backups, WAL archiving and point-in-time recovery (PITR).

Two things together make a PostgreSQL registry recoverable to any moment:

* **WAL archiving** on the server, so that every completed WAL segment is copied to an archive directory (or
  bucket) as soon as it is full, or after ``archive_timeout`` seconds of activity at the latest::

      wal_level = replica
      archive_mode = on
      archive_command = 'test ! -f "/srv/wal/%f" && cp "%p" "/srv/wal/%f.tmp" && sync "/srv/wal/%f.tmp"
                         && mv "/srv/wal/%f.tmp" "/srv/wal/%f" && sync "/srv/wal"'
      archive_timeout = 60

  (one line; :func:`archive_settings` writes it for a directory). The command never overwrites a segment, and a
  segment appears under its final name only once it is complete and durable. ``archive_timeout`` bounds the
  data at risk when the server is lost: at most the last ``archive_timeout`` seconds plus one copy.
  ``archive_mode`` needs a restart; ``archive_command`` and ``archive_timeout`` only a reload.

* **Base backups** with ``pg_basebackup`` (here in tar format, gzip-compressed, or plain), taken with
  ``-X stream`` so that each one also holds the WAL it needs to be consistent on its own. The role that takes
  it needs the REPLICATION attribute (or superuser) and a ``replication`` line in ``pg_hba.conf``.

Recovery lays a base backup down into a new, empty data directory, writes ``recovery.signal`` and, in
``postgresql.auto.conf``, a ``restore_command`` that reads the archive and a recovery target: a time
(``recovery_target_time``), a named restore point made earlier with ``pg_create_restore_point``
(``recovery_target_name``) or a WAL position (``recovery_target_lsn``); without a target it replays the whole
archive. ``recovery_target_action = 'promote'`` makes the server leave recovery at the target and accept
writes on a new timeline. The server replays until then; :func:`restore_base_backup` waits for
``pg_controldata`` to report "in production", and reads from the server log where recovery stopped.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, model_validator
from sqlalchemy.engine import make_url

from evolution.backup.manifest import BackupFailed, Progress, no_progress
from evolution.errors import Conflict, InvalidInput, NotFound
from evolution.timeutil import as_utc

logger = logging.getLogger(__name__)

PgFormat = Literal["tar", "plain"]
DEFAULT_ARCHIVE_TIMEOUT_S = 60
_UNSAFE_IN_COMMAND = re.compile(r"[\"'$`\\%\n\r\x00]")
_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d(?::?\d\d)?)?)"
_RECOVERY_LINES = (
    "starting point-in-time recovery",
    "starting archive recovery",
    "consistent recovery state reached",
    "recovery stopping",
    "redo done",
    "last completed transaction",
    "selected new timeline",
    "archive recovery complete",
    "database system is ready",
)


# -- settings text ---------------------------------------------------------------------------------------


def _command_path(path: Path) -> str:
    text = str(Path(path).resolve())
    if _UNSAFE_IN_COMMAND.search(text):
        raise InvalidInput(
            f"WAL archive path {text!r} contains a quote, '$', '`', '\\', '%' or a newline: "
            "it cannot be used safely in archive_command / restore_command"
        )
    return text


def archive_command(archive_dir: Path) -> str:
    """Copy a finished segment to ``archive_dir``: never overwrite, appear only when complete and durable."""
    d = _command_path(archive_dir)
    return (
        f'test ! -f "{d}/%f" && cp "%p" "{d}/%f.tmp" && sync "{d}/%f.tmp" '
        f'&& mv "{d}/%f.tmp" "{d}/%f" && sync "{d}"'
    )


def restore_command(archive_dir: Path) -> str:
    d = _command_path(archive_dir)
    return f'cp "{d}/%f" "%p"'


def archive_settings(archive_dir: Path, timeout_s: int = DEFAULT_ARCHIVE_TIMEOUT_S) -> dict[str, str]:
    """The server settings for WAL archiving into ``archive_dir`` (see the module docs)."""
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive_command(archive_dir),
        "archive_timeout": str(int(timeout_s)),
    }


def conf_value(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def conf_lines(settings: Mapping[str, str]) -> str:
    return "".join(f"{name} = {conf_value(value)}\n" for name, value in settings.items())


# -- binaries and connections --------------------------------------------------------------------------


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
        )

    def env(self) -> dict[str, str]:
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    @contextmanager
    def connect(self, database: str | None = None) -> Iterator[Any]:
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            yield conn

    def with_port(self, port: int, host: str | None = None) -> PgConnection:
        return PgConnection(host or self.host, port, self.user, self.database, self.password)

    def sqlalchemy_url(self) -> str:
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
        ).render_as_string(hide_password=False)


def port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# -- what the server says --------------------------------------------------------------------------------


class ServerStatus(BaseModel):
    server_version: str
    wal_level: str
    archive_mode: str
    archive_command: str
    archive_timeout_s: int
    last_archived_wal: str | None
    failed_count: int
    current_lsn: str
    now: datetime


def server_status(conn: PgConnection) -> ServerStatus:
    with conn.connect() as db:

        def show(name: str) -> str:
            return str(db.execute(f"SHOW {name}").fetchone()[0])

        archived = db.execute("SELECT last_archived_wal, failed_count FROM pg_stat_archiver").fetchone()
        lsn, now = db.execute("SELECT pg_current_wal_lsn()::text, clock_timestamp()").fetchone()
        timeout = show("archive_timeout")
        return ServerStatus(
            server_version=show("server_version"),
            wal_level=show("wal_level"),
            archive_mode=show("archive_mode"),
            archive_command=show("archive_command"),
            archive_timeout_s=_seconds(timeout),
            last_archived_wal=archived[0],
            failed_count=int(archived[1]),
            current_lsn=lsn,
            now=as_utc(now),
        )


def _seconds(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(ms|s|min|h|d)?", text.strip())
    if not match:
        return 0
    value, unit = int(match.group(1)), match.group(2) or "s"
    return {"ms": value // 1000, "s": value, "min": value * 60, "h": value * 3600, "d": value * 86400}[unit]


def create_restore_point(conn: PgConnection, name: str) -> str:
    """A named point in the WAL to recover to (``recovery_target_name``); returns its LSN. Superuser only."""
    with conn.connect() as db:
        return str(db.execute("SELECT pg_create_restore_point(%s)::text", (name,)).fetchone()[0])


def switch_wal(conn: PgConnection) -> str:
    """Close the current WAL segment so it is archived now; returns the name of the segment just closed."""
    with conn.connect() as db:
        lsn = db.execute("SELECT pg_switch_wal()").fetchone()[0]
        return str(db.execute("SELECT pg_walfile_name(%s)", (lsn,)).fetchone()[0])


def wal_file_of_current_lsn(conn: PgConnection) -> tuple[str, str]:
    """(LSN, segment file) of the current WAL insert position: what the last commit needs archived."""
    with conn.connect() as db:
        lsn, name = db.execute(
            "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())"
        ).fetchone()
        return str(lsn), str(name)


def wait_archived(conn: PgConnection, wal_file: str, timeout_s: float = 120.0) -> float:
    """Block until ``wal_file`` (or a later segment) is archived; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout_s
    failed_before: int | None = None
    while True:
        with conn.connect() as db:
            last, failed = db.execute(
                "SELECT last_archived_wal, failed_count FROM pg_stat_archiver"
            ).fetchone()
        if last is not None and not last.endswith((".backup", ".history", ".partial")) and last >= wal_file:
            return time.monotonic()
        if failed_before is None:
            failed_before = int(failed)
        elif int(failed) > failed_before + 3:
            raise BackupFailed(f"the server's archive_command keeps failing ({failed} failures); see its log")
        if time.monotonic() > deadline:
            raise BackupFailed(f"WAL segment {wal_file} was not archived within {timeout_s:.0f} s")
        time.sleep(0.05)


# -- base backup --------------------------------------------------------------------------------------


class BaseBackupInfo(BaseModel):
    directory: Path
    pg_format: PgFormat
    consistent_at: datetime
    timeline: int | None
    start_lsn: str | None
    end_lsn: str | None
    server_version: str
    archive_mode: str
    archive_timeout_s: int
    pitr_possible: bool


def take_base_backup(
    conn: PgConnection,
    dest: Path,
    *,
    tools: PgTools,
    fmt: PgFormat = "tar",
    label: str = "evolution backup",
    progress: Progress = no_progress,
) -> BaseBackupInfo:
    """``pg_basebackup -X stream`` into ``dest`` (new or empty); the WAL range from its backup_manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise Conflict(f"{dest} is not empty; a base backup needs a new directory")
    before = server_status(conn)
    if before.archive_mode == "off":
        progress(
            "  warning: archive_mode is off on the server: this base backup restores to its own end point "
            "only; for point-in-time recovery enable WAL archiving (docs/backup-and-restore.md)"
        )
    cmd = [tools.program("pg_basebackup"), "-D", str(dest), "-X", "stream", "-c", "fast", "-l", label, "-w"]
    cmd += ["-F", "t", "-z"] if fmt == "tar" else ["-F", "p"]
    progress(f"  pg_basebackup ({fmt}) from {conn.host}:{conn.port} …")
    started = time.monotonic()
    run_tool(cmd, what="pg_basebackup", env=conn.env())
    after = server_status(conn)  # the server's clock: recovery targets are compared with commit timestamps
    timeline, start_lsn, end_lsn = _wal_range(dest / "backup_manifest")
    if fmt == "plain":
        run_tool([tools.program("pg_verifybackup"), "-q", str(dest)], what="pg_verifybackup")
    elif set(p.name for p in dest.iterdir()) - {"base.tar.gz", "pg_wal.tar.gz", "backup_manifest"}:
        raise BackupFailed(
            f"the base backup in {dest} has tablespace archives; restoring tablespaces is not supported here"
        )
    progress(f"  base backup done in {time.monotonic() - started:.1f} s (WAL {start_lsn} … {end_lsn})")
    return BaseBackupInfo(
        directory=dest,
        pg_format=fmt,
        consistent_at=after.now,
        timeline=timeline,
        start_lsn=start_lsn,
        end_lsn=end_lsn,
        server_version=after.server_version,
        archive_mode=after.archive_mode,
        archive_timeout_s=after.archive_timeout_s,
        pitr_possible=after.archive_mode != "off",
    )


def _wal_range(path: Path) -> tuple[int | None, str | None, str | None]:
    try:
        ranges = json.loads(path.read_text(encoding="utf-8")).get("WAL-Ranges") or []
    except (OSError, ValueError):
        return None, None, None
    if not ranges:
        return None, None, None
    return int(ranges[0]["Timeline"]), str(ranges[0]["Start-LSN"]), str(ranges[-1]["End-LSN"])


# -- recovery ---------------------------------------------------------------------------------------------


class RecoveryTarget(BaseModel):
    """Where recovery stops: a time, a restore point's name or an LSN (at most one); none: end of the archive."""

    time: datetime | None = None
    name: str | None = None
    lsn: str | None = None
    inclusive: bool = True

    @model_validator(mode="after")
    def _one(self) -> RecoveryTarget:
        if sum(x is not None for x in (self.time, self.name, self.lsn)) > 1:
            raise ValueError("give at most one recovery target: a time, a restore point name or an LSN")
        if self.time is not None and self.time.tzinfo is None:
            raise ValueError("a recovery target time needs a time zone (e.g. 2026-11-26T12:00:00Z)")
        if self.lsn is not None and not re.fullmatch(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", self.lsn):
            raise ValueError(f"{self.lsn!r} is not an LSN like 0/1A2B3C4")
        return self

    @property
    def is_set(self) -> bool:
        return any(x is not None for x in (self.time, self.name, self.lsn))

    def settings(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.time is not None:
            out["recovery_target_time"] = as_utc(self.time).isoformat()
        elif self.name is not None:
            out["recovery_target_name"] = self.name
        elif self.lsn is not None:
            out["recovery_target_lsn"] = self.lsn
        if out:
            out["recovery_target_inclusive"] = "on" if self.inclusive else "off"
            out["recovery_target_action"] = "promote"
        return out

    def describe(self) -> str:
        if self.time is not None:
            return f"time {as_utc(self.time).isoformat()}"
        if self.name is not None:
            return f"restore point {self.name!r}"
        if self.lsn is not None:
            return f"LSN {self.lsn}"
        return "the end of the archived WAL"


@dataclass
class RecoveredServer:
    """A server recovered from a base backup, running (it is left running: stop it when done)."""

    data_dir: Path
    port: int
    tools: PgTools
    log_path: Path
    socket_dir: Path | None
    recovery_log: list[str]
    last_transaction_at: datetime | None
    seconds: float

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        subprocess.run(
            self.tools.as_server_user(
                [self.tools.program("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
            ),
            capture_output=True,
            check=False,
        )


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(dest, filter="data")


def lay_down(backup_dir: Path, fmt: PgFormat, data_dir: Path) -> None:
    """Put the base backup's files into ``data_dir`` (created, or existing and empty)."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise Conflict(f"data directory {data_dir} is not empty: recovery needs a new, empty one")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)
    if fmt == "tar":
        _extract(backup_dir / "base.tar.gz", data_dir)
        wal = backup_dir / "pg_wal.tar.gz"
        if wal.exists():
            (data_dir / "pg_wal").mkdir(exist_ok=True, mode=0o700)
            _extract(wal, data_dir / "pg_wal")
    else:
        shutil.copytree(backup_dir, data_dir, symlinks=True, dirs_exist_ok=True)
        (data_dir / "backup_manifest").unlink(missing_ok=True)


def restore_base_backup(
    backup_dir: Path,
    fmt: PgFormat,
    data_dir: Path,
    *,
    port: int,
    tools: PgTools,
    wal_archive: Path | None,
    target: RecoveryTarget | None = None,
    socket_dir: Path | None = None,
    listen_addresses: str | None = None,
    settings: Mapping[str, str] | None = None,
    timeout_s: float = 1800.0,
    progress: Progress = no_progress,
) -> RecoveredServer:
    """Recover a base backup into ``data_dir`` up to ``target`` and start the server on ``port``.

    ``wal_archive``: the directory the server archived WAL into (needed for any target past the end of the
    base backup). ``settings``: extra server settings for the recovered server (e.g. ``archive_mode = off`` in
    a drill, so that it does not archive its new timeline into the production archive).
    """
    target = target or RecoveryTarget()
    if target.is_set and wal_archive is None:
        raise InvalidInput("recovery to a point in time needs the WAL archive (--wal-archive)")
    if wal_archive is not None and not wal_archive.is_dir():
        raise NotFound(f"WAL archive {wal_archive} does not exist")
    started = time.monotonic()
    progress(f"  laying down the base backup in {data_dir} …")
    lay_down(backup_dir, fmt, data_dir)
    for name, default in (("postgresql.conf", ""), ("pg_hba.conf", _MINIMAL_HBA), ("pg_ident.conf", "")):
        if not (data_dir / name).exists():  # Debian keeps these in /etc/postgresql: start from safe defaults
            progress(f"  {name} is not in the backup (kept outside the data dir?): writing a minimal one")
            (data_dir / name).write_text(default, encoding="utf-8")
    recovery: dict[str, str] = dict(settings or {})
    if wal_archive is not None:
        recovery["restore_command"] = restore_command(wal_archive)
        recovery.update(target.settings())
        (data_dir / "recovery.signal").write_text("", encoding="utf-8")
    with (data_dir / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
        conf.write("\n# written by `evolution restore`: recovery from a base backup\n" + conf_lines(recovery))
    log_path = data_dir.parent / f"{data_dir.name}.log"
    log_path.touch(mode=0o600)
    tools.chown_to_server_user(log_path)
    if socket_dir is not None:
        socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tools.chown_to_server_user(socket_dir)
    tools.chown_to_server_user(data_dir)
    os.chmod(data_dir, 0o700)
    options = f"-p {int(port)}"
    if socket_dir is not None:
        options += f" -k {shlex.quote(str(socket_dir))}"
    if listen_addresses is not None:
        options += f" -c listen_addresses={shlex.quote(listen_addresses)}"
    progress(f"  starting PostgreSQL on port {port} to recover to {target.describe()} …")
    log_offset = log_path.stat().st_size
    try:
        run_tool(
            tools.as_server_user(
                [
                    tools.program("pg_ctl"),
                    "-D",
                    str(data_dir),
                    "-o",
                    options,
                    "-l",
                    str(log_path),
                    "-w",
                    "-t",
                    str(int(timeout_s)),
                    "start",
                ]
            ),
            what="pg_ctl start",
            timeout=timeout_s + 30,
        )
        _wait_in_production(data_dir, tools, log_path, deadline=time.monotonic() + timeout_s)
    except BackupFailed as error:
        raise BackupFailed(f"{error}; server log: {_tail(log_path, log_offset)}") from None
    lines = _recovery_lines(log_path, log_offset)
    last = _last_transaction(lines)
    seconds = time.monotonic() - started
    progress(f"  recovered in {seconds:.1f} s" + (f"; last transaction {last.isoformat()}" if last else ""))
    for line in lines:
        logger.info("recovery: %s", line)
    return RecoveredServer(data_dir, port, tools, log_path, socket_dir, lines, last, seconds)


_MINIMAL_HBA = (
    "# written by `evolution restore`: local connections only; replace with your cluster's pg_hba.conf\n"
    "local   all   all                 peer\n"
    "host    all   all   127.0.0.1/32  scram-sha-256\n"
    "host    all   all   ::1/128       scram-sha-256\n"
)


def controldata_state(data_dir: Path, tools: PgTools) -> str:
    out = run_tool(
        tools.as_server_user([tools.program("pg_controldata"), str(data_dir)]), what="pg_controldata"
    )
    for line in out.splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _alive(data_dir: Path, tools: PgTools) -> bool:
    out = subprocess.run(
        tools.as_server_user([tools.program("pg_ctl"), "-D", str(data_dir), "status"]),
        capture_output=True,
        check=False,
    )
    return out.returncode == 0


def _wait_in_production(data_dir: Path, tools: PgTools, log_path: Path, deadline: float) -> None:
    while True:
        state = controldata_state(data_dir, tools)
        if state == "in production" and not (data_dir / "recovery.signal").exists():
            return
        if not _alive(data_dir, tools):
            raise BackupFailed(f"the server stopped during recovery (cluster state: {state})")
        if time.monotonic() > deadline:
            raise BackupFailed(f"recovery did not finish in time (cluster state: {state})")
        time.sleep(0.1)


def _read_log(log_path: Path, offset: int) -> list[str]:
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return []
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace").splitlines()


def _tail(log_path: Path, offset: int) -> str:
    lines = [line for line in _read_log(log_path, offset) if "FATAL" in line or "ERROR" in line]
    return " | ".join((lines or _read_log(log_path, offset))[-4:]) or "(empty)"


def _recovery_lines(log_path: Path, offset: int) -> list[str]:
    return [line for line in _read_log(log_path, offset) if any(k in line for k in _RECOVERY_LINES)]


def _last_transaction(lines: list[str]) -> datetime | None:
    """The commit time of the last transaction replayed, as the server logged it at the end of recovery."""
    for line in reversed(lines):
        if "last completed transaction" in line or "recovery stopping" in line:
            match = re.search(r"(?:log time|time) " + _LOG_TIME, line)
            if match:
                return _parse_log_time(match.group(1))
    return None


def _parse_log_time(text: str) -> datetime | None:
    value = text.replace(" ", "T", 1)
    if re.search(r"[+-]\d\d$", value):
        value += ":00"
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None

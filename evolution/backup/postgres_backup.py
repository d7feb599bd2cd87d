"""PostgreSQL's side of a backup: WAL archiving on the server, and base backups.

Two things together make a PostgreSQL registry recoverable to any moment (recovery itself:
:mod:`evolution.backup.postgres_recovery`):

* **WAL archiving** on the server, so that every completed WAL segment is copied to an archive directory (or
  bucket) as soon as it is full, or after ``archive_timeout`` seconds of activity at the latest::

      wal_level = replica
      archive_mode = on
      archive_command = 'test ! -f "/srv/wal/%f" && cp "%p" "/srv/wal/%f.tmp" && sync "/srv/wal/%f.tmp"
                         && mv "/srv/wal/%f.tmp" "/srv/wal/%f" && sync "/srv/wal"'
      archive_timeout = 60

  (one line; :func:`evolution.backup.postgres_conf.archive_settings` writes it for a directory). The command
  never overwrites a segment, and a segment appears under its final name only once it is complete and durable.
  ``archive_timeout`` bounds the data at risk when the server is lost: at most the last ``archive_timeout``
  seconds plus one copy. ``archive_mode`` needs a restart; ``archive_command`` and ``archive_timeout`` only a
  reload. :func:`server_status` reads what the server archives, :func:`wait_archived` waits for a segment.

* **Base backups** with ``pg_basebackup`` (here in tar format, gzip-compressed, or plain), taken with
  ``-X stream`` so that each one also holds the WAL it needs to be consistent on its own. The role that takes
  it needs the REPLICATION attribute (or superuser) and a ``replication`` line in ``pg_hba.conf``.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from evolution.backup.manifest import BackupFailed, Progress, no_progress
from evolution.backup.postgres_server import PgConnection, PgTools, run_tool
from evolution.errors import Conflict
from evolution.timeutil import as_utc

PgFormat = Literal["tar", "plain"]


# -- WAL archiving: what the server says and does ---------------------------------------------------------


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

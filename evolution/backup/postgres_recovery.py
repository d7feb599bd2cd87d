"""PostgreSQL point-in-time recovery (PITR): a base backup laid down, the WAL archive replayed, the server started.

Recovery lays a base backup down into a new, empty data directory, writes ``recovery.signal`` and, in
``postgresql.auto.conf``, a ``restore_command`` that reads the archive and a recovery target
(:class:`evolution.backup.postgres_conf.RecoveryTarget`): a time (``recovery_target_time``), a named restore
point made earlier with ``pg_create_restore_point`` (``recovery_target_name``) or a WAL position
(``recovery_target_lsn``); without a target it replays the whole archive. ``recovery_target_action = 'promote'``
makes the server leave recovery at the target and accept writes on a new timeline. The server replays until
then; :func:`restore_base_backup` waits for ``pg_controldata`` to report "in production", and reads from the
server log where recovery stopped.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from evolution.backup.manifest import BackupFailed, Progress, no_progress
from evolution.backup.postgres_backup import PgFormat
from evolution.backup.postgres_conf import MINIMAL_HBA, RecoveryTarget, conf_lines, restore_command
from evolution.backup.postgres_server import PgTools, run_tool
from evolution.errors import Conflict, InvalidInput, NotFound
from evolution.timeutil import as_utc

logger = logging.getLogger(__name__)

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
    for name, default in (("postgresql.conf", ""), ("pg_hba.conf", MINIMAL_HBA), ("pg_ident.conf", "")):
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

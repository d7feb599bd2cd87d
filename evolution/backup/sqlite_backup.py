"""SQLite: a consistent copy while writers run, through SQLite's online backup API.

The source connection opens a read transaction first, so the copy is exactly the database as of that
transaction's snapshot: every transaction committed before it, none after. In WAL mode readers never block the
writer, so the services keep appending while the copy is made, and the copy is taken in one step (a step-wise
copy would restart whenever another connection writes, and might never finish under a steady load).

The copy is switched to a rollback journal (one self-contained file), checked with ``PRAGMA integrity_check``
and ``foreign_key_check``, and counted table by table; its SHA-256 goes in the backup manifest.

Restoring goes through the same API in the other direction, into the configured database file: SQLite replaces
the content transactionally and takes care of the target's WAL and shared-memory files (copying a file over a
database that has a ``-wal`` beside it would corrupt it).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.engine import make_url

from evolution.backup.manifest import BackupFailed
from evolution.errors import Conflict, IntegrityViolation, InvalidInput, NotFound
from evolution.timeutil import utcnow

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60.0


class SqliteCopy(BaseModel):
    path: Path
    consistent_at: datetime
    schema_revision: str | None
    row_counts: dict[str, int]
    pages: int


def sqlite_path(url: str) -> Path:
    """The database file of a ``sqlite:///`` URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise InvalidInput(f"{parsed.render_as_string(hide_password=True)} is not a SQLite URL")
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidInput("an in-memory SQLite database cannot be backed up or restored")
    return Path(parsed.database)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def check_database(path: Path) -> None:
    """``integrity_check`` and ``foreign_key_check`` on a database file; IntegrityViolation if either fails."""
    conn = _connect(path)
    try:
        try:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
        except sqlite3.DatabaseError as error:
            raise IntegrityViolation(f"{path} is not a sound SQLite database: {error}") from None
    finally:
        conn.close()
    if result != ["ok"]:
        raise IntegrityViolation(f"{path} fails integrity_check: {'; '.join(result[:5])}")
    if dangling:
        raise IntegrityViolation(f"{path} fails foreign_key_check: {len(dangling)} dangling references")


def describe(path: Path) -> tuple[str | None, dict[str, int], int]:
    """(alembic revision, rows per table, pages) of a database file."""
    conn = _connect(path)
    try:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        counts = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
        revision = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()
    return revision, counts, pages


def _readable(path: Path) -> bool:
    try:
        conn = _connect(path)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return True


def backup_sqlite(source: Path, dest: Path) -> SqliteCopy:
    """Copy the live database ``source`` to ``dest`` (which must not exist), consistently and checked."""
    if not source.is_file():
        raise NotFound(f"SQLite registry {source} does not exist")
    if dest.exists():
        raise Conflict(f"{dest} already exists; a backup never overwrites")
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = _connect(source)
    try:
        target = sqlite3.connect(str(dest), isolation_level=None)
        try:
            # The read transaction fixes the snapshot the copy is made from; backup() runs inside it.
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            consistent_at = utcnow()
            try:
                src.backup(target, pages=-1)
            except sqlite3.Error as error:
                raise BackupFailed(f"SQLite online backup of {source} failed: {error}") from None
            finally:
                src.execute("COMMIT")
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            target.close()
    finally:
        src.close()
    check_database(dest)
    revision, counts, pages = describe(dest)
    logger.info("SQLite backup of %s: %d pages, %d tables", source, pages, len(counts))
    return SqliteCopy(
        path=dest, consistent_at=consistent_at, schema_revision=revision, row_counts=counts, pages=pages
    )


def restore_sqlite(copy: Path, target: Path, *, keep_previous: bool = True) -> Path | None:
    """Replace the content of ``target`` with the checked copy; returns where the previous content was kept.

    The previous database, if any, is first saved beside it (``registry.db.pre-restore-<time>``) unless
    ``keep_previous`` is False: a restore never destroys the only copy of anything.
    """
    check_database(copy)
    target.parent.mkdir(parents=True, exist_ok=True)
    saved: Path | None = None
    exists = target.exists() and target.stat().st_size > 0
    readable = exists and _readable(target)
    if keep_previous and exists:
        saved = target.with_name(f"{target.name}.pre-restore-{utcnow().strftime('%Y%m%dT%H%M%SZ')}")
        if readable:
            live = _connect(target)
            try:
                keep = sqlite3.connect(str(saved), isolation_level=None)
                try:
                    live.backup(keep, pages=-1)
                    keep.execute("PRAGMA journal_mode=DELETE")
                finally:
                    keep.close()
            finally:
                live.close()
        else:  # a damaged database cannot be read through SQLite: keep its bytes as they are
            shutil.copy2(target, saved)
    if exists and not readable:
        logger.warning("registry %s is not a readable SQLite database; replacing the file", target)
        for stale in (target, target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
            stale.unlink(missing_ok=True)
    src = _connect(copy)
    try:
        dst = _connect(target)
        try:
            try:
                src.backup(dst, pages=-1)
            except sqlite3.Error as error:
                raise BackupFailed(
                    f"restoring {target} failed: {error} (is a service still using it? stop it first)"
                ) from None
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()
    finally:
        src.close()
    check_database(target)
    return saved

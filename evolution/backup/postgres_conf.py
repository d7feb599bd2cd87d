"""PostgreSQL configuration text for WAL archiving and recovery: pure, no server and no files.

Owns the ``archive_command`` and ``restore_command`` for an archive directory, the archiving settings a server
needs (see :mod:`evolution.backup.postgres_backup`), ``postgresql.conf`` lines, the minimal ``pg_hba.conf`` a
recovered server starts with when the backup holds none, and :class:`RecoveryTarget`: where recovery stops, as
recovery settings (see :mod:`evolution.backup.postgres_recovery`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, model_validator

from evolution.errors import InvalidInput
from evolution.timeutil import as_utc

DEFAULT_ARCHIVE_TIMEOUT_S = 60
_UNSAFE_IN_COMMAND = re.compile(r"[\"'$`\\%\n\r\x00]")

MINIMAL_HBA = (
    "# written by `evolution restore`: local connections only; replace with your cluster's pg_hba.conf\n"
    "local   all   all                 peer\n"
    "host    all   all   127.0.0.1/32  scram-sha-256\n"
    "host    all   all   ::1/128       scram-sha-256\n"
)


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
    """The server settings for WAL archiving into ``archive_dir`` (see :mod:`evolution.backup.postgres_backup`)."""
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

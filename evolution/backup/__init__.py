"""Backup and restore of a home: the registry (SQLite online backup; PostgreSQL base backup + WAL archive, PITR),
the artifact store and the key directory, under one signed manifest. See docs/backup-and-restore.md."""

from __future__ import annotations

from evolution.backup.manifest import ALL_PARTS, BackupFailed, BackupManifest, Part, list_backups
from evolution.backup.postgres_backup import RecoveryTarget
from evolution.backup.service import (
    BackupResult,
    RestoreResult,
    choose_backup,
    create_backup,
    parse_parts,
    restore_backup,
)

__all__ = [
    "ALL_PARTS",
    "BackupFailed",
    "BackupManifest",
    "BackupResult",
    "Part",
    "RecoveryTarget",
    "RestoreResult",
    "choose_backup",
    "create_backup",
    "list_backups",
    "parse_parts",
    "restore_backup",
]

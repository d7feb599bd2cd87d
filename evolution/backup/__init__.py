"""Backup and restore of a home: the registry (SQLite online backup; PostgreSQL base backup + WAL archive, PITR),
the artifact store and the key directory, under one signed manifest. See docs/backup-and-restore.md.
May import integrity and the shared modules at the top of evolution/.
"""

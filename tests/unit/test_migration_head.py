"""`upgrade_to_head` leaves a database already at the packaged head alone without loading Alembic (every command
and process starts with it), and still migrates one that is behind or new; on SQLite in one transaction, so that
processes starting together (`evolution up`) migrate in turn instead of both running the same migration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event

from evolution.registry.db import alembic_config, database_revisions, packaged_head, upgrade_to_head


def test_the_packaged_head_read_from_the_scripts_is_alembics() -> None:
    assert packaged_head() == ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_a_new_database_is_migrated_and_then_left_alone_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    assert database_revisions(url) is None  # no alembic_version table yet
    upgrade_to_head(url)
    assert database_revisions(url) == {packaged_head()}
    code = (
        "import sys\n"
        "from evolution.registry.db import upgrade_to_head\n"
        f"upgrade_to_head({url!r})\n"
        "print('alembic' in sys.modules)\n"
    )
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "False"


def test_a_database_behind_the_head_is_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    assert head is not None
    before = script.get_revision(head).down_revision
    assert isinstance(before, str)
    command.upgrade(alembic_config(url), before)
    assert database_revisions(url) == {before}
    upgrade_to_head(url)
    assert database_revisions(url) == {head}


def test_an_sqlite_upgrade_is_one_transaction_so_processes_starting_together_migrate_in_turn(
    tmp_path: Path,
) -> None:
    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    event.listen(Engine, "commit", count)
    try:
        upgrade_to_head(f"sqlite:///{tmp_path / 'registry.db'}")
    finally:
        event.remove(Engine, "commit", count)
    assert len(commits) == 1

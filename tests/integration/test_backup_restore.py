"""Backup and restore of an embedded home (SQLite, filesystem artifacts, local keys), then `verify` on it.

The home is demo-like: two tenants with signed events and sealed snapshots, a trained and signed champion, a
baseline reset and a drift report, all through the real services. Backups are taken with the services' own
store and signer; restores go into fresh homes.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolution.backup.create import create_backup
from evolution.backup.home import parse_parts
from evolution.backup.keys_backup import KEYS_SUBDIR
from evolution.backup.manifest import (
    MANIFEST_NAME,
    BackupManifest,
    list_backups,
    read_manifest,
    record_file,
    write_manifest,
)
from evolution.backup.postgres_conf import RecoveryTarget, archive_command, conf_lines, restore_command
from evolution.backup.restore import restore_backup
from evolution.backup.sqlite_backup import check_database
from evolution.cli.main import app
from evolution.demo.scenario import Scenario
from evolution.errors import Conflict, IntegrityViolation, InvalidInput
from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.integrity.signing import LocalSigner
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.verification import verify_all
from evolution.platform.wiring import build_services
from evolution.registry.db import make_engine, make_session_factory
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.support.models import install_model
from tests.support.progress import RecordingMeter
from tests.support.scenario import ADMIN, seed_tenant

TENANTS = ("acme", "beta")


def _build_demo_home(root: Path) -> Path:
    home = root / "home"
    svc = build_services(Settings(home=home))
    try:
        for tenant in TENANTS:
            seed_tenant(svc, Scenario(tenant_id=tenant, history_rows=300))
            svc.snapshots.seal(ADMIN, tenant, utcnow())
        install_model(svc, "acme", root / "work", ModelState.CHAMPION)
        svc.baselines.reset(ADMIN, "acme", "yield", "new irrigation regime", svc.keyring)
        scanner = svc.drift_scanner
        snapshot = svc.snapshots.latest(ADMIN, "acme")
        assert snapshot is not None
        scanner.scan("acme", "yield", snapshot.id)
    finally:
        svc.close()
    return home


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_demo_home(tmp_path_factory.mktemp("demo"))


def _backup(
    home: Path,
    dest: Path,
    parts: tuple[str, ...] = ("registry", "artifacts", "keys"),
    meter: RecordingMeter | None = None,
) -> Path:
    svc = build_services(Settings(home=home), migrate=False)
    try:
        result = create_backup(
            svc.settings,
            dest,
            list(parts),  # type: ignore[arg-type]
            signer=svc.signer,
            store=svc.store,
            registry_tenants=svc.tenants.tenant_ids(),
            meter=meter,
        )
    finally:
        svc.close()
    assert result.problems == []
    return result.path


def _restore(home: Path, source: Path, **kwargs: object) -> None:
    settings = Settings(home=home)
    restore_backup(settings, source, store=FilesystemArtifactStore(settings.artifacts_dir), **kwargs)  # type: ignore[arg-type]


def _verify(home: Path, meter: RecordingMeter | None = None) -> tuple[bool, dict[str, int], list[str]]:
    svc = build_services(Settings(home=home))
    try:
        report = verify_all(svc, meter=meter)
    finally:
        svc.close()
    kinds: dict[str, int] = {}
    for check in report.checks:
        kinds[check.kind] = kinds.get(check.kind, 0) + 1
    return report.ok, kinds, [f"{c.kind} {c.subject}: {c.detail}" for c in report.failures]


def _rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _flip_byte(path: Path, offset: int = -100) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- consistency under load ------------------------------------------------------------------------------


def test_sqlite_backup_taken_while_a_writer_appends_audit_rows_is_consistent_and_verifies(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    svc = build_services(Settings(home=home))
    svc.tenants.ensure_tenant(ADMIN, "acme")
    system = Principal.system("acme")
    stop = threading.Event()
    written = [0]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            while not stop.is_set():
                svc.registry.register_version(system, "acme", "yield", request_id=uuid.uuid4().hex)
                written[0] += 1
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 20:  # the writer is well under way before the backup starts
            threading.Event().wait(0.01)
        path = _backup(home, tmp_path / "backups", ("registry",))
        during = written[0]
        while written[0] < during + 20:  # and keeps writing after it
            threading.Event().wait(0.01)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    final_audit = svc.registry.verify_audit(ADMIN, "acme")
    svc.close()

    copy = path / "registry" / "registry.db"
    check_database(copy)  # integrity_check and foreign_key_check
    manifest = read_manifest(path)
    assert manifest.registry is not None and manifest.registry.backend == "sqlite"
    engine = make_engine(f"sqlite:///{copy}")
    try:
        copied = ModelRegistryService(make_session_factory(engine)).verify_audit(ADMIN, "acme")
    finally:
        engine.dispose()
    assert copied.ok, copied.problems
    assert 20 < copied.entries < final_audit.entries  # a prefix of the chain: taken while the writer ran
    assert manifest.registry.row_counts["audit_log"] == copied.entries
    assert manifest.registry.row_counts["model_versions"] == copied.entries - 1  # + the tenant's creation


# -- full restore -----------------------------------------------------------------------------------------


def test_full_restore_into_a_fresh_home_has_every_row_artifact_and_key_and_verifies_with_progress_that_adds_up(
    demo_home: Path, tmp_path: Path
) -> None:
    meter = RecordingMeter()
    backup = _backup(demo_home, tmp_path / "backups", meter=meter)
    fresh = tmp_path / "fresh"
    _restore(fresh, tmp_path / "backups", meter=meter)

    source_rows, restored_rows = _rows(demo_home / "registry.db"), _rows(fresh / "registry.db")
    assert source_rows.keys() == restored_rows.keys()
    for table, rows in source_rows.items():
        assert restored_rows[table] == rows, table
    assert sum(len(r) for r in source_rows.values()) > 600

    assert _files(fresh / "artifacts") == _files(demo_home / "artifacts")
    assert len(_files(demo_home / "artifacts")) >= 5
    assert _files(fresh / "keys") == _files(demo_home / "keys")
    for key in (fresh / "keys").rglob("*"):
        expected = 0o700 if key.is_dir() else 0o600
        assert stat.S_IMODE(key.stat().st_mode) == expected, key
    for key in (backup / KEYS_SUBDIR).rglob("*"):  # in the backup too
        assert stat.S_IMODE(key.stat().st_mode) == (0o700 if key.is_dir() else 0o600), key

    ok, kinds, failures = _verify(fresh, meter)
    assert ok, failures
    assert kinds["snapshot"] == 2 and kinds["model"] == 1 and kinds["drift-report"] >= 1
    assert kinds["baseline-reset"] == 1 and kinds["audit-chain"] >= 2

    # Each stage reported a task, and every task's advances add up to its total (issue 17, item 3).
    assert meter.unbalanced() == [], meter.tasks
    artifacts = len(_files(demo_home / "artifacts"))
    totals = {t.description: t.total for t in meter.tasks}
    assert totals["back up artifacts"] == artifacts
    assert totals["check the backup's files"] == sum(
        p.stat().st_size
        for p in [*backup.joinpath("registry").rglob("*"), *backup.joinpath(KEYS_SUBDIR).rglob("*")]
        if p.is_file()
    )
    assert totals["check the backup's artifacts"] == totals["restore artifacts"] == artifacts
    signed = kinds["snapshot"] + kinds["model"] + kinds["drift-report"] + kinds["baseline-reset"]
    assert sum(t.total for t in meter.named("verify ") if t.description.endswith("signed records")) == signed
    assert {t.description for t in meter.named("verify ")} == {
        f"verify {tenant}: {what}" for tenant in TENANTS for what in ("signed records", "stored objects")
    }


def test_second_backup_copies_only_new_artifacts_and_each_manifest_lists_all(
    demo_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    dest = tmp_path / "backups"
    first = read_manifest(_backup(home, dest, ("registry", "artifacts")))
    svc = build_services(Settings(home=home))
    try:
        seed_tenant(svc, Scenario(tenant_id="gamma", history_rows=120))
        svc.snapshots.seal(ADMIN, "gamma", utcnow())
    finally:
        svc.close()
    second = read_manifest(_backup(home, dest, ("registry", "artifacts")))
    assert first.artifacts is not None and second.artifacts is not None
    assert first.artifacts.copied == len(first.artifacts.entries) and first.artifacts.reused == 0
    new = {(e.tenant, e.name) for e in second.artifacts.entries} - {
        (e.tenant, e.name) for e in first.artifacts.entries
    }
    assert new and all(t == "gamma" for t, _ in new)
    assert second.artifacts.copied == len(new)
    assert second.artifacts.reused == len(first.artifacts.entries)

    fresh = tmp_path / "fresh"
    _restore(fresh, dest)  # the newest backup, whose artifacts came partly from the first run
    shutil.copytree(home / "keys", fresh / "keys")
    ok, kinds, failures = _verify(fresh)
    assert ok, failures
    assert kinds["snapshot"] == 3


def test_restore_to_a_time_picks_the_newest_sqlite_backup_taken_before_it(
    demo_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    dest = tmp_path / "backups"
    first = read_manifest(_backup(home, dest))
    svc = build_services(Settings(home=home))
    svc.tenants.ensure_tenant(ADMIN, "later")
    svc.close()
    second = read_manifest(_backup(home, dest))
    assert first.registry and second.registry
    between = (
        first.registry.consistent_at + (second.registry.consistent_at - first.registry.consistent_at) / 2
    )

    fresh = tmp_path / "fresh"
    _restore(fresh, dest, to_time=between)
    restored = build_services(Settings(home=fresh))
    try:
        assert restored.tenants.tenant_ids() == sorted(TENANTS)
    finally:
        restored.close()
    with pytest.raises(Exception, match="no complete backup taken before"):
        _restore(tmp_path / "other", dest, to_time=first.registry.consistent_at - timedelta(seconds=1))


# -- refusing what does not match ----------------------------------------------------------------------------


def test_a_flipped_byte_in_an_artifact_of_the_backup_is_refused_and_nothing_is_restored(
    demo_home: Path, tmp_path: Path
) -> None:
    backup = _backup(demo_home, tmp_path / "backups")
    manifest = read_manifest(backup)
    assert manifest.artifacts is not None
    entry = next(e for e in manifest.artifacts.entries if e.kind == "blob")
    pooled = next((tmp_path / "backups" / "pool" / entry.tenant).rglob(entry.sha256))
    _flip_byte(pooled)
    fresh = tmp_path / "fresh"
    with pytest.raises(IntegrityViolation, match=f"{entry.tenant}/{entry.name}.*Nothing was restored"):
        _restore(fresh, backup)
    assert not (fresh / "registry.db").exists() and not (fresh / "keys").exists()


def test_a_flipped_byte_in_the_registry_copy_is_refused(demo_home: Path, tmp_path: Path) -> None:
    backup = _backup(demo_home, tmp_path / "backups")
    _flip_byte(backup / "registry" / "registry.db", offset=-5000)
    with pytest.raises(IntegrityViolation, match=r"registry/registry\.db: sha256"):
        _restore(tmp_path / "fresh", backup)


def test_an_edited_manifest_without_the_key_fails_its_signature(demo_home: Path, tmp_path: Path) -> None:
    backup = _backup(demo_home, tmp_path / "backups")
    copy = backup / "registry" / "registry.db"
    _flip_byte(copy, offset=-5000)
    manifest = read_manifest(backup)
    assert manifest.registry is not None
    manifest.registry.files = [record_file(backup, copy)]  # digests now match the tampered copy
    (backup / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    with pytest.raises(IntegrityViolation, match="does not verify"):
        _restore(tmp_path / "fresh", backup)


def test_a_consistently_forged_backup_restores_but_verify_reports_the_broken_audit_chain(
    demo_home: Path, tmp_path: Path
) -> None:
    """Whoever holds the key backup can re-sign a manifest; the hash-chained audit log still gives it away."""
    backup = _backup(demo_home, tmp_path / "backups")
    copy = backup / "registry" / "registry.db"
    conn = sqlite3.connect(copy)
    triggers = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
    for trigger in triggers:
        conn.execute(f'DROP TRIGGER "{trigger}"')
    conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = (SELECT min(id) FROM audit_log)")
    conn.commit()
    conn.close()
    manifest: BackupManifest = read_manifest(backup)
    assert manifest.registry is not None
    manifest.registry.files = [record_file(backup, copy)]
    write_manifest(backup, manifest, LocalSigner(backup / KEYS_SUBDIR))

    fresh = tmp_path / "fresh"
    _restore(fresh, backup)
    ok, _kinds, failures = _verify(fresh)
    assert not ok
    assert any(f.startswith("audit-chain") for f in failures), failures


def test_a_backup_signed_by_another_key_than_the_homes_is_refused(demo_home: Path, tmp_path: Path) -> None:
    backup = _backup(demo_home, tmp_path / "backups", ("registry", "artifacts"))
    fresh = tmp_path / "fresh"
    LocalSigner(fresh / "keys")  # this home already has a (different) signing key
    with pytest.raises(IntegrityViolation, match="restore the keys that belong to it first"):
        _restore(fresh, backup)


def test_a_corrupted_source_artifact_is_reported_and_the_rest_backed_up(
    demo_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    store = FilesystemArtifactStore(home / "artifacts")
    digest = store.list_digests("beta")[0]
    _flip_byte(next((home / "artifacts" / "beta").rglob(digest)), offset=0)
    svc = build_services(Settings(home=home), migrate=False)
    try:
        result = create_backup(
            svc.settings, tmp_path / "backups", ["artifacts"], signer=svc.signer, store=svc.store
        )
    finally:
        svc.close()
    assert len(result.problems) == 1 and digest in result.problems[0]
    assert result.manifest.artifacts is not None
    names = {e.name for e in result.manifest.artifacts.entries}
    assert digest not in names and len(names) >= 4


# -- the CLI -----------------------------------------------------------------------------------------------


def test_cli_backup_list_restore_refuses_a_live_home_without_yes_and_verifies(
    demo_home: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    dest = tmp_path / "backups"

    created = runner.invoke(app, ["backup", "create", str(dest)], env={"EVOLUTION_HOME": str(home)})
    assert created.exit_code == 0, created.output
    assert "registry (sqlite)" in created.output and "written to" in created.output
    listed = runner.invoke(app, ["backup", "list", str(dest)], env={"EVOLUTION_HOME": str(home)})
    assert listed.exit_code == 0 and "registry,artifacts,keys" in listed.output
    [only] = list_backups(dest)
    assert only.backup_id in listed.output

    fresh = tmp_path / "fresh"
    restored = runner.invoke(app, ["restore", str(dest)], env={"EVOLUTION_HOME": str(fresh)})
    assert restored.exit_code == 0, restored.output
    assert ", 0 failed" in restored.output and "restore + verify took" in restored.output

    again = runner.invoke(app, ["restore", str(dest)], env={"EVOLUTION_HOME": str(fresh)})
    assert again.exit_code == 1 and "pass --yes" in again.output

    blob = FilesystemArtifactStore(fresh / "artifacts").list_digests("acme")[0]
    _flip_byte(next((fresh / "artifacts" / "acme" / "sha256").rglob(blob)), offset=0)  # damage the live home
    forced = runner.invoke(app, ["restore", str(dest), "--yes"], env={"EVOLUTION_HOME": str(fresh)})
    assert forced.exit_code == 0, forced.output
    assert "1 repaired" in forced.output and ", 0 failed" in forced.output
    assert list(fresh.glob("registry.db.pre-restore-*"))


def test_cli_restore_exits_nonzero_when_verify_fails(demo_home: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    _backup(demo_home, dest, ("registry", "artifacts"))  # no keys: the fresh home signs with a new key
    result = CliRunner().invoke(app, ["restore", str(dest)], env={"EVOLUTION_HOME": str(tmp_path / "fresh")})
    assert result.exit_code == 1
    assert "warning: neither this home nor the backup has a signing key" in result.output
    assert "FAILED" in result.output


def test_cli_restore_of_an_older_registry_is_reported_until_the_restore_acknowledgement_then_verifies(
    demo_home: Path, tmp_path: Path
) -> None:
    """The store outlives the registry: restoring an older registry backup leaves acme's chain behind a checkpoint
    signed after the backup. `--no-acknowledge` leaves it reported; `audit acknowledge-restore` settles it; a plain
    `restore` (here to before that acknowledgement) acknowledges by itself."""
    runner = CliRunner()
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    env = {"EVOLUTION_HOME": str(home)}
    dest = tmp_path / "backups"
    assert runner.invoke(app, ["backup", "create", str(dest), "--what", "registry"], env=env).exit_code == 0
    svc = build_services(Settings(home=home), migrate=False)
    try:
        for gpu_hours in (10.0, 20.0, 30.0):  # audited after the backup, then checkpointed
            svc.tenants.set_quota(ADMIN, "acme", gpu_hours_quota=gpu_hours, reason="after the backup")
        assert svc.audit_checkpoints.checkpoint("acme").written
    finally:
        svc.close()
    restore = ["restore", str(dest), "--what", "registry", "--yes"]

    unacknowledged = runner.invoke(app, [*restore, "--no-acknowledge"], env=env)
    assert unacknowledged.exit_code == 1
    assert "FAILED acme audit-checkpoints" in unacknowledged.output and "truncated" in unacknowledged.output

    reason = "restored the registry backup from before INC-9"
    acknowledged = runner.invoke(
        app, ["audit", "acknowledge-restore", "-t", "acme", "--reason", reason], env=env
    )
    assert acknowledged.exit_code == 0, acknowledged.output
    assert "restore acknowledged for acme (audit-checkpoints/acknowledged-restores/000001.json)" in (
        acknowledged.output
    )
    assert "checkpoints resume: signed at" in acknowledged.output
    assert runner.invoke(app, ["audit", "checkpoint", "-t", "acme"], env=env).exit_code == 0
    again = runner.invoke(app, ["audit", "acknowledge-restore", "-t", "acme", "--reason", reason], env=env)
    assert again.exit_code == 2 and "nothing to acknowledge" in again.output

    restored = runner.invoke(app, restore, env=env)
    assert restored.exit_code == 0, restored.output
    assert "restore acknowledged for acme" in restored.output and ", 0 failed" in restored.output
    svc = build_services(Settings(home=home), migrate=False)
    try:
        [entry] = [
            e
            for e in svc.registry.audit_trail(ADMIN, "acme", subject_id="acme")
            if e.action == "audit.restore_acknowledged"
        ]
    finally:
        svc.close()
    assert entry.details["backup_id"] == list_backups(dest)[0].backup_id
    assert entry.details["reason"].startswith(
        f"evolution restore of backup {entry.details['backup_id']} to backup point"
    )
    assert entry.details["supersedes_acknowledgements"] == [
        "audit-checkpoints/acknowledged-restores/000001.json"
    ]


def test_restore_refuses_a_live_home(demo_home: Path, tmp_path: Path) -> None:
    backup = _backup(demo_home, tmp_path / "backups")
    with pytest.raises(Conflict, match="pass --yes"):
        _restore(demo_home, backup)


# -- the pieces that need no server ---------------------------------------------------------------------------


def test_archive_and_restore_commands_quote_the_path_and_refuse_shell_metacharacters(tmp_path: Path) -> None:
    archive = tmp_path / "wal archive"
    command = archive_command(archive)
    assert f'test ! -f "{archive}/%f"' in command and f'mv "{archive}/%f.tmp" "{archive}/%f"' in command
    assert restore_command(archive) == f'cp "{archive}/%f" "%p"'
    assert conf_lines({"archive_command": "a 'b'"}) == "archive_command = 'a ''b'''\n"
    for bad in ('x"; rm -rf /', "x$(id)", "x`id`", "x%p"):
        with pytest.raises(InvalidInput, match="cannot be used safely"):
            archive_command(tmp_path / bad)


def test_recovery_target_takes_at_most_one_target_with_a_time_zone() -> None:
    at = utcnow()
    assert RecoveryTarget(time=at).settings()["recovery_target_time"] == at.isoformat()
    assert RecoveryTarget(name="before-upgrade").settings()["recovery_target_action"] == "promote"
    assert RecoveryTarget().settings() == {} and RecoveryTarget().describe() == "the end of the archived WAL"
    with pytest.raises(ValueError, match="at most one"):
        RecoveryTarget(time=at, name="x")
    with pytest.raises(ValueError, match="time zone"):
        RecoveryTarget(time=at.replace(tzinfo=None))
    with pytest.raises(ValueError, match="not an LSN"):
        RecoveryTarget(lsn="16/zz")


def test_parts_are_validated() -> None:
    assert parse_parts("keys, registry") == ["registry", "keys"]
    assert parse_parts(None) == ["registry", "artifacts", "keys"]
    with pytest.raises(InvalidInput, match="--what"):
        parse_parts("registry,secrets")

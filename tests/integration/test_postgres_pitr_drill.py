"""Point-in-time recovery drill on a real PostgreSQL: base backup + WAL archive → exactly the rows before T.

A dedicated cluster archives its WAL into a directory. A base backup is taken; batch A commits through the
real services (a tenant with signed events and a sealed snapshot, model versions, their audit rows); the
server's clock is read as the target T; batch B commits (another tenant, more versions and audit rows on A's
tenant), and A's audit chain is checkpointed, so the write-once store holds a signed checkpoint of a chain longer
than the one at T. The backup is recovered to T into a new data directory on another port, through the same
``restore_backup`` the CLI calls, into a home whose store kept that checkpoint (as production's bucket does): every
table then holds exactly the rows it held at T, none of B's. The restore acknowledgement ``evolution restore``
writes (``acknowledge_restored``) supersedes the checkpoint beyond the recovered chain, so ``verify`` passes; more
audit entries are checkpointed again in the new epoch; and a truncation nobody acknowledged — the tail deleted by
the database owner — is still reported.

RPO: how long the last commit of batch B stays exposed — from its commit until the WAL segment holding it is in
the archive (bounded by ``archive_timeout``; 1 s here, 60 s recommended in production). RTO: seconds from the
start of the restore until verify has passed. ``bench/bench_restore_drill.py`` runs the same drill and prints
the figures.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evolution.backup.create import create_backup
from evolution.backup.postgres_backup import switch_wal, wait_archived, wal_file_of_current_lsn
from evolution.backup.postgres_conf import archive_settings
from evolution.backup.postgres_server import PgConnection, PgTools
from evolution.backup.restore import restore_backup
from evolution.cli.main import app
from evolution.demo.scenario import Scenario
from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.lifecycle import ModelState, TransitionRequest
from evolution.platform.restores import acknowledge_restored
from evolution.platform.settings import Settings
from evolution.platform.verification import verify_all
from evolution.platform.wiring import Services, build_services
from evolution.registry.audit_checkpoints import CHECKPOINT_PREFIX, checkpoint_key
from evolution.security import Principal
from evolution.timeutil import as_utc
from tests.support.pg_cluster import postgres_cluster, server_owned_dir
from tests.support.ports import free_port
from tests.support.postgres import create_database
from tests.support.scenario import ADMIN, seed_tenant

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TENANT_A = "drill-a"
TENANT_B = "drill-b"


@dataclass
class DrillOutcome:
    target: datetime
    rows_at_target: dict[str, list[tuple[Any, ...]]]
    rows_restored: dict[str, list[tuple[Any, ...]]]
    tenants_restored: list[str]
    versions_b: list[str]
    verify_ok: bool
    verify_failures: list[str]
    verify_kinds: dict[str, int]
    rpo_exposure_s: float
    archive_timeout_s: int
    restore_s: float
    recovery_s: float
    verify_s: float
    last_transaction_at: datetime | None
    recovery_log: list[str] = field(default_factory=list)
    checkpoint_after_target: str = ""  # the key of A's checkpoint signed after T, kept by the store
    acknowledged: dict[str, list[str]] = field(default_factory=dict)  # tenant -> the checkpoints superseded
    acknowledgement_refusals: list[str] = field(default_factory=list)
    audit_entries_acknowledged: int = (
        0  # A's chain once acknowledged: the recovered entries and the acknowledgement's
    )
    resumed_checkpoint: str | None = None  # written after more entries, in the acknowledgement's epoch
    resumed_ok: bool = False
    resumed_failures: list[str] = field(default_factory=list)
    unacknowledged_failures: list[str] = field(default_factory=list)  # verify after the owner cut the tail

    @property
    def rto_s(self) -> float:
        return self.restore_s + self.verify_s


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the registry database, sorted (as the superuser: no row-level filter)."""
    conn = PgConnection.from_url(url)
    with conn.connect() as db:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            ).fetchall()
        ]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def _versions(services: Services, tenant: str, count: int) -> list[str]:
    """Register versions and move each to TRAINING: two audit rows apiece, through the registry service."""
    system = Principal.system(tenant)
    ids = []
    for _ in range(count):
        version = services.registry.register_version(system, tenant, "yield", request_id=uuid.uuid4().hex)
        services.registry.transition(
            system,
            TransitionRequest(
                version_id=version.id,
                to_state=ModelState.TRAINING,
                expected_version=version.lock_version,
                request_id=uuid.uuid4().hex,
            ),
        )
        ids.append(version.id)
    return ids


def run_drill(
    workdir: Path, archive_timeout_s: int = 1, progress: Callable[[str], None] = lambda _line: None
) -> DrillOutcome:
    """The whole drill; homes and backups in ``workdir``, the servers' directories in a temp dir they can reach.

    The clusters are stopped and their directories removed when it returns.
    """
    server_root = server_owned_dir(Path(tempfile.mkdtemp(prefix="evolution-drill-")))
    try:
        return _drill(workdir, server_root, archive_timeout_s, progress)
    finally:
        shutil.rmtree(server_root, ignore_errors=True)


def _drill(
    workdir: Path, server_root: Path, archive_timeout_s: int, progress: Callable[[str], None]
) -> DrillOutcome:
    archive = server_owned_dir(server_root / "wal-archive")
    settings_pg = archive_settings(archive, timeout_s=archive_timeout_s)
    with postgres_cluster(
        settings_pg, initdb_args=["--wal-segsize=1"], root=server_root / "primary"
    ) as primary:
        db_url = create_database(primary.server_url)
        primary_conn = PgConnection.from_url(db_url)
        settings = Settings(home=workdir / "primary-home", database_url=db_url)
        services = build_services(settings)
        backups = workdir / "backups"
        try:
            progress("base backup …")
            create_backup(
                settings,
                backups,
                ["registry", "artifacts", "keys"],
                signer=services.signer,
                store=services.store,
                registry_tenants=services.tenants.tenant_ids(),
                wal_archive=archive,
                progress=progress,
            )
            progress("batch A …")
            seed_tenant(services, Scenario(tenant_id=TENANT_A, history_rows=150))
            services.snapshots.seal(ADMIN, TENANT_A, datetime.now().astimezone())
            _versions(services, TENANT_A, 3)
            rows_at_target = table_rows(db_url)
            with primary_conn.connect() as db:
                target = as_utc(db.execute("SELECT clock_timestamp()").fetchone()[0])
            time.sleep(0.01)
            progress("batch B …")
            services.tenants.ensure_tenant(ADMIN, TENANT_B)
            versions_b = _versions(services, TENANT_B, 2) + _versions(services, TENANT_A, 2)
            committed = time.monotonic()  # the last commit of batch B
            _lsn, segment = wal_file_of_current_lsn(primary_conn)
            archived = wait_archived(primary_conn, segment, timeout_s=60 + archive_timeout_s)
            rpo_exposure = archived - committed
            progress(
                f"batch B's last commit archived after {rpo_exposure:.2f} s (archive_timeout {archive_timeout_s} s)"
            )
            # Signed after T, over A's chain with B's entries: beyond any chain recovered to T.
            after_target = services.audit_checkpoints.checkpoint(TENANT_A)
            assert after_target.ok and after_target.written, after_target.problems
            checkpoint_after_target = checkpoint_key(after_target.written)
            create_backup(  # artifacts after B: the recovered registry needs A's, B's are harmless extras
                settings,
                backups,
                ["artifacts"],
                signer=services.signer,
                store=services.store,
                registry_tenants=services.tenants.tenant_ids(),
                progress=progress,
            )
        finally:
            services.close()

        port = free_port()
        restored_url = PgConnection.from_url(db_url).with_port(port).sqlalchemy_url()
        restored = Settings(home=workdir / "restored-home", database_url=restored_url)
        # The store is not lost with the database: the recovered home's keeps A's checkpoints from after T.
        kept = FilesystemArtifactStore(restored.artifacts_dir)
        primary_store = FilesystemArtifactStore(settings.artifacts_dir)
        for key in primary_store.list_objects(TENANT_A, CHECKPOINT_PREFIX):
            kept.put_object(TENANT_A, key, primary_store.get_object(TENANT_A, key))
        progress(f"restore to {target.isoformat()} on port {port} …")
        started = time.monotonic()
        result = restore_backup(
            restored,
            backups,
            store=kept,
            to_time=target,
            overwrite=True,  # over the kept store: artifacts are only ever added
            pg_data_dir=server_root / "restored" / "data",
            pg_socket_dir=server_owned_dir(server_root / "restored" / "sock"),
            pg_settings={
                "archive_mode": "off"
            },  # a drill must not archive its new timeline into production's
            progress=progress,
        )
        restore_s = time.monotonic() - started
        assert result.postgres is not None
        try:
            rows_restored = table_rows(restored_url)  # before the acknowledgement appends its audit entry
            started = time.monotonic()
            restored_services = build_services(restored)
            try:
                # What `evolution restore` does before its verify.
                acknowledgements = acknowledge_restored(restored_services, ADMIN, result)
                report = verify_all(restored_services)
                verify_s = time.monotonic() - started
                tenants = restored_services.tenants.tenant_ids()
                entries = restored_services.registry.verify_audit(ADMIN, TENANT_A).entries
                progress("checkpoints resume: more audit entries on A, then a checkpoint …")
                _versions(restored_services, TENANT_A, 2)
                resumed = restored_services.audit_checkpoints.checkpoint(TENANT_A)
                resumed_report = verify_all(restored_services)
                progress("the database owner deletes the tail of A's chain, unacknowledged …")
                _delete_audit_tail(restored_url, TENANT_A, keep=entries + 2)
                unacknowledged = verify_all(restored_services)
            finally:
                restored_services.close()
        finally:
            result.postgres.stop()
    kinds: dict[str, int] = {}
    for check in report.checks:
        kinds[check.kind] = kinds.get(check.kind, 0) + 1
    return DrillOutcome(
        target=target,
        rows_at_target=rows_at_target,
        rows_restored=rows_restored,
        tenants_restored=tenants,
        versions_b=versions_b,
        verify_ok=report.ok,
        verify_failures=[f"{c.kind} {c.subject}: {c.detail}" for c in report.failures],
        verify_kinds=kinds,
        rpo_exposure_s=rpo_exposure,
        archive_timeout_s=archive_timeout_s,
        restore_s=restore_s,
        recovery_s=result.postgres.seconds,
        verify_s=verify_s,
        last_transaction_at=result.postgres.last_transaction_at,
        recovery_log=result.postgres.recovery_log,
        checkpoint_after_target=checkpoint_after_target,
        acknowledged={
            a.tenant_id: [s.key for s in a.acknowledged.acknowledgement.supersedes]
            for a in acknowledgements
            if a.acknowledged is not None
        },
        acknowledgement_refusals=[f"{a.tenant_id}: {a.refused}" for a in acknowledgements if a.refused],
        audit_entries_acknowledged=entries,
        resumed_checkpoint=checkpoint_key(resumed.written, resumed.epoch) if resumed.written else None,
        resumed_ok=resumed_report.ok,
        resumed_failures=[f"{c.kind} {c.subject}: {c.detail}" for c in resumed_report.failures],
        unacknowledged_failures=[f"{c.tenant_id} {c.kind}: {c.detail}" for c in unacknowledged.failures],
    )


def _delete_audit_tail(url: str, tenant: str, keep: int) -> None:
    """The database owner (the superuser, the append-only triggers out of the way) cuts a chain after ``keep``."""
    with PgConnection.from_url(url).connect() as db, db.transaction():
        db.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        db.execute("DELETE FROM audit_log WHERE tenant_id = %s AND seq > %s", (tenant, keep))
        db.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


def test_recovery_to_a_point_in_time_has_exactly_the_rows_committed_before_it_and_verifies(
    tmp_path: Path,
) -> None:
    outcome = run_drill(tmp_path)

    assert outcome.rows_restored.keys() == outcome.rows_at_target.keys()
    for table, rows in outcome.rows_at_target.items():
        assert outcome.rows_restored[table] == rows, (
            f"{table}: {len(outcome.rows_restored[table])} != {len(rows)}"
        )
    assert (
        len(outcome.rows_at_target["audit_log"]) >= 7
        and len(outcome.rows_at_target["learning_events"]) == 150
    )
    assert outcome.tenants_restored == [TENANT_A]  # none of batch B
    restored_versions = {row[0] for row in outcome.rows_restored["model_versions"]}
    assert restored_versions and not restored_versions & set(outcome.versions_b)
    assert any("recovery stopping before commit" in line for line in outcome.recovery_log), (
        outcome.recovery_log
    )
    assert outcome.last_transaction_at is not None and outcome.last_transaction_at <= outcome.target

    # The store kept A's checkpoint from after T; the restore acknowledged it, so verify passes.
    assert outcome.acknowledged == {TENANT_A: [outcome.checkpoint_after_target]}, (
        outcome.acknowledgement_refusals
    )
    assert outcome.verify_ok, outcome.verify_failures
    assert outcome.verify_kinds.get("snapshot") == 1 and outcome.verify_kinds.get("audit-chain", 0) >= 1
    # 2 more versions (2 audit entries each) after the acknowledgement are checkpointed again, in epoch 1.
    assert outcome.resumed_checkpoint == checkpoint_key(outcome.audit_entries_acknowledged + 4, epoch=1)
    assert outcome.resumed_ok, outcome.resumed_failures
    # A truncation nobody acknowledged is still reported, at the resumed checkpoint.
    [failure] = [f for f in outcome.unacknowledged_failures if " audit-checkpoints:" in f]
    assert failure.startswith(f"{TENANT_A} audit-checkpoints:") and (
        f"position {outcome.audit_entries_acknowledged + 4}: the chain has only {outcome.audit_entries_acknowledged + 2} "
        "entries" in failure
    ), outcome.unacknowledged_failures
    print(
        f"\nPITR drill: RPO exposure {outcome.rpo_exposure_s:.2f} s (commit → WAL archived, archive_timeout "
        f"{outcome.archive_timeout_s} s); RTO {outcome.rto_s:.1f} s (restore {outcome.restore_s:.1f} s of which "
        f"recovery {outcome.recovery_s:.1f} s, verify {outcome.verify_s:.1f} s)"
    )


def test_cli_backs_up_postgres_and_recovers_to_the_end_of_the_archive_then_verifies(tmp_path: Path) -> None:
    runner = CliRunner()
    server_root = server_owned_dir(Path(tempfile.mkdtemp(prefix="evolution-drill-")))
    restored_data = server_root / "restored" / "data"
    try:
        archive = server_owned_dir(server_root / "wal-archive")
        with postgres_cluster(
            archive_settings(archive, timeout_s=1),
            initdb_args=["--wal-segsize=1"],
            root=server_root / "primary",
        ) as primary:
            db_url = create_database(primary.server_url)
            env = {"EVOLUTION_HOME": str(tmp_path / "home"), "EVOLUTION_DATABASE_URL": db_url}
            assert runner.invoke(app, ["tenant", "create", "acme"], env=env).exit_code == 0
            backups = tmp_path / "backups"
            created = runner.invoke(
                app, ["backup", "create", str(backups), "--wal-archive", str(archive)], env=env
            )
            assert created.exit_code == 0, created.output
            assert "pg_basebackup (tar)" in created.output
            assert runner.invoke(app, ["tenant", "create", "later"], env=env).exit_code == 0  # after the base
            wait_archived(PgConnection.from_url(db_url), switch_wal(PgConnection.from_url(db_url)))

        port = free_port()  # the primary is gone; recover on a new port
        restored_url = PgConnection.from_url(db_url).with_port(port).sqlalchemy_url()
        restored_env = {"EVOLUTION_HOME": str(tmp_path / "restored"), "EVOLUTION_DATABASE_URL": restored_url}
        args = ["restore", str(backups), "--pg-data-dir", str(restored_data), "--no-archiving"]
        args += ["--pg-socket-dir", str(server_owned_dir(server_root / "restored" / "sock"))]
        result = runner.invoke(app, args, env=restored_env)
        assert result.exit_code == 0, result.output
        assert "PostgreSQL recovered to the end of the archived WAL" in result.output
        assert ", 0 failed" in result.output
        listed = runner.invoke(app, ["tenant", "list"], env=restored_env)
        assert listed.output.split() == [
            "acme",
            "later",
        ]  # including the tenant created after the base backup

        again = runner.invoke(app, args, env=restored_env)  # the recovered server is running on that port
        assert again.exit_code == 1 and "already listening" in again.output
    finally:
        tools = PgTools.discover()
        subprocess.run(
            tools.as_server_user(
                [tools.program("pg_ctl"), "-D", str(restored_data), "-m", "immediate", "stop"]
            ),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(server_root, ignore_errors=True)

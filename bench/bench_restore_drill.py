"""Disaster-recovery drill with figures: RPO and RTO of the registry (PostgreSQL), the artifacts and the keys.

Three drills, each on real servers and real files, each printing how its figure is obtained:

  db-pitr    the test's drill (tests/integration/test_postgres_pitr_drill.py): base backup, batch A, target T,
             batch B, recovery to T into a new data dir; RPO exposure = time from B's last commit until its WAL
             segment is in the archive; RTO = restore (lay down + WAL replay) + verify.
  db-crash   the primary is killed (pg_ctl -m immediate: its data dir counts as lost) while a writer commits a
             transaction every few ms; recovery replays the whole archive. RPO = commit time of the last
             transaction the writer saw committed - commit time of the last one recovered (the data really
             lost); RTO = restore + verify.
  artifacts  N blobs of S KiB: a full backup, then an incremental one after 10% new blobs, then a restore into an
             empty store and a re-hash of every restored blob. RPO = the backup interval (the schedule) plus the
             time an incremental run takes (measured); RTO = restore + re-hash.
  keys       backup and restore of the key directory (RPO 0 when a keys backup runs as each key is created).

Targets from the plan: DB 5 min / 30 min, artifacts 15 min / 1 h, keys 0 / 2 h.

    python bench/bench_restore_drill.py [--archive-timeout 5] [--events 5000] [--blobs 200] [--blob-kib 256]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evolution.backup.create import create_backup
from evolution.backup.keys_backup import backup_keys, restore_keys
from evolution.backup.manifest import read_manifest
from evolution.backup.postgres_conf import archive_settings
from evolution.backup.postgres_server import PgConnection
from evolution.backup.restore import restore_backup
from evolution.demo.scenario import Scenario
from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.integrity.digest_checks import verify_artifact
from evolution.integrity.signing import LocalEd25519Signer
from evolution.platform.settings import Settings
from evolution.platform.verification import verify_all
from evolution.platform.wiring import build_services
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.integration.test_postgres_pitr_drill import run_drill, table_rows
from tests.support.pg_cluster import postgres_cluster, server_owned_dir
from tests.support.ports import free_port
from tests.support.postgres import create_database
from tests.support.scenario import ADMIN, seed_tenant

TARGETS = {"db": (300.0, 1800.0), "artifacts": (900.0, 3600.0), "keys": (0.0, 7200.0)}


def db_crash_drill(workdir: Path, archive_timeout_s: int, events: int, seed: int) -> dict[str, float]:
    server_root = server_owned_dir(Path(tempfile.mkdtemp(prefix="evolution-crash-")))
    try:
        archive = server_owned_dir(server_root / "wal-archive")
        cluster_settings = archive_settings(archive, timeout_s=archive_timeout_s)
        with postgres_cluster(
            cluster_settings, initdb_args=["--wal-segsize=1"], root=server_root / "primary"
        ) as primary:
            db_url = create_database(primary.server_url)
            settings = Settings(home=workdir / "crash-home", database_url=db_url)
            services = build_services(settings)
            seed_tenant(services, Scenario(tenant_id="crash", history_rows=events))
            services.snapshots.seal(ADMIN, "crash", utcnow())
            backups = workdir / "crash-backups"
            create_backup(
                settings,
                backups,
                ["registry", "artifacts", "keys"],
                signer=services.signer,
                store=services.store,
                registry_tenants=services.tenants.tenant_ids(),
                wal_archive=archive,
            )
            committed: list[tuple[str, float]] = []
            stop = threading.Event()

            def writer() -> None:
                system = Principal.system("crash")
                while not stop.is_set():
                    try:
                        version = services.registry.register_version(
                            system, "crash", "yield", uuid.uuid4().hex
                        )
                    except Exception:  # the crash: this commit was never acknowledged
                        return
                    committed.append((version.id, time.time()))
                    time.sleep(0.005)

            thread = threading.Thread(target=writer, daemon=True)
            thread.start()
            crash_after = archive_timeout_s * 2 + random.Random(seed).uniform(0, archive_timeout_s)
            time.sleep(crash_after)
            primary.stop("immediate")  # the primary and its data directory are gone from here on
            stop.set()
            thread.join(timeout=10)
            services.close()
            seen = list(committed)  # every commit the writer saw acknowledged before the crash
            db_name = db_url.rsplit("/", 1)[1]

        port = free_port()
        restored_url = PgConnection.from_url(db_url).with_port(port).sqlalchemy_url()
        restored = Settings(home=workdir / "crash-restored", database_url=restored_url)
        started = time.monotonic()
        result = restore_backup(
            restored,
            backups,
            store=FilesystemArtifactStore(restored.artifacts_dir),
            pg_data_dir=server_root / "restored" / "data",
            pg_socket_dir=server_owned_dir(server_root / "restored" / "sock"),
            pg_settings={"archive_mode": "off"},
        )
        restore_s = time.monotonic() - started
        assert result.postgres is not None
        try:
            recovered_ids = {row[0] for row in table_rows(restored_url)["model_versions"]}
            started = time.monotonic()
            svc = build_services(restored)
            report = verify_all(svc)
            svc.close()
            verify_s = time.monotonic() - started
        finally:
            result.postgres.stop()
        assert report.ok, [c.detail for c in report.failures]
        recovered = [c for c in seen if c[0] in recovered_ids]
        lost = [c for c in seen if c[0] not in recovered_ids]
        last_seen = seen[-1][1]
        last_recovered = recovered[-1][1] if recovered else float("nan")
        print(
            f"  db-crash: {len(seen)} commits acknowledged before the crash, {len(recovered)} recovered, "
            f"{len(lost)} lost (database {db_name}, {events} events)"
        )
        return {
            "rpo": last_seen - last_recovered,
            "rto": restore_s + verify_s,
            "restore": restore_s,
            "recovery": result.postgres.seconds,
            "verify": verify_s,
            "lost": float(len(lost)),
        }
    finally:
        shutil.rmtree(server_root, ignore_errors=True)


def artifacts_drill(workdir: Path, blobs: int, blob_kib: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    store = FilesystemArtifactStore(workdir / "art-home" / "artifacts")
    tenants = ["t-alpha", "t-beta"]
    for i in range(blobs):
        store.put_bytes(tenants[i % 2], rng.randbytes(blob_kib * 1024))
    signer = LocalEd25519Signer(workdir / "art-home" / "keys")
    settings = Settings(home=workdir / "art-home")
    dest = workdir / "art-backups"
    started = time.monotonic()
    create_backup(settings, dest, ["artifacts"], signer=signer, store=store, registry_tenants=tenants)
    full_s = time.monotonic() - started
    for i in range(max(1, blobs // 10)):
        store.put_bytes(tenants[i % 2], rng.randbytes(blob_kib * 1024))
    started = time.monotonic()
    latest = create_backup(
        settings, dest, ["artifacts"], signer=signer, store=store, registry_tenants=tenants
    )
    incremental_s = time.monotonic() - started
    manifest = read_manifest(latest.path)
    assert manifest.artifacts is not None
    fresh = Settings(home=workdir / "art-restored")
    shutil.copytree(workdir / "art-home" / "keys", fresh.keys_dir)
    target = FilesystemArtifactStore(fresh.artifacts_dir)
    started = time.monotonic()
    restore_backup(fresh, dest, store=target, parts=["artifacts"])
    restore_s = time.monotonic() - started
    started = time.monotonic()
    for tenant in tenants:
        for digest in target.list_digests(tenant):
            verify_artifact(target, tenant, digest)
    rehash_s = time.monotonic() - started
    total_mb = manifest.artifacts.bytes_total / 1e6
    print(
        f"  artifacts: {len(manifest.artifacts.entries)} blobs, {total_mb:.0f} MB; full backup {full_s:.1f} s, "
        f"incremental ({manifest.artifacts.copied} new, {manifest.artifacts.reused} reused) {incremental_s:.2f} s"
    )
    return {
        "full": full_s,
        "incremental": incremental_s,
        "restore": restore_s,
        "rehash": rehash_s,
        "mb": total_mb,
    }


def keys_drill(workdir: Path) -> dict[str, float]:
    keys = workdir / "keys-home" / "keys"
    LocalEd25519Signer(keys)
    started = time.monotonic()
    part = backup_keys(keys, workdir / "keys-backup")
    backup_s = time.monotonic() - started
    started = time.monotonic()
    restore_keys(workdir / "keys-backup", part, workdir / "keys-restored")
    restore_s = time.monotonic() - started
    return {"backup": backup_s, "restore": restore_s}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--archive-timeout", type=int, default=5, help="archive_timeout of the drill servers (s)"
    )
    parser.add_argument(
        "--events", type=int, default=5000, help="learning events in the crash drill's database"
    )
    parser.add_argument("--blobs", type=int, default=200)
    parser.add_argument("--blob-kib", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    os.chmod(workdir, 0o700)
    try:
        print(f"PostgreSQL drills with archive_timeout = {args.archive_timeout} s")
        pitr = run_drill(workdir / "pitr", archive_timeout_s=args.archive_timeout)
        assert pitr.verify_ok, pitr.verify_failures
        print(
            f"  db-pitr: recovered to T with exactly the {sum(len(r) for r in pitr.rows_at_target.values())} rows "
            f"committed before it; verify {sum(pitr.verify_kinds.values())} checks ok"
        )
        crash = db_crash_drill(workdir / "crash", args.archive_timeout, args.events, args.seed)
        art = artifacts_drill(workdir / "artifacts", args.blobs, args.blob_kib, args.seed)
        keys = keys_drill(workdir / "keys")
        rows = [
            (
                "db (PITR drill)",
                "db",
                f"{pitr.rpo_exposure_s:.2f} s",
                pitr.rto_s,
                "RPO: B's last commit → WAL archived",
            ),
            (
                "db (crash drill)",
                "db",
                f"{crash['rpo']:.2f} s",
                crash["rto"],
                "RPO: last acknowledged − last recovered",
            ),
            (
                "artifacts",
                "artifacts",
                f"I+{art['incremental']:.2f} s",
                art["restore"] + art["rehash"],
                "RPO: interval I + an incremental run; RTO: restore + re-hash",
            ),
            ("keys", "keys", "0 s", keys["restore"], "RPO 0 when backed up at creation"),
        ]
        print()
        print(f"{'part':<18}{'target RPO':>11}{'measured':>12}{'target RTO':>12}{'measured':>10}  how")
        for name, kind, rpo, rto, how in rows:
            t_rpo, t_rto = TARGETS[kind]
            print(f"{name:<18}{t_rpo:>10.0f}s{rpo:>12}{t_rto:>11.0f}s{rto:>9.2f}s  {how}")
        print()
        print(
            f"db-pitr  restore {pitr.restore_s:.2f} s (WAL replay {pitr.recovery_s:.2f} s) + verify {pitr.verify_s:.2f} s"
        )
        print(
            f"db-crash restore {crash['restore']:.2f} s (WAL replay {crash['recovery']:.2f} s) + verify "
            f"{crash['verify']:.2f} s; {crash['lost']:.0f} commits lost"
        )
        print(
            f"artifacts {art['mb']:.0f} MB: full backup {art['full']:.2f} s, incremental {art['incremental']:.2f} s, "
            f"restore {art['restore']:.2f} s, re-hash {art['rehash']:.2f} s"
        )
        print(f"keys: backup {keys['backup'] * 1000:.1f} ms, restore {keys['restore'] * 1000:.1f} ms")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

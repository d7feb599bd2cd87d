"""Drift scans for many tenants through the real workflows: do 10,000 tenants fit in one hourly period?

Seeds ``--tenants`` tenants (not measured): each with a CHAMPION whose signed manifest and frozen baseline are in
its own artifact store, and one hour of ``--rows`` fresh learning events with ``--features`` features, left for
the scan to seal (see tests/support/load_seed.py for how, and why one training serves every tenant). Then starts
a Temporal dev server (own free ports, SQLite file) and `evolution worker` as separate processes sharing the
registry, artifact store and signing key, and runs one DriftScanWorkflow per tenant (seal the window, scan it,
write the signed report) through the orchestration port with ``--concurrency`` in flight.

Prints tenants per minute against the 167 that 10,000 tenants an hour need, the CPU per scan of the Temporal
server, the worker and this client (utime + stime from /proc), their peak resident memory (VmHWM), latencies and
the CPU-bound capacity (what the two cores could do if nothing else ran on this shared machine).

    python bench/bench_drift_load.py [--tenants 500] [--rows 10000] [--features 20] [--seed 7]
                                     [--workers 2] [--concurrency 4] [--labelled-share 1.0]
                                     [--database sqlite|postgresql] [--ingest bulk|signed]

Measured on the 2-core machine this was written on, shared with other work, 500 x 10,000 x 20, SQLite, 2 workers,
4 in flight: 187 tenants/min (wall), Temporal server 42 ms and workers 571 ms CPU per scan, peak RSS 230 MiB server
and 474 MiB per worker; CPU-bound capacity 196 tenants/min: 10,000 tenants take ~53 min. Before the scan was made
one activity that reuses the rows its seal read (and the seal read columns instead of ORM objects, without holding
the database's write lock while encoding): 58 tenants/min, workers 1,100 ms CPU per scan. 3 or 2 in flight: the
same within noise (188 and 178/min on 150 tenants); 8 in flight is slower (four scans fight for one GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import upgrade_to_head
from evolution.security import Principal
from tests.support.load_seed import (
    LoadFigures,
    LoadSeeder,
    LoadStack,
    cpu_seconds,
    peak_rss_mb,
    postmaster_pid,
    run_scans,
)
from tests.support.postgres import app_role_url, create_database, postgres_server

MODEL_NAME = "yield"
TARGET_PER_MINUTE = 167.0
FLEET = 10_000


@contextlib.contextmanager
def registry(database: str, home: Path) -> Iterator[Settings]:
    if database == "sqlite":
        yield Settings(home=home, training_memory_limit_mb=None)
        return
    with postgres_server() as server:
        owner = create_database(server)
        upgrade_to_head(owner)  # creates the application's role, which the login role joins
        yield Settings(
            home=home,
            database_url=app_role_url(owner),
            database_owner_url=owner,
            training_memory_limit_mb=None,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--rows", type=int, default=10_000, help="events in each tenant's scan window")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--history-rows", type=int, default=2000, help="events the champion was trained on")
    parser.add_argument(
        "--labelled-share", type=float, default=1.0, help="share of window events carrying their outcome"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="drift-scan workflows in flight")
    parser.add_argument("--workers", type=int, default=2, help="`evolution worker` processes (one per core)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--ingest", choices=("bulk", "signed"), default="bulk", help="how events are seeded")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="kept afterwards (default: a temp dir, removed)"
    )
    parser.add_argument(
        "--seed-only",
        action="store_true",
        help="seed --workdir (SQLite) and stop; a copy of it is scanned without seeding again",
    )
    args = parser.parse_args()
    if args.seed_only and (args.workdir is None or args.database != "sqlite"):
        parser.error("--seed-only needs --workdir and the SQLite registry")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="drift-load-"))
    try:
        with registry(args.database, workdir / "home") as settings:
            figures = run(args, settings, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if figures is None:
        return 0
    print(figures.render(TARGET_PER_MINUTE, FLEET))
    failed = [o for o in figures.outcomes if o.result.report_id is None]
    return 1 if failed or len(figures.outcomes) != args.tenants else 0


def run(args: argparse.Namespace, settings: Settings, workdir: Path) -> LoadFigures | None:
    """Seed (unless ``workdir`` holds a seeding of the same parameters, e.g. a copy), then scan."""
    services = build_services(settings)
    tenant_ids = [f"load-{i:05d}" for i in range(args.tenants)]
    params = {
        k: getattr(args, k)
        for k in ("tenants", "rows", "features", "seed", "history_rows", "ingest", "labelled_share")
    }
    stamp = workdir / "seeded.json"
    if args.database == "sqlite" and stamp.exists() and json.loads(stamp.read_text()) == params:
        print(f"reusing the seeded tenants in {workdir}")
    else:
        seed(args, services, tenant_ids)
        stamp.write_text(json.dumps(params))
    if args.seed_only:
        services.close()
        return None
    database = postmaster_pid(make_url(settings.database_url).port or 0) if settings.database_url else None
    database0 = cpu_seconds(database) if database else 0.0
    with LoadStack(settings, workdir / "stack", workers=args.workers) as stack:
        print(
            f"scanning through {stack.address}: {args.workers} worker(s), {args.concurrency} in flight; "
            f"load average {_load()}",
            flush=True,
        )
        outcomes, wall, server_cpu, worker_cpu, client_cpu = asyncio.run(
            run_scans(stack, tenant_ids, MODEL_NAME, args.concurrency)
        )
        database_cpu = cpu_seconds(database) - database0 if database else None
        server_peak = peak_rss_mb(stack.temporal_pid)
        worker_peak = max(peak_rss_mb(pid) for pid in stack.worker_pids)
    reports = sum(
        1 for t in tenant_ids if services.drift_reports.list_reports(Principal.system(t), t, limit=1)
    )
    services.close()
    print(f"{reports}/{len(tenant_ids)} tenants have a signed report; load average {_load()}")
    return LoadFigures(
        tenants=len(tenant_ids),
        rows=args.rows,
        features=args.features,
        database=args.database,
        concurrency=args.concurrency,
        workers=args.workers,
        wall_s=wall,
        server_cpu_s=server_cpu,
        worker_cpu_s=worker_cpu,
        client_cpu_s=client_cpu,
        server_peak_mb=server_peak,
        worker_peak_mb=worker_peak,
        outcomes=outcomes,
        database_cpu_s=database_cpu,
    )


def seed(args: argparse.Namespace, services: Services, tenant_ids: list[str]) -> None:
    seeder = LoadSeeder(
        services,
        model_name=MODEL_NAME,
        rows=args.rows,
        features=args.features,
        history_rows=args.history_rows,
        seed=args.seed,
        ingest=args.ingest,
        labelled_share=args.labelled_share,
    )
    t0 = time.perf_counter()

    def progress(index: int, _tenant: object) -> None:
        done = index + 1
        if done % 50 == 0 or done == len(tenant_ids):
            elapsed = time.perf_counter() - t0
            print(f"  seeded {done}/{len(tenant_ids)} tenants in {elapsed:.0f} s", flush=True)

    print(
        f"seeding {args.tenants} tenants ({args.history_rows} training + {args.rows} window events each, "
        f"{args.features} features, {args.labelled_share:.0%} labelled, {args.ingest} insert, {args.database}); "
        f"load average {_load()}",
        flush=True,
    )
    seeder.seed_tenants(tenant_ids, progress)
    print(f"seeding took {time.perf_counter() - t0:.0f} s (not measured)", flush=True)


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())

"""Seeding many tenants for the drift-scan load runs (bench/bench_drift_load.py, tests/reliability).

Each tenant gets, through the real services: a registered source key, a history of learning events sealed into a
training snapshot, a CHAMPION whose signed manifest binds that snapshot (files in the tenant's own artifact store,
manifest signed by the registry's signer, the bootstrap lifecycle DRAFT → TRAINING → VALIDATED → SHADOW → CANARY →
CHAMPION with its audit rows), and one scan window of fresh events that is left unsealed: the drift-scan
workflow seals it itself, as the hourly schedule does.

Training once per feature set is legitimate, not a shortcut: every tenant's history holds the same records, the
split is a hash of each row's request_id and the trainer is byte-reproducible, so training on any tenant's
snapshot gives the same model files (:func:`train_on_snapshot` lets a test prove it).

Events go in either ``signed`` (each event signed as a source would, then verified by :class:`EventIngestor`: the
real path) or ``bulk`` (the same rows and payload digests inserted in one statement per batch, without
signing and verifying each event: seeding half a million tenants' rows through Ed25519 twice per event costs
minutes and measures nothing the scan does).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import TypeAdapter
from sqlalchemy import insert
from temporalio.client import Client

from evolution.contracts import DriftScanInput, DriftScanResult
from evolution.data.event_schema import LearningEventIn
from evolution.data.snapshots import SnapshotView
from evolution.data.sources import create_source_key, records_to_events
from evolution.demo.synthetic import CROPS, FEATURES, TARGET, DriftSpec, generate_rows
from evolution.errors import InvalidInput
from evolution.integrity.manifest import build_manifest_from_dir, sign_manifest
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.platform.orchestrator import connect_orchestrator
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services
from evolution.registry.db import transaction
from evolution.registry.schema import LearningEvent
from evolution.security import Principal, Role
from evolution.stats.drift import build_baseline
from evolution.stats.drift_models import DriftConfig, ErrorBaseline
from evolution.timeutil import iso, utcnow
from evolution.training.candidates import TRAINER_NAME, feature_columns, labelled, training_config_for
from evolution.training.loader import BASELINE_FILE
from evolution.training.trainer import TrainedModel, TrainingConfig, train
from tests.support.ports import free_port
from tests.support.temporal import dev_server_command
from workers.temporal_client import connect_client

ADMIN = Principal.for_tenant("load-seed", Role.ADMIN, "*")
SOURCE = "field-sensors"
INSERT_BATCH = 2000

EXTRA_FEATURES: list[str] = [
    "soil_p_ppm",
    "soil_k_ppm",
    "sowing_doy",
    "seeding_rate_k_ha",
    "slope_pct",
    "elevation_m",
    "solar_rad_mj_m2",
    "rel_humidity_pct",
    "previous_crop",
    "tillage",
]
"""Ten more columns a farm record carries (lab sheet, planter, terrain, weather station, field history)."""

ALL_FEATURES: list[str] = [*FEATURES, *EXTRA_FEATURES]
MAX_FEATURES = len(ALL_FEATURES)
_EXTRA_STREAM = 0xE7A5
_MISSING_RATE = 0.01
TILLAGE: tuple[str, ...] = ("conventional", "reduced", "no_till")

Ingest = Literal["signed", "bulk"]
_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def feature_names(count: int) -> list[str]:
    if not 1 <= count <= MAX_FEATURES:
        raise InvalidInput(f"features must be between 1 and {MAX_FEATURES}, got {count}")
    return ALL_FEATURES[:count]


def farm_rows(
    n: int, seed: int, start: datetime, period_s: float, features: int, drift: DriftSpec | None = None
) -> list[dict[str, Any]]:
    """``n`` agronomic rows (the demo's generator plus up to ten more realistic columns), ``features`` of them.

    The extra columns are drawn from their own stream keyed by the seed; drifted rows (``event_time`` at or after
    ``drift.at``) also see a sunnier, drier season in radiation and humidity.
    """
    names = feature_names(features)
    rows = generate_rows(n, seed, start, drift=drift, period_s=period_s)
    extras = [name for name in EXTRA_FEATURES if name in names]
    if extras and n:
        drifted = np.zeros(n, dtype=bool)
        if drift is not None:
            drifted = np.array([row["event_time"] >= iso(drift.at) for row in rows])
        columns = _extra_columns(n, seed, drifted)
        missing = np.random.default_rng([seed, _EXTRA_STREAM, 1]).random((len(EXTRA_FEATURES), n))
        for j, name in enumerate(EXTRA_FEATURES):
            if name not in extras:
                continue
            gaps = missing[j] < _MISSING_RATE
            values = columns[name]
            for i, row in enumerate(rows):
                row[name] = None if gaps[i] else values[i]
    keep = {"event_time", "field_id", TARGET, *names}
    return [{k: v for k, v in row.items() if k in keep} for row in rows]


def _extra_columns(n: int, seed: int, drifted: np.ndarray) -> dict[str, list[Any]]:
    rng = np.random.default_rng([seed, _EXTRA_STREAM, 0])
    solar = rng.normal(18.0, 2.0, n) + np.where(drifted, 1.2, 0.0)
    humidity = np.clip(rng.normal(68.0, 7.0, n) - np.where(drifted, 8.0, 0.0), 15.0, 100.0)
    return {
        "soil_p_ppm": _round(rng.lognormal(np.log(18.0), 0.4, n), 1),
        "soil_k_ppm": _round(rng.lognormal(np.log(160.0), 0.3, n), 0),
        "sowing_doy": [int(v) for v in rng.integers(95, 141, n)],
        "seeding_rate_k_ha": _round(rng.normal(75.0, 8.0, n), 1),
        "slope_pct": _round(rng.gamma(1.5, 1.5, n), 1),
        "elevation_m": _round(np.clip(rng.normal(180.0, 60.0, n), 0.0, None), 0),
        "solar_rad_mj_m2": _round(solar, 2),
        "rel_humidity_pct": _round(humidity, 1),
        "previous_crop": [(*CROPS, "fallow")[i] for i in rng.choice(4, size=n, p=[0.35, 0.35, 0.2, 0.1])],
        "tillage": [TILLAGE[i] for i in rng.choice(3, size=n, p=[0.4, 0.35, 0.25])],
    }


def _round(values: np.ndarray, digits: int) -> list[float]:
    return [float(v) for v in np.round(values, digits)]


@dataclass(frozen=True)
class SharedModel:
    """One trained model and its frozen baseline, ready to be stored and signed for any tenant."""

    directory: Path
    config: TrainingConfig
    seed: int
    training_rows: int
    file_digests: dict[str, str]


@dataclass(frozen=True)
class LoadTenant:
    tenant_id: str
    champion: VersionView
    training_snapshot_id: str
    window_rows: int
    drifted: bool


def train_on_snapshot(
    services: Services, snapshot: SnapshotView, seed: int, directory: Path
) -> tuple[TrainedModel, SharedModel]:
    """What the retraining's training step does with a snapshot, in process: rows, config, fit, baseline."""
    tenant_id = snapshot.tenant_id
    rows = labelled(services.snapshots.load_rows(snapshot, services.keyring))
    settings = services.tenants.tenant_settings(Principal.system(tenant_id), tenant_id)
    config = training_config_for(rows, settings)
    model = train(rows, config, seed)
    shutil.rmtree(directory, ignore_errors=True)
    model.save(directory)
    baseline = build_baseline(
        feature_columns(rows, config.features), config=settings.drift_config_over(DriftConfig())
    )
    errors = model.metrics.holdout_abs_error
    baseline = baseline.model_copy(
        update={"errors": ErrorBaseline(n=errors.n, mean=errors.mean, var=errors.var)}
    )
    (directory / BASELINE_FILE).write_text(baseline.model_dump_json())
    digests = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())
    }
    return model, SharedModel(directory, config, seed, len(rows), digests)


class LoadSeeder:
    """Seeds tenants ``{prefix}-00000``, ``{prefix}-00001``, ... for a drift-scan load run."""

    def __init__(
        self,
        services: Services,
        *,
        rows: int,
        features: int,
        history_rows: int = 2000,
        seed: int = 7,
        model_name: str = "yield",
        ingest: Ingest = "bulk",
        drifted_every: int = 4,
        window_variants: int = 16,
        labelled_share: float = 1.0,
        now: datetime | None = None,
    ) -> None:
        """``labelled_share``: the share of window events that carry their outcome (the scan predicts those for
        the MAE check; 1.0, as in the demo's traffic, is the costliest). ``window_variants`` distinct scan windows
        are generated and tenant *i* gets variant i mod that (each
        tenant's events are its own rows all the same: own request ids, source key and digests); every
        ``drifted_every``-th variant is drifted (0: none), so the scans see a realistic mix of ok and alert."""
        if rows < 1 or history_rows < 1:
            raise InvalidInput("rows and history_rows must be positive")
        self.services = services
        self.rows = rows
        self.features = feature_names(features)
        self.seed = seed
        self.model_name = model_name
        self.ingest = ingest
        self.drifted_every = drifted_every
        self.window_variants = max(1, window_variants)
        if not 0.0 <= labelled_share <= 1.0:
            raise InvalidInput(f"labelled_share must be between 0 and 1, got {labelled_share}")
        self.labelled_share = labelled_share
        self._windows: dict[int, list[dict[str, Any]]] = {}
        self.now = now or utcnow()
        self.window_start = self.now - timedelta(hours=2)
        history_start = self.window_start - timedelta(days=120)
        period = (self.window_start - history_start).total_seconds() / (history_rows + 1)
        self.history = farm_rows(history_rows, seed, history_start, period, len(self.features))
        self.model: SharedModel | None = None
        self.model_dir = services.settings.work_dir / "load-seed-model"
        self._prepared: dict[int, list[_PreparedRow]] = {}

    def seed_tenants(
        self, tenant_ids: Sequence[str], progress: Callable[[int, LoadTenant], None] | None = None
    ) -> list[LoadTenant]:
        seeded = []
        for index, tenant_id in enumerate(tenant_ids):
            tenant = self.seed_tenant(tenant_id, index)
            seeded.append(tenant)
            if progress is not None:
                progress(index, tenant)
        return seeded

    def seed_tenant(self, tenant_id: str, index: int) -> LoadTenant:
        services = self.services
        services.tenants.ensure_tenant(ADMIN, tenant_id)
        key_id, public_pem, path = create_source_key(services.settings.keys_dir, tenant_id, SOURCE)
        services.events.register_source_key(ADMIN, tenant_id, key_id, public_pem)
        private_pem = path.read_bytes()
        self._insert(tenant_id, key_id, private_pem, self.history, "hist")
        training = services.snapshots.seal(Principal.system(tenant_id), tenant_id, self.window_start)
        if training.row_count != len(self.history):
            raise AssertionError(f"{tenant_id}: training snapshot holds {training.row_count} rows")
        if self.model is None:
            _, self.model = train_on_snapshot(services, training, self.seed, self.model_dir)
        champion = self._champion(tenant_id, training, self.model)
        variant = index % self.window_variants
        drifted = self.drifted_every > 0 and variant % self.drifted_every == 0
        window = self.window_records(variant, drifted)
        self._insert(tenant_id, key_id, private_pem, window, "win")
        return LoadTenant(tenant_id, champion, training.id, len(window), drifted)

    def window_records(self, variant: int, drifted: bool) -> list[dict[str, Any]]:
        """The scan window's records of one variant: the last hour before ``window_start`` + 1 h."""
        window = self._windows.get(variant)
        if window is None:
            window = farm_rows(
                self.rows,
                self.seed * 1000 + variant + 1,
                self.window_start,
                3600.0 / self.rows,
                len(self.features),
                drift=DriftSpec(at=self.window_start) if drifted else None,
            )
            # Outcomes (yields) come at harvest: only this share of a window's events carries one.
            unlabelled = np.random.default_rng([self.seed, variant, 0x1ABE]).random(len(window))
            for row, draw in zip(window, unlabelled, strict=True):
                if draw >= self.labelled_share:
                    row[TARGET] = None
            self._windows[variant] = window
        return window

    def _champion(self, tenant_id: str, training: SnapshotView, model: SharedModel) -> VersionView:
        """The bootstrap lifecycle of a retraining without a champion, with the shared model's files."""
        services = self.services
        system = Principal.system(tenant_id)
        manifest = build_manifest_from_dir(
            model.directory,
            tenant=tenant_id,
            model_name=self.model_name,
            dataset_snapshot_id=training.id,
            dataset_merkle_root=training.merkle_root,
            training_config=model.config.model_dump(mode="json"),
            seed=model.seed,
            trainer=TRAINER_NAME,
            store=services.store,
        )
        signed = sign_manifest(manifest, services.signer)
        services.store.put_bytes(tenant_id, signed.model_dump_json(by_alias=True).encode())
        version = services.registry.register_version(
            system, tenant_id, self.model_name, f"load-seed-{tenant_id}", reason="bootstrap"
        )
        steps: list[tuple[ModelState, VersionChanges | None]] = [
            (ModelState.TRAINING, None),
            (
                ModelState.VALIDATED,
                VersionChanges(
                    model_hash=signed.digest,
                    manifest=signed.model_dump(mode="json", by_alias=True),
                    dataset_snapshot_id=training.id,
                ),
            ),
            (ModelState.SHADOW, None),
            (ModelState.CANARY, None),
        ]
        for state, changes in steps:
            version = services.registry.transition(
                system,
                TransitionRequest(
                    version_id=version.id,
                    to_state=state,
                    expected_version=version.lock_version,
                    request_id=f"load-seed-{version.id}-{state.value.lower()}",
                    reason="bootstrap",
                    changes=changes,
                ),
            ).version
        manager = Principal.for_tenant("load-seed-manager", Role.MANAGER, tenant_id)
        return services.registry.promote(
            manager, version.id, version.lock_version, f"load-seed-{version.id}-promote", "bootstrap"
        ).version

    def _insert(
        self, tenant_id: str, key_id: str, private_pem: bytes, records: list[dict[str, Any]], prefix: str
    ) -> None:
        if self.ingest == "signed":
            events = records_to_events(
                records, tenant_id, key_id, private_pem, target=TARGET, request_prefix=prefix
            )
            summary = self.services.events.ingest_objects(ADMIN, tenant_id, events, "load-seed")
            if summary.accepted != len(records):
                raise AssertionError(f"{tenant_id}: seeding events was refused: {summary.rejects[:3]}")
            return
        self._bulk_insert(tenant_id, key_id, records, prefix)

    def _bulk_insert(self, tenant_id: str, key_id: str, records: list[dict[str, Any]], prefix: str) -> None:
        """The rows the ingestor would store, with the digest of the payload a source would have signed."""
        prepared = self._prepared.get(id(records))
        if prepared is None:  # the history and the window variants are kept by the seeder: ids stay unique
            prepared = self._prepared[id(records)] = _prepare(records)
        # The shortcut must store exactly what the ingestor would: checked against its own encoding.
        tail = _tail(tenant_id, key_id)
        if _digest(prepared[0], tail, prefix, 0) != _ingestor_digest(
            tenant_id, key_id, f"{prefix}-{0:07d}", records[0]
        ):
            raise AssertionError("bulk seeding computes another payload digest than the ingestor")
        received = utcnow()
        for start in range(0, len(records), INSERT_BATCH):
            batch = range(start, min(start + INSERT_BATCH, len(records)))
            with transaction(self.services.factory, tenant_id) as session:
                dialect = session.get_bind().dialect
                if dialect.name == "sqlite":
                    # Plain executemany: SQLAlchemy's per-row parameter handling costs more than the insert.
                    when = LearningEvent.__table__.c.event_time.type.dialect_impl(dialect).bind_processor(
                        dialect
                    )
                    assert when is not None
                    session.connection().exec_driver_sql(
                        _SQLITE_INSERT,
                        [
                            (
                                tenant_id,
                                f"{prefix}-{i:07d}",
                                when(prepared[i].event_time),
                                when(received),
                                key_id,
                                prepared[i].features_json,
                                None,
                                prepared[i].actual,
                                _digest(prepared[i], tail, prefix, i),
                            )
                            for i in batch
                        ],
                    )
                    continue
                session.execute(
                    insert(LearningEvent),
                    [
                        {
                            "tenant_id": tenant_id,
                            "request_id": f"{prefix}-{i:07d}",
                            "event_time": prepared[i].event_time,
                            "received_at": received,
                            "source_key_id": key_id,
                            "features": prepared[i].features,
                            "prediction_id": None,
                            "actual": prepared[i].actual,
                            "payload_digest": _digest(prepared[i], tail, prefix, i),
                        }
                        for i in batch
                    ],
                )


_SQLITE_INSERT = (
    "INSERT INTO learning_events (tenant_id, request_id, event_time, received_at, source_key_id, features, "
    "prediction_id, actual, payload_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _tail(tenant_id: str, key_id: str) -> str:
    return f'","source_key_id":{json.dumps(key_id)},"tenant":{json.dumps(tenant_id)}}}'


def _digest(row: _PreparedRow, tail: str, prefix: str, i: int) -> str:
    """SHA-256 of the canonical signed payload: the prepared head, then the request id, key and tenant."""
    payload = f'{row.prefix},"prediction_id":null,"request_id":"{prefix}-{i:07d}{tail}'
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class _PreparedRow:
    event_time: datetime
    features: dict[str, Any]
    actual: float | None
    features_json: str
    prefix: str
    """The canonical payload up to the request id: '{"actual":…,"event_time":"…","features":{…}'."""


def _features_of(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("event_time", TARGET)}


def _prepare(records: list[dict[str, Any]]) -> list[_PreparedRow]:
    """What does not depend on the tenant, encoded once (canonical JSON: sorted keys, no spaces, no escapes)."""
    out = []
    for record in records:
        event_time = datetime.fromisoformat(record["event_time"])
        features = _features_of(record)
        wire_time = _TIME.dump_python(event_time, mode="json")
        actual = record[TARGET]
        features_json = _canonical(features)
        prefix = "{" + f'"actual":{_canonical(actual)},"event_time":"{wire_time}","features":{features_json}'
        out.append(_PreparedRow(event_time, features, actual, features_json, prefix))
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _ingestor_digest(tenant_id: str, key_id: str, request_id: str, record: dict[str, Any]) -> str:
    event = LearningEventIn.model_validate(
        {
            "tenant": tenant_id,
            "request_id": request_id,
            "event_time": record["event_time"],
            "features": _features_of(record),
            "prediction_id": None,
            "actual": record[TARGET],
            "source_key_id": key_id,
            "signature": "-",
        }
    )
    return hashlib.sha256(event.signed_payload()).hexdigest()


def digest_of_signed_event(event: dict[str, Any]) -> str:
    """The payload digest the ingestor stores for a signed event (for tests comparing both paths)."""
    body = {k: v for k, v in event.items() if k != "signature"}
    return hashlib.sha256(
        LearningEventIn.model_validate({**body, "signature": "-"}).signed_payload()
    ).hexdigest()


# ------------------------------------------------------------------------------------------------ the load run
def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc (a process that went away in between is skipped)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(parents.get(current, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its living descendants (from /proc/<pid>/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of resident memory (VmHWM) of ``pid`` and its living descendants, in MiB."""
    total = 0.0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def postmaster_pid(port: int) -> int | None:
    """The PostgreSQL server listening on ``port`` (its backends are its children), found by its command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and b"-p" in argv:
            position = argv.index(b"-p")
            if position + 1 < len(argv) and argv[position + 1] == str(port).encode():
                return int(entry.name)
    return None


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout_s:.0f} s")
        time.sleep(0.1)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def worker_env(settings: Settings, temporal_address: str, task_queue: str) -> dict[str, str]:
    """What `evolution worker` needs to share this registry, artifact store and signing key."""
    env = {
        **os.environ,
        "EVOLUTION_HOME": str(settings.home.resolve()),
        "EVOLUTION_TEMPORAL_ADDRESS": temporal_address,
        "EVOLUTION_TASK_QUEUE": task_queue,
        "EVOLUTION_WORKER_METRICS_PORT": "0",
        "EVOLUTION_TEMPORAL_METRICS_PORT": "0",
        "EVOLUTION_TRACING": "off",
        "PYTHONUNBUFFERED": "1",
    }
    for name, value in (
        ("EVOLUTION_DATABASE_URL", settings.database_url),
        ("EVOLUTION_DATABASE_OWNER_URL", settings.database_owner_url),
    ):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env


class LoadStack:
    """A Temporal dev server (own free ports, SQLite file) and ``workers`` `evolution worker` processes.

    One Python worker runs Python code on one core at a time (the GIL): a second worker process is how a
    second core is used.
    """

    def __init__(
        self, settings: Settings, workdir: Path, task_queue: str = "drift-load", workers: int = 1
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.workdir = workdir
        self.task_queue = task_queue
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temporal: subprocess.Popen[bytes] | None = None
        self.worker_processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LoadStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = dev_server_command(
            self.port, self.workdir / "temporal.db", "error", http_port=free_port(), metrics_port=free_port()
        )
        try:
            with (self.workdir / "temporal.out").open("ab") as out:
                self.temporal = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            _wait_until(
                lambda: _port_open(self.port), 120, f"the Temporal dev server did not listen on {self.port}"
            )
            evolution = Path(sys.executable).parent / "evolution"
            for number in range(self.workers):
                with (self.workdir / f"worker-{number}.out").open("ab") as out:
                    self.worker_processes.append(
                        subprocess.Popen(
                            [str(evolution), "worker"],
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            env=worker_env(self.settings, self.address, self.task_queue),
                            start_new_session=True,
                        )
                    )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for process in (*self.worker_processes, self.temporal):
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    @property
    def temporal_pid(self) -> int:
        assert self.temporal is not None
        return self.temporal.pid

    @property
    def worker_pids(self) -> list[int]:
        return [process.pid for process in self.worker_processes]

    async def wait_for_worker(self, client: Client, timeout_s: float = 180.0) -> None:
        """Until every worker polls the activity task queue (it has connected and registered)."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        deadline = time.monotonic() + timeout_s
        while True:
            for number, process in enumerate(self.worker_processes):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"a worker exited with {process.returncode}; see {self.workdir}/worker-{number}.out"
                    )
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=self.task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                )
            )
            if len({p.identity for p in response.pollers}) >= self.workers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not poll {self.task_queue} within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


@dataclass
class ScanOutcome:
    tenant_id: str
    result: DriftScanResult
    latency_s: float


@dataclass
class LoadFigures:
    tenants: int
    rows: int
    features: int
    database: str
    concurrency: int
    workers: int
    wall_s: float
    server_cpu_s: float
    worker_cpu_s: float
    client_cpu_s: float
    server_peak_mb: float
    worker_peak_mb: float
    """The largest worker's."""
    outcomes: list[ScanOutcome]
    database_cpu_s: float | None = None
    """PostgreSQL's server processes (SQLite runs inside the worker and is counted there)."""

    @property
    def per_minute(self) -> float:
        return self.tenants / self.wall_s * 60.0

    def per_scan(self, cpu_s: float) -> float:
        return cpu_s / self.tenants

    @property
    def cpu_bound_per_minute(self) -> float:
        """Tenants per minute if the server and the worker had this machine's cores to themselves."""
        cores = os.cpu_count() or 1
        return (
            cores * 60.0 / self.per_scan(self.server_cpu_s + self.worker_cpu_s + (self.database_cpu_s or 0.0))
        )

    def levels(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.result.level] = counts.get(outcome.result.level, 0) + 1
        return dict(sorted(counts.items()))

    def render(self, target_per_minute: float = 167.0, fleet: int = 10_000) -> str:
        latencies = sorted(o.latency_s for o in self.outcomes)

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

        verdict = "MET" if self.per_minute >= target_per_minute else "MISSED"
        fleet_min = fleet / self.per_minute
        lines = [
            f"drift-scan load: {self.tenants} tenants x {self.rows:,} rows x {self.features} features "
            f"(registry {self.database}, {self.workers} worker process(es), {self.concurrency} scans in flight, "
            f"{os.cpu_count()} cores)",
            f"  wall time                 {self.wall_s:10.1f} s",
            f"  tenants per minute        {self.per_minute:10.1f}   target >= {target_per_minute:.0f}: {verdict}",
            f"  Temporal server CPU/scan  {self.per_scan(self.server_cpu_s) * 1000:10.1f} ms",
            f"  worker CPU/scan (all)     {self.per_scan(self.worker_cpu_s) * 1000:10.1f} ms",
            *(
                [f"  PostgreSQL CPU/scan       {self.per_scan(self.database_cpu_s) * 1000:10.1f} ms"]
                if self.database_cpu_s is not None
                else []
            ),
            f"  client CPU/scan           {self.per_scan(self.client_cpu_s) * 1000:10.1f} ms   (this process)",
            f"  peak RSS server / worker  {self.server_peak_mb:10.0f} / {self.worker_peak_mb:.0f} MiB",
            f"  scan latency p50/p95/max  {pct(0.5):10.2f} / {pct(0.95):.2f} / {pct(1.0):.2f} s",
            f"  levels                    {self.levels()}",
            f"  {fleet:,} tenants at this rate: {fleet_min:.0f} min "
            f"({'fits' if fleet_min <= 60 else 'does not fit'} one hourly period)",
            f"  CPU-bound capacity        {self.cpu_bound_per_minute:10.1f} tenants/min "
            f"(server + worker + database CPU per scan over all cores; {fleet / self.cpu_bound_per_minute:.0f} min for "
            f"{fleet:,})",
        ]
        return "\n".join(lines)


async def connect_when_healthy(settings: Settings, timeout_s: float = 120.0) -> Client:
    """The dev server listens a moment before its frontend is healthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await connect_client(settings)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def run_scans(
    stack: LoadStack, tenants: Sequence[str], model_name: str, concurrency: int
) -> tuple[list[ScanOutcome], float, float, float, float]:
    """One DriftScanWorkflow per tenant through the orchestration port, at most ``concurrency`` in flight.

    Returns the outcomes, the wall time, and the CPU seconds of the server, the worker and this process spent
    while they ran.
    """
    settings = stack.settings.model_copy(
        update={"temporal_address": stack.address, "task_queue": stack.task_queue}
    )
    client = await connect_when_healthy(settings)
    orchestrator = await connect_orchestrator(settings)
    await stack.wait_for_worker(client)
    gate = asyncio.Semaphore(concurrency)
    outcomes: list[ScanOutcome] = []

    async def one(tenant_id: str) -> None:
        async with gate:
            started = time.perf_counter()
            result = await orchestrator.run_drift_scan(
                DriftScanInput(tenant_id=tenant_id, model_name=model_name, auto_retrain=False)
            )
            outcomes.append(ScanOutcome(tenant_id, result, time.perf_counter() - started))

    server0, worker0 = cpu_seconds(stack.temporal_pid), sum(map(cpu_seconds, stack.worker_pids))
    client0 = time.process_time()
    wall0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(t) for t in tenants))
    finally:
        await orchestrator.close()
    wall = time.perf_counter() - wall0
    return (
        sorted(outcomes, key=lambda o: o.tenant_id),
        wall,
        cpu_seconds(stack.temporal_pid) - server0,
        sum(map(cpu_seconds, stack.worker_pids)) - worker0,
        time.process_time() - client0,
    )

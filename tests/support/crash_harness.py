"""Crash-recovery harness: many tenant lifecycles on a persisted Temporal dev server while the worker is SIGKILLed.

What runs where:

* a Temporal dev server (``temporal server start-dev --headless --db-filename <tmp>/temporal.db``) as a child
  process on a free port; killed with SIGKILL once and restarted on the same port and database file;
* the registry: a SQLite file in WAL mode (``<home>/registry.db``), shared by the worker and this process;
* the worker as a separate OS process (``python -m workers.worker``, what ``evolution worker`` execs) with
  ``EVOLUTION_*`` settings and ``EVOLUTION_ACTIVITY_JOURNAL`` set, so every activity body start and end is
  journalled durably (workers/activity_journal.py); its whole process group is SIGKILLed at random moments
  (seeded) and restarted after a short random delay;
* this process drives each tenant as a person and the field would: it seeds the tenant's signed history, starts
  the bootstrap retraining, approves as a manager, then sends drifted live traffic with outcomes through the
  predictor and the event ingestor, runs a drift scan (which starts the second retraining), keeps the traffic
  flowing through shadow and canary, and approves again.

Afterwards every workflow must have finished, and the registry is audited: per version, each transition exactly
once (no duplicate ``(version, to_state)`` audit row), none missing (the path each workflow's outcome implies, and
the version's state equal to its last audit row and to what the workflow reported), the audit chain gapless and
verified (``evolution verify``'s function). The journal tells how many activities really ran more than once, and,
for every activity body a worker kill cut short, how long it took until that activity's next attempt started: the
workflows run with the production timeouts, so that figure is what a dead worker costs in production (the
heartbeat timeout, workflows/policies.py, plus the retry's backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

from sqlalchemy import select
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError

from evolution.contracts import (
    DriftScanInput,
    DriftScanResult,
    RetrainingInput,
    RetrainingResult,
    RolloutTiming,
)
from evolution.demo.scenario import InProcessTransport, Scenario, TrafficDriver
from evolution.demo.synthetic import DriftSpec
from evolution.errors import EvolutionError
from evolution.lifecycle import ModelState, is_legal
from evolution.platform.settings import Settings
from evolution.platform.verification import verify_all
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import reading
from evolution.registry.schema import Notification
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.support.approvals import decide
from tests.support.ports import free_port
from tests.support.scenario import SeededTenant, seed_tenant
from tests.support.temporal import dev_server_command
from workers.activity_journal import JOURNAL_ENV
from workers.orchestrator import TemporalOrchestrator
from workers.temporal_client import connect_client
from workflows.drift_scan import DriftScanWorkflow, drift_scan_schedule_id

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "yield"
T = TypeVar("T")

# The path of each outcome through the lifecycle table (evolution/lifecycle.py), as the workflow drives it.
PROMOTED_PATH = ("DRAFT", "TRAINING", "VALIDATED", "SHADOW", "CANARY", "CHAMPION")
EXPECTED_PATHS: dict[str, tuple[str, ...]] = {
    "promoted": PROMOTED_PATH,
    "rejected": ("DRAFT", "TRAINING", "VALIDATED", "SHADOW", "CANARY", "FAILED"),
    "approval_timeout": ("DRAFT", "TRAINING", "VALIDATED", "SHADOW", "CANARY", "FAILED"),
    "rolled_back": ("DRAFT", "TRAINING", "VALIDATED", "SHADOW", "CANARY", "FAILED"),
    "validation_failed": ("DRAFT", "TRAINING", "FAILED"),
}


# Milestones a tenant's driver passes (they gate the kills): bootstrap started, approval awaited, finished;
# drift: traffic sent, scan done, candidate scored on live traffic, approval awaited, finished.
MILESTONES_BOOTSTRAP = 3
MILESTONES_DRIFT = 5


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class CrashPlan:
    tenants: int = 8
    worker_kills: int = 3
    server_kills: int = 1
    seed: int = 20240607
    # Second lifecycle per tenant: drifted traffic -> drift scan -> retrain -> shadow -> canary -> approval.
    full_canary: bool = True
    history_rows: int = 600
    drift_rows: int = 600
    round_rows: int = 300
    canary_share: float = 0.9
    shadow_min_pairs: int = 50
    look_interval_s: float = 0.5
    # Caps how long a crashed worker's step is waited for before it is retried (RolloutTiming.step_timeout_s).
    # None: the production timeouts, so that the kill -> next attempt figure measures what production gets.
    step_timeout_s: float | None = None
    # Each kill once a random share of the lifecycles' milestones is reached, then after a random jitter.
    kill_progress: tuple[float, float] = (0.03, 0.85)
    kill_jitter_s: float = 3.0
    # After the jitter, wait up to this long for a moment when an activity body is running, then kill anyway.
    kill_aim_s: float = 5.0
    restart_delay_s: tuple[float, float] = (0.2, 2.0)
    start_stagger_s: float = 0.3
    # At most this many retrainings train and validate at once (each training job is a ~250 MB process): the
    # driver waits for a slot before it starts a retraining or a drift scan. The lifecycles still all overlap.
    max_trainings: int = 8
    deadline_s: float = 900.0

    @property
    def timing(self) -> RolloutTiming:
        return RolloutTiming(
            look_interval_s=self.look_interval_s,
            shadow_min_pairs=self.shadow_min_pairs,
            approval_timeout_s=3 * self.deadline_s,
            rollout_window_s=3 * self.deadline_s,
            shadow_max_s=3 * self.deadline_s,
            canary_share=self.canary_share,
            step_timeout_s=self.step_timeout_s,
        )

    def tenant_ids(self) -> list[str]:
        return [f"crash-{i:03d}" for i in range(self.tenants)]


# ------------------------------------------------------------------------------------------------ processes
def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


class TemporalDevServer:
    """``temporal server start-dev`` persisted in a SQLite file; restartable on the same port and file."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.db_path = root / "temporal.db"
        self.log_dir = root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        command = dev_server_command(self.port, self.db_path, "warn")
        with (self.log_dir / f"temporal-{self.starts}.out").open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited with {self.process.returncode}")
            if _port_open(self.port):
                try:
                    client = await Client.connect(self.address)
                    await client.workflow_service.describe_namespace(
                        DescribeNamespaceRequest(namespace="default")
                    )
                    return
                except (RPCError, RuntimeError):
                    pass
            await asyncio.sleep(0.3)
        raise RuntimeError(f"the Temporal dev server did not come up on {self.address} in {timeout_s:.0f}s")

    def kill(self) -> None:
        assert self.process is not None
        _kill_group(self.process, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        _kill_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


class WorkerProcess:
    """``python -m workers.worker`` (what ``evolution worker`` execs) in its own process group."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        if self.alive():
            raise RuntimeError("one worker at a time: the previous one is still running")
        self.starts += 1
        with (self.log_dir / f"worker-{self.starts}.out").open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers.worker"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker's whole process group, at once: no shutdown, no flush, no goodbye."""
        assert self.process is not None
        _kill_group(self.process, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        _kill_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def training_jobs_under(work_dir: Path) -> list[int]:
    """Pids of training job processes (evolution.training.job_runner) working under ``work_dir``."""
    pids = []
    root = str(work_dir.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "evolution.training.job_runner" not in cmdline:
                continue
            if os.readlink(entry / "cwd").startswith(root):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


# ------------------------------------------------------------------------------------------------ the journal
@dataclass(frozen=True)
class WorkerKill:
    """One SIGKILL of the worker: its process id, and when it was sent by the wall clock (the journal's clock)."""

    pid: int
    at: float


@dataclass
class RetryStats:
    """Every activity body a worker kill cut short, and how long until that activity's next attempt started."""

    bodies: int = 0  # activity bodies running in a worker when it was killed
    kills_with_bodies: int = 0
    delays_s: list[float] = field(default_factory=list)  # kill -> next attempt's start, one per retried body
    slowest_type: str | None = None
    retried_before_kill: int = 0  # the next attempt had started before the kill (the old one had timed out)
    not_retried: list[str] = field(default_factory=list)

    @property
    def p50_s(self) -> float | None:
        return statistics.median(self.delays_s) if self.delays_s else None

    @property
    def max_s(self) -> float | None:
        return max(self.delays_s) if self.delays_s else None

    def line(self) -> str:
        if not self.bodies:
            return "no kill landed inside an activity body"
        figures = (
            f"p50 {self.p50_s:.1f}s, max {self.max_s:.1f}s ({self.slowest_type})"
            if self.delays_s
            else "no next attempt"
        )
        return (
            f"{figures} over {len(self.delays_s)} of {self.bodies} activity bodies cut short by "
            f"{self.kills_with_bodies} kills; {len(self.not_retried)} never attempted again"
            + (f" {self.not_retried[:5]}" if self.not_retried else "")
            + (
                f", {self.retried_before_kill} already re-attempted before the kill"
                if self.retried_before_kill
                else ""
            )
        )


@dataclass
class JournalStats:
    activities: int = 0
    starts: int = 0
    ends: int = 0
    started_twice: int = 0
    completed_twice: int = 0
    started_twice_by_type: dict[str, int] = field(default_factory=dict)
    completed_twice_by_type: dict[str, int] = field(default_factory=dict)
    worker_pids: int = 0
    retries: RetryStats = field(default_factory=RetryStats)


Activity = tuple[str, str, str]  # (workflow id, run id, activity id): the same across an activity's attempts


def read_journal(path: Path, kills: Sequence[WorkerKill] = ()) -> JournalStats:
    """Activities whose body started, or ran to its end, more than once; what each worker kill cut short."""
    starts: Counter[Activity] = Counter()
    ends: Counter[Activity] = Counter()
    types: dict[Activity, str] = {}
    pids: set[int] = set()
    # Per (activity, attempt, pid): when its body started; and the bodies that ended (returned or raised).
    started_at: dict[tuple[Activity, int, int], float] = {}
    closed: set[tuple[Activity, int, int]] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            key = (entry["workflow_id"], entry["run_id"], entry["activity_id"])
            body = (key, entry["attempt"], entry["pid"])
            types[key] = entry["activity_type"]
            pids.add(entry["pid"])
            if entry["event"] == "start":
                starts[key] += 1
                started_at[body] = entry["at"]
            else:
                closed.add(body)
                if entry["event"] == "end":
                    ends[key] += 1
    twice = [k for k, n in starts.items() if n > 1]
    done_twice = [k for k, n in ends.items() if n > 1]
    return JournalStats(
        activities=len(starts),
        starts=sum(starts.values()),
        ends=sum(ends.values()),
        started_twice=len(twice),
        completed_twice=len(done_twice),
        started_twice_by_type=dict(Counter(types[k] for k in twice)),
        completed_twice_by_type=dict(Counter(types[k] for k in done_twice)),
        worker_pids=len(pids),
        retries=kill_to_next_attempt(started_at, closed, types, kills),
    )


def kill_to_next_attempt(
    started_at: dict[tuple[Activity, int, int], float],
    closed: set[tuple[Activity, int, int]],
    types: dict[Activity, str],
    kills: Sequence[WorkerKill],
) -> RetryStats:
    """For each body a kill cut short (started in the killed process, never ended): the next attempt's start.

    A killed process writes nothing more, so its bodies without an end line are exactly those running when it died.
    """
    attempts: dict[Activity, list[tuple[int, float]]] = defaultdict(list)
    for (key, attempt, _), at in started_at.items():
        attempts[key].append((attempt, at))
    stats = RetryStats()
    slowest = -1.0
    for kill in kills:
        cut = [
            (key, attempt)
            for (key, attempt, pid) in started_at
            if pid == kill.pid and (key, attempt, pid) not in closed
        ]
        stats.bodies += len(cut)
        stats.kills_with_bodies += bool(cut)
        for key, attempt in cut:
            later = [(a, at) for a, at in attempts[key] if a > attempt]
            if not later:
                stats.not_retried.append(f"{types[key]} in {key[0]}")
                continue
            _, next_at = min(later)
            if next_at < kill.at:
                stats.retried_before_kill += 1
                continue
            delay = next_at - kill.at
            stats.delays_s.append(delay)
            if delay > slowest:
                slowest, stats.slowest_type = delay, types[key]
    return stats


class JournalTail:
    """Follows the journal as the worker appends to it: which activity bodies are running right now."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.running: dict[tuple[str, str, str], int] = {}  # activity -> pid of the worker running it

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            entry = json.loads(line)
            key = (entry["workflow_id"], entry["run_id"], entry["activity_id"])
            if entry["event"] == "start":
                self.running[key] = entry["pid"]
            else:
                self.running.pop(key, None)

    def running_in(self, pid: int | None) -> list[tuple[str, str, str]]:
        self.poll()
        return [key for key, owner in self.running.items() if owner == pid]


# ------------------------------------------------------------------------------------------------ results
@dataclass
class Lifecycle:
    tenant_id: str
    kind: str  # "bootstrap" or "drift"
    result: RetrainingResult | None = None
    error: str | None = None
    started_s: float | None = None
    finished_s: float | None = None
    traffic_rows: int = 0

    @property
    def duration_s(self) -> float | None:
        if self.started_s is None or self.finished_s is None:
            return None
        return self.finished_s - self.started_s


@dataclass
class Chaos:
    worker_kills: list[float] = field(default_factory=list)
    killed: list[WorkerKill] = field(default_factory=list)  # the same kills: which process, by the wall clock
    server_kills: list[float] = field(default_factory=list)
    unplanned_worker_exits: int = 0
    orphaned_training_jobs: int = 0
    training_jobs_at_kills: int = 0
    kills_inside_activities: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class CrashReport:
    plan: CrashPlan
    lifecycles: list[Lifecycle]
    chaos: Chaos
    journal: JournalStats
    wall_s: float
    setup_s: float
    driver_cpu_s: float = 0.0
    children_cpu_s: float = 0.0
    versions: int = 0
    transitions: int = 0
    lost_transitions: int = 0
    doubled_transitions: int = 0
    state_mismatches: int = 0
    extra_versions: int = 0
    audit_gaps: int = 0
    verification_ok: bool = False
    verification_failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duplicate_notifications: int = 0
    drift_reports_per_scan: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return sum(1 for lc in self.lifecycles if lc.result is not None)

    def _durations(self) -> str:
        parts = []
        for kind in ("bootstrap", "drift"):
            spans = sorted(
                d for lc in self.lifecycles if lc.kind == kind and (d := lc.duration_s) is not None
            )
            if spans:
                parts.append(f"{kind} median {spans[len(spans) // 2]:.0f}s, max {spans[-1]:.0f}s")
        return "; ".join(parts) or "-"

    def summary(self) -> str:
        p = self.plan
        j = self.journal
        lines = [
            f"crash test: seed {p.seed}, {p.tenants} tenants, "
            f"{'bootstrap + drift/canary' if p.full_canary else 'bootstrap'} lifecycles",
            f"  lifecycles finished        {self.finished}/{len(self.lifecycles)}  outcomes {self.outcomes}",
            f"  kills                      worker {len(self.chaos.worker_kills)} (at "
            + ", ".join(f"{t:.0f}s" for t in self.chaos.worker_kills)
            + f"), Temporal server {len(self.chaos.server_kills)} (at "
            + ", ".join(f"{t:.0f}s" for t in self.chaos.server_kills)
            + f"), unplanned worker exits {self.chaos.unplanned_worker_exits}",
            f"  kills inside an activity   {self.chaos.kills_inside_activities} of {len(self.chaos.worker_kills)} "
            "worker kills landed while an activity body was running",
            f"  kill -> next attempt       {j.retries.line()}",
            f"  activities                 {j.activities} ({j.starts} body starts, {j.ends} ends, "
            f"{j.worker_pids} worker processes)",
            f"  activities run twice       {j.started_twice} started again after a kill {j.started_twice_by_type}",
            f"                             {j.completed_twice} ran to their end twice {j.completed_twice_by_type}",
            f"  versions / transitions     {self.versions} / {self.transitions}",
            f"  lost transitions           {self.lost_transitions}",
            f"  doubled transitions        {self.doubled_transitions}  (extra versions {self.extra_versions})",
            f"  registry vs workflows      {self.state_mismatches} state mismatches, {self.audit_gaps} audit gaps, "
            f"verify {'ok' if self.verification_ok else 'FAILED'}",
            f"  training jobs at kills     {self.chaos.training_jobs_at_kills}, "
            f"orphaned {self.chaos.orphaned_training_jobs}",
            f"  at-least-once side effects {self.duplicate_notifications} duplicate notifications, "
            f"{self.drift_reports_per_scan:.2f} drift reports per scan",
            f"  lifecycle durations        {self._durations()}",
            f"  live traffic               {sum(lc.traffic_rows for lc in self.lifecycles)} predictions with "
            "outcomes",
            f"  wall time                  {self.wall_s:.0f}s (setup {self.setup_s:.0f}s); CPU: this process "
            f"{self.driver_cpu_s:.0f}s, worker + Temporal server + training jobs {self.children_cpu_s:.0f}s",
        ]
        for error in self.chaos.errors:
            lines.append(f"  CHAOS LOOP FAILED: {error}")
        for problem in self.problems[:20]:
            lines.append(f"  PROBLEM: {problem}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the run
def quiet_runtime() -> Runtime:
    filter = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=filter)))


TRANSIENT = (RPCError, RuntimeError, asyncio.TimeoutError, ConnectionError)


async def patiently(what: str, call: Callable[[], Awaitable[T]], deadline: float) -> T:
    """Retry ``call`` through server restarts (unavailable, connection refused) until ``deadline``."""
    delay = 0.5
    while True:
        try:
            return await call()
        except TRANSIENT as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: still failing at the deadline: {error}") from error
            log.info("%s failed (%s); retrying", what, error)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 3.0)


# Phases of RetrainingStatus after training and validation: the retraining's training slot is free again.
PAST_TRAINING = ("shadow", "canary", "awaiting_approval", "finished")


class TrainingSlot:
    """One tenant's hold on the driver's training slots: taken before a retraining starts, given back once."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self._held = False

    async def take(self) -> None:
        await self._slots.acquire()
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()


class CrashHarness:
    def __init__(self, plan: CrashPlan, root: Path) -> None:
        self.plan = plan
        self.root = root
        self.home = root / "home"
        self.journal_path = root / "activity-journal.jsonl"
        self.server = TemporalDevServer(root)
        self.task_queue = f"crash-{plan.seed}"
        self.rng = random.Random(plan.seed)
        self.chaos = Chaos()
        self.lifecycles: list[Lifecycle] = []
        self._t0 = 0.0
        self._deadline = 0.0
        self._done = asyncio.Event()
        self._client: Client | None = None
        self._milestones = 0
        self._tail = JournalTail(self.journal_path)
        self._training_slots = asyncio.Semaphore(plan.max_trainings)
        self._chaos_busy = False  # the chaos loop is between a kill and the restart: the watchdog stays away
        self.worker: WorkerProcess | None = None
        self.services: Services | None = None

    # ---------------------------------------------------------------- set-up
    def settings(self) -> Settings:
        return Settings(
            home=self.home,
            temporal_address=self.server.address,
            task_queue=self.task_queue,
            tracing="off",
            worker_metrics_port=0,
            temporal_metrics_port=0,
            canary_share=self.plan.canary_share,
        )

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVOLUTION_")}
        env.update(
            {
                "EVOLUTION_HOME": str(self.home.resolve()),
                "EVOLUTION_TEMPORAL_ADDRESS": self.server.address,
                "EVOLUTION_TASK_QUEUE": self.task_queue,
                "EVOLUTION_TRACING": "off",
                "EVOLUTION_WORKER_METRICS_PORT": "0",
                "EVOLUTION_TEMPORAL_METRICS_PORT": "0",
                JOURNAL_ENV: str(self.journal_path.resolve()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    @property
    def client(self) -> Client:
        assert self._client is not None
        return self._client

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    async def run(self) -> CrashReport:
        self._t0 = time.monotonic()
        self._deadline = self._t0 + self.plan.deadline_s
        log.info("crash test seed %s: %s", self.plan.seed, self.plan)
        self.server.start()
        services = build_services(self.settings())
        self.services = services
        try:
            await self.server.wait_ready()
            # The SDK's core logs every retried call while the server is down: only errors, please.
            self._client = await connect_client(self.settings(), quiet_runtime())
            self.worker = WorkerProcess(self.worker_env(), self.server.log_dir)
            self.worker.start()
            seeded = await self._seed_all(services)
            setup_s = self.elapsed()
            chaos = asyncio.create_task(self._chaos())
            watchdog = asyncio.create_task(self._watchdog())
            try:
                drivers = [
                    asyncio.create_task(self._tenant(services, seeded[t], i))
                    for i, t in enumerate(self.plan.tenant_ids())
                ]
                await asyncio.wait(drivers, timeout=max(1.0, self._deadline - time.monotonic()))
                for task in drivers:
                    if not task.done():
                        task.cancel()
                await asyncio.gather(*drivers, return_exceptions=True)
            finally:
                self._done.set()
                for outcome in await asyncio.gather(chaos, watchdog, return_exceptions=True):
                    if isinstance(outcome, BaseException):
                        log.error("the chaos loop failed", exc_info=outcome)
                        self.chaos.errors.append(f"{type(outcome).__name__}: {outcome}")
            wall = self.elapsed()
            self.worker.stop()
            self.server.stop()  # so that their CPU time is counted below
            own = resource.getrusage(resource.RUSAGE_SELF)
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            report = CrashReport(
                plan=self.plan,
                lifecycles=self.lifecycles,
                chaos=self.chaos,
                journal=read_journal(self.journal_path, self.chaos.killed),
                wall_s=wall,
                setup_s=setup_s,
                driver_cpu_s=own.ru_utime + own.ru_stime,
                children_cpu_s=children.ru_utime + children.ru_stime,
            )
            await asyncio.to_thread(audit_registry, services, self.plan, report)
            return report
        finally:
            if self.worker is not None:
                self.worker.stop()
            self.server.stop()
            services.close()

    async def _seed_all(self, services: Services) -> dict[str, SeededTenant]:
        async def one(tenant: str) -> tuple[str, SeededTenant]:
            scenario = self.scenario(tenant)
            seeded = await asyncio.to_thread(seed_tenant, services, scenario)
            await asyncio.to_thread(services.snapshots.seal, Principal.system(tenant), tenant, utcnow())
            return tenant, seeded

        pairs = await asyncio.gather(*(one(t) for t in self.plan.tenant_ids()))
        return dict(pairs)

    def scenario(self, tenant: str) -> Scenario:
        index = int(tenant.rsplit("-", 1)[1])
        return Scenario(
            tenant_id=tenant,
            model_name=MODEL,
            seed=self.plan.seed % 1000 + index,
            history_rows=self.plan.history_rows,
            round_rows=self.plan.round_rows,
        )

    # ---------------------------------------------------------------- chaos
    async def _sleep_unless_done(self, seconds: float) -> bool:
        """Sleep; True if every lifecycle finished meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout=seconds)
        return self._done.is_set()

    def kill_schedule(self) -> list[tuple[float, str]]:
        """When to kill what: (share of all lifecycle milestones reached, "worker" or "server"), seeded.

        Progress-gated rather than clock-timed, so that the kills spread over both phases of the lifecycles on
        a fast machine and a loaded one alike, and all of them land while lifecycles are still running.
        """
        plan, rng = self.plan, self.rng
        kinds = ["worker"] * plan.worker_kills + ["server"] * plan.server_kills
        rng.shuffle(kinds)
        # One kill in each of len(kinds) equal slices of the progress range (stratified: spread, still random).
        low, high = plan.kill_progress
        width = (high - low) / max(len(kinds), 1)
        return [(low + (i + rng.random()) * width, kind) for i, kind in enumerate(kinds)]

    @property
    def milestones_total(self) -> int:
        return self.plan.tenants * (MILESTONES_BOOTSTRAP + (MILESTONES_DRIFT if self.plan.full_canary else 0))

    async def _chaos(self) -> None:
        plan, rng = self.plan, self.rng
        schedule = self.kill_schedule()
        log.warning("kill schedule (share of %d milestones): %s", self.milestones_total, schedule)
        for share, kind in schedule:
            while self._milestones < share * self.milestones_total:
                if await self._sleep_unless_done(0.2):
                    return
            # A random moment after the gate: inside whatever activities are running then.
            if await self._sleep_unless_done(rng.uniform(0.0, plan.kill_jitter_s)):
                return
            if kind == "worker":
                await self._kill_worker(rng.uniform(*plan.restart_delay_s))
            else:
                await self._kill_server(rng.uniform(*plan.restart_delay_s))

    async def _kill_worker(self, restart_after_s: float) -> None:
        assert self.worker is not None
        self._chaos_busy = True
        try:
            # Aim: wait (briefly) for a moment when some activity body is running in this worker, then kill.
            running: list[tuple[str, str, str]] = []
            aim_until = time.monotonic() + self.plan.kill_aim_s
            while not running and time.monotonic() < aim_until:
                running = self._tail.running_in(self.worker.pid)
                if not running:
                    await asyncio.sleep(0.01)
            jobs = training_jobs_under(self.home / "work")
            assert self.worker.pid is not None
            self.chaos.killed.append(WorkerKill(pid=self.worker.pid, at=time.time()))
            self.worker.kill()
            self.chaos.kills_inside_activities += bool(running)
            self.chaos.worker_kills.append(self.elapsed())
            self.chaos.training_jobs_at_kills += len(jobs)
            log.warning(
                "SIGKILLed the worker at %.1fs: activity bodies running %s, training jobs %d",
                self.elapsed(),
                sorted({key[2] for key in running}),
                len(jobs),
            )
            await asyncio.sleep(restart_after_s)
            # A training job must not outlive the worker that started it: its retry would race it for the files.
            # One still starting up may take a moment to notice; what is left after that is counted, then
            # killed here so that one such bug does not hide the others.
            grace_until = time.monotonic() + 10.0
            survivors = [pid for pid in training_jobs_under(self.home / "work") if pid in jobs]
            while survivors and time.monotonic() < grace_until:
                await asyncio.sleep(0.2)
                survivors = [pid for pid in training_jobs_under(self.home / "work") if pid in jobs]
            self.chaos.orphaned_training_jobs += len(survivors)
            for pid in survivors:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            if not self.worker.alive():
                self.worker.start()
        finally:
            self._chaos_busy = False

    async def _kill_server(self, restart_after_s: float) -> None:
        self.server.kill()
        self.chaos.server_kills.append(self.elapsed())
        log.warning("SIGKILLed the Temporal dev server at %.1fs", self.elapsed())
        await asyncio.sleep(restart_after_s)
        self.server.start()
        await self.server.wait_ready()

    async def _watchdog(self) -> None:
        """A worker that exits by itself (not killed by the chaos loop) is restarted, and counted."""
        while not await self._sleep_unless_done(1.0):
            if self.worker is not None and not self._chaos_busy and not self.worker.alive():
                self.chaos.unplanned_worker_exits += 1
                log.warning("the worker exited by itself; restarting it")
                self.worker.start()

    # ---------------------------------------------------------------- one tenant
    async def _tenant(self, services: Services, seeded: SeededTenant, index: int) -> None:
        tenant = seeded.scenario.tenant_id
        await asyncio.sleep(index * self.plan.start_stagger_s)
        orchestrator = TemporalOrchestrator(self.client, self.task_queue)
        boot = Lifecycle(tenant, "bootstrap")
        self.lifecycles.append(boot)
        drift = Lifecycle(tenant, "drift") if self.plan.full_canary else None
        if drift is not None:
            self.lifecycles.append(drift)
        passed = [0]

        def milestone() -> None:
            passed[0] += 1
            self._milestones += 1

        slot = TrainingSlot(self._training_slots)
        try:
            boot.started_s = self.elapsed()
            await slot.take()
            await self._start_bootstrap(orchestrator, tenant)
            milestone()
            boot.result = await self._to_the_end(services, orchestrator, tenant, None, milestone, slot)
            boot.finished_s = self.elapsed()
            if drift is None:
                return
            if boot.result.outcome != "promoted":
                drift.error = f"not started: the bootstrap ended {boot.result.outcome}"
                return
            predictor = services.predictor(canary_share=self.plan.canary_share, refresh_s=0.0)
            driver = TrafficDriver(
                seeded.scenario,
                InProcessTransport(predictor, services.events),
                seeded.key_id,
                seeded.private_pem,
                DriftSpec(at=utcnow()),
            )
            drift.started_s = self.elapsed()
            await asyncio.to_thread(driver.round, self.plan.drift_rows)
            milestone()
            await slot.take()
            scan = await self._drift_scan(tenant)
            milestone()
            if scan.retraining not in ("started", "already_running"):
                drift.error = f"the drift scan did not start a retraining: {scan.level} {scan.message}"
                return
            drift.result = await self._to_the_end(services, orchestrator, tenant, driver, milestone, slot)
            drift.finished_s = self.elapsed()
            drift.traffic_rows = driver.sent
        except Exception as error:
            failed = drift if (drift is not None and boot.result is not None) else boot
            failed.error = f"{type(error).__name__}: {error}"
            log.exception("tenant %s", tenant)
        finally:
            slot.give_back()
            # A lifecycle that ended early passes its remaining milestones at once (the kills' gates count them).
            self._milestones += self.milestones_total // self.plan.tenants - passed[0]

    async def _start_bootstrap(self, orchestrator: TemporalOrchestrator, tenant: str) -> None:
        request = RetrainingInput(
            tenant_id=tenant, model_name=MODEL, trigger="bootstrap", seed=42, timing=self.plan.timing
        )
        try:
            await patiently(
                f"start retrain/{tenant}", lambda: orchestrator.start_retraining(request), self._deadline
            )
        except EvolutionError as error:
            # RetrainingAlreadyRunning: an earlier attempt of this very call reached the server before it died.
            log.info("start of retrain/%s answered %s: it is running", tenant, error)

    async def _drift_scan(self, tenant: str) -> DriftScanResult:
        scan = DriftScanInput(
            tenant_id=tenant,
            model_name=MODEL,
            retraining_timing=self.plan.timing,
            step_timeout_s=self.plan.step_timeout_s,
        )
        workflow_id = f"{drift_scan_schedule_id(tenant)}/manual"

        async def start() -> None:
            # Once only: a retried start after the server died must attach to the first scan, not run another.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await self.client.start_workflow(
                    DriftScanWorkflow.run,
                    scan,
                    id=workflow_id,
                    task_queue=self.task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )

        await patiently(f"start {workflow_id}", start, self._deadline)
        handle = self.client.get_workflow_handle(workflow_id, result_type=DriftScanResult)
        return await patiently(f"result of {workflow_id}", handle.result, self._deadline)

    async def _to_the_end(
        self,
        services: Services,
        orchestrator: TemporalOrchestrator,
        tenant: str,
        driver: TrafficDriver | None,
        milestone: Callable[[], None],
        slot: TrainingSlot,
    ) -> RetrainingResult:
        """Poll the status; send traffic while the candidate is scored; approve as a manager; the result."""
        poll_s = max(0.5, self.plan.tenants / 40)
        scored = awaited = False
        while time.monotonic() < self._deadline:
            status = await orchestrator.retraining_status(tenant)
            if status is not None and status.phase in PAST_TRAINING:
                slot.give_back()
            if status is not None and status.phase == "finished":
                break
            if status is not None and status.awaiting_approval:
                if not awaited:
                    awaited = True
                    milestone()
                try:
                    # A fresh ticket each time: a ticket counts once, and a lost answer means look again.
                    await decide(services, orchestrator, tenant, reason="crash test: approved")
                    break
                except EvolutionError as error:
                    # The server died under the update, or the update was already accepted: look again.
                    log.info("approval of %s: %s", tenant, error)
            elif driver is not None and status is not None and status.phase in ("shadow", "canary"):
                if not scored:
                    scored = True
                    milestone()
                await asyncio.to_thread(driver.round)
            await asyncio.sleep(poll_s)
        handle = self.client.get_workflow_handle(f"retrain/{tenant}", result_type=RetrainingResult)
        result = await patiently(f"result of retrain/{tenant}", handle.result, self._deadline)
        slot.give_back()
        milestone()
        return result


# ------------------------------------------------------------------------------------------------ the audit
def audit_registry(services: Services, plan: CrashPlan, report: CrashReport) -> None:
    """Compare the registry with what the workflows reported: lost, doubled and mismatched transitions."""
    report.outcomes = dict(
        Counter(lc.result.outcome if lc.result else f"unfinished ({lc.error})" for lc in report.lifecycles)
    )
    by_tenant: dict[str, list[Lifecycle]] = defaultdict(list)
    for lc in report.lifecycles:
        by_tenant[lc.tenant_id].append(lc)
    notifications = 0
    reports = scans = 0
    for tenant in plan.tenant_ids():
        system = Principal.system(tenant)
        versions = {v.id: v for v in services.registry.list_versions(system, tenant, MODEL)}
        trail = services.registry.audit_trail(system, tenant)
        report.versions += len(versions)
        seqs = [e.seq for e in trail]
        report.audit_gaps += sum(1 for a, b in pairwise(seqs) if b != a + 1)
        moves: dict[str, list[str]] = defaultdict(list)
        for entry in trail:
            if entry.subject_type == "model_version" and entry.to_state is not None:
                moves[entry.subject_id].append(entry.to_state)
        for version_id, path in moves.items():
            report.transitions += len(path)
            doubled = sum(n - 1 for n in Counter(path).values() if n > 1)
            if doubled:
                report.doubled_transitions += doubled
                report.problems.append(f"{tenant} {version_id}: a transition applied twice: {path}")
            illegal = [(a, b) for a, b in pairwise(path) if not is_legal(ModelState(a), ModelState(b))]
            if path[0] != "DRAFT" or illegal:
                report.problems.append(f"{tenant} {version_id}: not a lifecycle path: {path}")
            version = versions.get(version_id)
            if version is None or version.state != path[-1]:
                report.state_mismatches += 1
                report.problems.append(
                    f"{tenant} {version_id}: registry state {version and version.state} but last audit row {path[-1]}"
                )
        # One version per retraining that registered one: a second would be a registration applied twice.
        started = [lc for lc in by_tenant[tenant] if lc.result is not None and lc.result.version_id]
        report.extra_versions += max(0, len(versions) - len(started))
        for index, lc in enumerate(by_tenant[tenant]):
            if lc.result is None:
                report.problems.append(f"{tenant} {lc.kind} lifecycle did not finish: {lc.error}")
                continue
            if lc.result.outcome != "promoted":
                report.problems.append(f"{tenant} {lc.kind}: {lc.result.outcome}: {lc.result.reason}")
            expected = EXPECTED_PATHS.get(lc.result.outcome)
            path = moves.get(lc.result.version_id or "", [])
            if expected is not None:
                missing = [s for s in expected if s not in path]
                report.lost_transitions += len(missing)
                if missing:
                    report.problems.append(f"{tenant} {lc.kind}: {missing} missing from {path}")
            later_promoted = any(
                other.result is not None and other.result.outcome == "promoted"
                for other in by_tenant[tenant][index + 1 :]
            )
            version = versions.get(lc.result.version_id or "")
            if version is not None:
                want = (
                    "DEPRECATED"
                    if lc.result.outcome == "promoted" and later_promoted
                    else lc.result.final_state
                )
                if version.state != want:
                    report.state_mismatches += 1
                    report.problems.append(
                        f"{tenant} {lc.kind}: workflow says {lc.result.final_state}, registry {version.state}"
                    )
        with reading(services.factory, tenant) as session:
            rows = session.execute(
                select(Notification.kind, Notification.subject).where(Notification.tenant_id == tenant)
            ).all()
        seen = Counter((kind, subject) for kind, subject in rows)
        notifications += sum(n - 1 for n in seen.values() if n > 1)
        drift_reports = services.drift_reports.list_reports(system, tenant)
        reports += len(drift_reports)
        scans += len({r.report["window"]["snapshot_id"] for r in drift_reports})
    report.duplicate_notifications = notifications
    report.drift_reports_per_scan = reports / scans if scans else 0.0
    verification = verify_all(services, plan.tenant_ids())
    report.verification_ok = verification.ok
    report.verification_failures = [
        f"{c.tenant_id} {c.kind} {c.subject}: {c.detail}" for c in verification.failures
    ]
    report.problems.extend(report.verification_failures)


async def run_crash_test(plan: CrashPlan, root: Path) -> CrashReport:
    root.mkdir(parents=True, exist_ok=True)
    return await CrashHarness(plan, root).run()

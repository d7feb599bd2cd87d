"""Serving availability while the registry database and the Temporal server fail: the figure, per fault phase.

Real processes on loopback: a PostgreSQL server (tests/support/postgres.py) holds the registry, with tenants acme
(a champion and a canary candidate) and globex (a champion), seeded through the services; the Temporal dev server
runs (`temporal server start-dev`, on free ports, with a database file); `evolution serve` runs as a subprocess
configured by EVOLUTION_* variables. A load generator (httpx, a few client threads, paced to --rps in total) sends
prediction requests with API tokens for --duration seconds while a fault schedule runs:

    baseline      everything up                                   from 0 % of the duration
    db down       pg_ctl stop -m immediate (a crash)              from 10 %
    db back       pg_ctl start (crash recovery)                   from 30 %
    temporal down the dev server SIGKILLed                        from 40 %
    temporal back restarted on the same port and database file    from 55 %
    both down     PostgreSQL stopped and Temporal killed together from 65 %
    all back      both started again                              from 90 %

A phase starts when its fault has taken effect: a stop when it is issued, a restart when the server answers again
(so the restart time counts as down). If a restart runs late, the load runs on until a tenth of the duration has
passed with everything back.

Every request counts: a 2xx answer carrying a prediction is available; anything else (a 5xx, another status, a
timeout after --timeout seconds, a connection error) is unavailable. The load is on models that were served before
the faults. A model this serving process never loaded cannot be loaded while the registry is down: it gets 503 with
Retry-After and would count as unavailable; the run probes that once per database outage, outside the load.

After the load the run checks that the predictions served during the outages reached the registry once it was back
(the in-memory buffer flushed: rows in the predictions table = predictions served), reads the serving process's own
inference_availability_ratio and predictions_dropped_total, and counts the warning lines it logged (one per outage
and job, never one per request). It prints requests, available, availability %, p50/p99 latency per phase and in
all, and exits 1 if availability is below --target (99.9 %) or the serving process died.

    python bench/bench_serving_availability.py [--duration 300] [--clients 4] [--rps 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psycopg

from evolution.demo.synthetic import TARGET, generate_rows
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.registry.db import upgrade_to_head
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from tests.support.models import install_model
from tests.support.ports import free_port
from tests.support.postgres import PgServer, app_role_url, create_database, stoppable_postgres_server
from tests.support.temporal import dev_server_command

REPO = Path(__file__).resolve().parents[1]
EVOLUTION = str(Path(sys.executable).parent / "evolution")
TENANTS = ("acme", "globex")
TARGET_AVAILABILITY = 0.999
ROOT = Principal.for_tenant("root", Role.ADMIN, "*")

# (share of the duration, what happens, the phase it starts)
SCHEDULE: tuple[tuple[float, str, str], ...] = (
    (0.10, "stop db", "db down"),
    (0.30, "start db", "db back"),
    (0.40, "kill temporal", "temporal down"),
    (0.55, "start temporal", "temporal back"),
    (0.65, "stop db+kill temporal", "both down"),
    (0.90, "start db+start temporal", "all back"),
)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout_s:.0f} s")
        time.sleep(0.1)


# ----------------------------------------------------------------------------------------------- processes
class TemporalDevServer:
    """`temporal server start-dev` on free ports with a database file: killed with SIGKILL, restarted as it was."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._command = dev_server_command(
            self.port, workdir / "temporal.db", "error", http_port=free_port(), metrics_port=free_port()
        )
        self._log = workdir / "temporal.out"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        with self._log.open("ab") as out:
            self.process = subprocess.Popen(
                self._command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(
            lambda: port_open(self.port), timeout_s, f"the Temporal dev server did not listen on {self.port}"
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class ServingProcess:
    """`evolution serve` as a subprocess, configured by environment variables only."""

    def __init__(self, env: dict[str, str], port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._env = env
        self._out = workdir / "serving.out"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0) -> None:
        with self._out.open("ab") as out:
            self.process = subprocess.Popen(
                [EVOLUTION, "serve"], env=self._env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"evolution serve exited with {self.process.returncode}; see {self._out}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s, "evolution serve did not answer /healthz")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ----------------------------------------------------------------------------------------------- the load
@dataclass
class Sample:
    started: float  # seconds since the load began
    latency_s: float
    outcome: str  # "ok", an HTTP status, "timeout", "connect" or "transport"


@dataclass
class PhaseFigures:
    phase: str
    start_s: float
    end_s: float
    requests: int
    available: int
    availability: float
    p50_ms: float
    p99_ms: float
    failures: dict[str, int]


@dataclass
class Probe:
    phase: str
    model: str
    status: int | str
    retry_after: str | None


@dataclass
class AvailabilityReport:
    duration_s: float
    clients: int
    rps: float
    requests: int
    available: int
    availability: float
    target: float
    p50_ms: float
    p99_ms: float
    phases: list[PhaseFigures]
    probes: list[Probe]
    predictions_served: int
    predictions_recorded: int
    predictions_dropped: float
    flushed_after_s: float | None
    availability_ratio_metric: float | None
    warning_lines: int
    warnings: list[str]
    serving_alive: bool
    db_down_s: float
    temporal_down_s: float
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = self.availability >= self.target and self.serving_alive

    def render(self) -> str:
        achieved = self.requests / max(self.duration_s, 1e-9)
        lines = [
            f"serving availability: {self.duration_s:.0f} s of loopback load ({self.clients} clients, paced to "
            f"{self.rps:.0f} req/s, {achieved:.0f} achieved), registry PostgreSQL stopped (pg_ctl -m immediate) for "
            f"{self.db_down_s:.0f} s and the Temporal dev server SIGKILLed for {self.temporal_down_s:.0f} s",
            "",
            f"{'phase':<14} {'from s':>7} {'to s':>7} {'requests':>9} {'available':>10} {'availability':>13} "
            f"{'p50 ms':>8} {'p99 ms':>8}  failures",
        ]
        rows = [*self.phases]
        rows.append(
            PhaseFigures(
                "all",
                0.0,
                self.duration_s,
                self.requests,
                self.available,
                self.availability,
                self.p50_ms,
                self.p99_ms,
                _sum_failures(self.phases),
            )
        )
        for p in rows:
            failures = ", ".join(f"{k}: {v}" for k, v in sorted(p.failures.items())) or "-"
            lines.append(
                f"{p.phase:<14} {p.start_s:>7.1f} {p.end_s:>7.1f} {p.requests:>9} {p.available:>10} "
                f"{100 * p.availability:>12.3f}% {p.p50_ms:>8.1f} {p.p99_ms:>8.1f}  {failures}"
            )
        verdict = "PASS" if self.passed else "FAIL"
        lines += [
            "",
            f"availability {100 * self.availability:.3f}% of {self.requests} requests "
            f"(target >= {100 * self.target:.1f}%): {verdict}",
            "counted: a 2xx with a prediction = available; a 5xx, any other status, a timeout or a connection "
            "error = unavailable.",
            "the load is on models served before the faults; a model the serving process never loaded gets 503 "
            "with Retry-After while the registry is down and counts as unavailable (probed outside the load: "
            + (
                ", ".join(f"{p.phase} -> {p.status} Retry-After={p.retry_after}" for p in self.probes)
                or "no probe"
            )
            + ").",
            f"prediction records: {self.predictions_served} predictions served, {self.predictions_recorded} in "
            f"the registry afterwards, {self.predictions_dropped:.0f} dropped (predictions_dropped_total)"
            + (
                f"; buffer flushed {self.flushed_after_s:.1f} s after the load ended"
                if self.flushed_after_s is not None
                else "; NOT all recorded"
            ),
            f"serving process: inference_availability_ratio {self.availability_ratio_metric}, "
            f"{self.warning_lines} warning/error log lines, "
            + ("still running" if self.serving_alive else "DIED"),
            *(f"  {line}" for line in self.warnings),
        ]
        return "\n".join(lines)


def _sum_failures(phases: list[PhaseFigures]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for p in phases:
        total.update(p.failures)
    return dict(total)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def features() -> dict[str, Any]:
    row = generate_rows(1, 7, utcnow())[0]
    return {k: v for k, v in row.items() if k not in ("event_time", TARGET)}


class Load:
    """Client threads, each with its own connection, paced so that together they send ``rps`` requests a second."""

    def __init__(self, url: str, tokens: dict[str, str], clients: int, rps: float, timeout_s: float) -> None:
        self._url = url
        self._tokens = tokens
        self._clients = clients
        self._interval = clients / rps if rps > 0 else 0.0
        self._timeout = timeout_s
        self._features = features()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.samples: list[Sample] = []
        self.prediction_ids: list[str] = []
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        for i in range(self._clients):
            thread = threading.Thread(target=self._client, args=(i,), name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._timeout + 30)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _client(self, index: int) -> None:
        tenant = TENANTS[index % len(TENANTS)]
        headers = {"Authorization": f"Bearer {self._tokens[tenant]}"}
        path = f"/v1/tenants/{tenant}/models/yield/predict"
        n = 0
        next_at = time.monotonic() + self._interval * index / max(self._clients, 1)
        with httpx.Client(base_url=self._url, headers=headers, timeout=self._timeout) as client:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + self._interval, time.monotonic())
                n += 1
                body = {"instances": [{"request_id": f"c{index}-{n}", "features": self._features}]}
                started = time.monotonic()
                outcome, prediction_id = _send(client, path, body)
                sample = Sample(started - self.t0, time.monotonic() - started, outcome)
                with self._lock:
                    self.samples.append(sample)
                    if prediction_id is not None:
                        self.prediction_ids.append(prediction_id)


def _send(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[str, str | None]:
    try:
        response = client.post(path, json=body)
    except httpx.TimeoutException:
        return "timeout", None
    except httpx.ConnectError:
        return "connect", None
    except httpx.TransportError:
        return "transport", None
    if not 200 <= response.status_code < 300:
        return str(response.status_code), None
    try:
        prediction = response.json()["predictions"][0]
        value = float(prediction["prediction"])
    except (ValueError, KeyError, IndexError, TypeError):
        return "bad body", None
    if not math.isfinite(value):
        return "bad body", None
    return "ok", str(prediction["prediction_id"])


# ----------------------------------------------------------------------------------------------- the run
@dataclass
class Stack:
    pg: PgServer
    owner_url: str
    temporal: TemporalDevServer
    serving: ServingProcess
    tokens: dict[str, str]
    home: Path


@contextlib.contextmanager
def stack(workdir: Path) -> Iterator[Stack]:
    """PostgreSQL with the registry seeded, the Temporal dev server and `evolution serve`, all real processes."""
    with stoppable_postgres_server() as pg:
        owner_url = create_database(pg.url)
        upgrade_to_head(owner_url)
        app_url = app_role_url(owner_url)
        home = workdir / "home"
        settings = Settings(home=home, database_url=app_url, database_owner_url=owner_url)
        services = build_services(settings)
        tokens: dict[str, str] = {}
        try:
            for seed, tenant in enumerate(TENANTS, start=1):
                services.tenants.ensure_tenant(ROOT, tenant)
                install_model(services, tenant, workdir / "models", ModelState.CHAMPION, seed=seed)
                services.users.add_user(
                    ROOT, f"field-{tenant}", "a long enough password", Role.VIEWER, [tenant]
                )
                created = services.tokens.create_token(ROOT, f"field-{tenant}", "bench")
                tokens[tenant] = created.token.get_secret_value()
            install_model(services, "acme", workdir / "models", ModelState.CANARY, seed=9)
        finally:
            services.close()
        temporal = TemporalDevServer(workdir)
        temporal.start()
        port = free_port()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "EVOLUTION_HOME": str(home),
            "EVOLUTION_DATABASE_URL": app_url,
            "EVOLUTION_DATABASE_OWNER_URL": owner_url,
            "EVOLUTION_SERVE_HOST": "127.0.0.1",
            "EVOLUTION_SERVE_PORT": str(port),
            "EVOLUTION_TEMPORAL_ADDRESS": temporal.address,
            "EVOLUTION_TRACING": "off",
        }
        serving = ServingProcess(env, port, workdir)
        try:
            serving.start()
            yield Stack(pg, owner_url, temporal, serving, tokens, home)
        finally:
            serving.stop()
            temporal.kill()


def run(
    duration_s: float = 300.0,
    clients: int = 4,
    rps: float = 100.0,
    timeout_s: float = 10.0,
    target: float = TARGET_AVAILABILITY,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> AvailabilityReport:
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="evolution-availability-")) if workdir is None else workdir
    try:
        with stack(work) as s:
            return _measure(s, duration_s, clients, rps, timeout_s, target, progress)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def _measure(
    s: Stack,
    duration_s: float,
    clients: int,
    rps: float,
    timeout_s: float,
    target: float,
    progress: Callable[[str], None],
) -> AvailabilityReport:
    warmup_ids = _warm_up(s)
    load = Load(s.serving.url, s.tokens, clients, rps, timeout_s)
    phases: list[tuple[float, str]] = [(0.0, "baseline")]
    probes: list[Probe] = []
    down = {"db": 0.0, "temporal": 0.0}
    down_since: dict[str, float] = {}
    load.start()
    progress(f"load started: {clients} clients, {rps:.0f} req/s, {duration_s:.0f} s")
    for share, action, phase in SCHEDULE:
        delay = share * duration_s - load.now()
        if delay > 0:
            time.sleep(delay)
        starts = [part for part in action.split("+") if part.startswith("start")]
        if not starts:
            phases.append((load.now(), phase))
        for part in action.split("+"):
            if part == "stop db":
                s.pg.stop("immediate")
                down_since["db"] = load.now()
            elif part == "kill temporal":
                s.temporal.kill()
                down_since["temporal"] = load.now()
            elif part == "start db":
                s.pg.start()
                down["db"] += load.now() - down_since.pop("db")
            elif part == "start temporal":
                s.temporal.start()
                down["temporal"] += load.now() - down_since.pop("temporal")
        if starts:
            phases.append((load.now(), phase))
        progress(f"{load.now():6.1f} s  {action} -> {phase}")
        if phase in ("db down", "both down"):
            probes.append(_probe_cold_model(s, phase, len(probes)))
    end = max(duration_s, load.now() + 0.1 * duration_s)
    time.sleep(max(0.0, end - load.now()))
    load.stop()
    duration = load.now()
    progress(f"load stopped after {duration:.1f} s: {len(load.samples)} requests")

    served = warmup_ids + load.prediction_ids
    warnings = _warnings(s.home / "logs" / "serving.log")
    flushed_after = _wait_for_records(s.owner_url, served, timeout_s=max(120.0, duration_s))
    recorded = _count_records(s.owner_url, served)
    scraped = _scrape(s.serving.url)
    figures = _phase_figures(load.samples, phases, duration)
    available = sum(f.available for f in figures)
    requests = sum(f.requests for f in figures)
    latencies = [x.latency_s * 1000 for x in load.samples]
    return AvailabilityReport(
        duration_s=duration,
        clients=clients,
        rps=rps,
        requests=requests,
        available=available,
        availability=available / requests if requests else 0.0,
        target=target,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        phases=figures,
        probes=probes,
        predictions_served=len(served),
        predictions_recorded=recorded,
        predictions_dropped=sum(v for k, v in scraped.items() if k.startswith("predictions_dropped_total")),
        flushed_after_s=flushed_after,
        availability_ratio_metric=scraped.get("inference_availability_ratio"),
        warning_lines=len(warnings),
        warnings=warnings[:20],
        serving_alive=s.serving.alive,
        db_down_s=down["db"],
        temporal_down_s=down["temporal"],
    )


def _warm_up(s: Stack) -> list[str]:
    """One request per tenant, so that the serving process has loaded the models and checked the tokens."""
    ids = []
    body = {"instances": [{"request_id": "warm-up", "features": features()}]}
    for tenant, token in s.tokens.items():
        response = httpx.post(
            f"{s.serving.url}/v1/tenants/{tenant}/models/yield/predict",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60.0,
        )
        response.raise_for_status()
        ids.append(response.json()["predictions"][0]["prediction_id"])
    return ids


def _probe_cold_model(s: Stack, phase: str, n: int) -> Probe:
    """A model the serving process never loaded, asked for while the registry is down: 503 with Retry-After."""
    model = f"cold{n}"
    try:
        response = httpx.post(
            f"{s.serving.url}/v1/tenants/acme/models/{model}/predict",
            json={"instances": [{"request_id": "probe", "features": {}}]},
            headers={"Authorization": f"Bearer {s.tokens['acme']}"},
            timeout=30.0,
        )
    except httpx.TransportError as error:
        return Probe(phase, model, type(error).__name__, None)
    return Probe(phase, model, response.status_code, response.headers.get("Retry-After"))


def _phase_figures(
    samples: list[Sample], phases: list[tuple[float, str]], duration: float
) -> list[PhaseFigures]:
    bounds = [*phases, (duration, "")]
    figures = []
    for (start, name), (end, _next) in itertools.pairwise(bounds):
        mine = [x for x in samples if start <= x.started < end]
        ok = [x for x in mine if x.outcome == "ok"]
        failures = Counter(x.outcome for x in mine if x.outcome != "ok")
        latencies = [x.latency_s * 1000 for x in mine]
        figures.append(
            PhaseFigures(
                phase=name,
                start_s=start,
                end_s=end,
                requests=len(mine),
                available=len(ok),
                availability=len(ok) / len(mine) if mine else 1.0,
                p50_ms=percentile(latencies, 0.50),
                p99_ms=percentile(latencies, 0.99),
                failures=dict(failures),
            )
        )
    return figures


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _count_records(owner_url: str, ids: list[str]) -> int:
    with psycopg.connect(_dsn(owner_url), connect_timeout=10) as conn:
        row = conn.execute("SELECT count(*) FROM predictions WHERE id = ANY(%s)", (ids,)).fetchone()
    return int(row[0]) if row else 0


def _wait_for_records(owner_url: str, ids: list[str], timeout_s: float) -> float | None:
    """Seconds until every served prediction is in the registry (None: not within ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(psycopg.OperationalError):
            if _count_records(owner_url, ids) >= len(ids):
                return time.monotonic() - started
        time.sleep(0.5)
    return None


def _scrape(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30.0).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[name] = float(value)
    return samples


def _warnings(log: Path) -> list[str]:
    """The serving process's warning and error lines (its JSON log), shortened."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                found.append(
                    f"{entry.get('timestamp', '')[11:23]} {entry['level']} {entry.get('message', '')[:150]}"
                )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client connections (default 4)")
    parser.add_argument(
        "--rps", type=float, default=100.0, help="requests per second, all clients (default 100)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="a request slower than this is unavailable"
    )
    parser.add_argument(
        "--target", type=float, default=TARGET_AVAILABILITY, help="exit 1 below (default 0.999)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    report = run(
        duration_s=args.duration,
        clients=args.clients,
        rps=args.rps,
        timeout_s=args.timeout,
        target=args.target,
        progress=lambda line: print(line, flush=True),
    )
    print()
    print(report.render())
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Serving speed: what a 1-row prediction costs over the bare round trip and the model's own predict.

Real processes on loopback: a PostgreSQL server (tests/support/postgres.py) holds the registry, seeded through the
services with four tenants, each with really trained, really signed models (tests/support/models.py):

    builtin          a built-in (HistGradientBoosting) champion
    builtin+shadow   a built-in champion and a built-in SHADOW candidate
    onnx             an ONNX champion (a scikit-learn pipeline exported with skl2onnx, run by onnxruntime)
    onnx+shadow      an ONNX champion and an ONNX SHADOW candidate

`evolution serve` runs as a subprocess (the app workers/serving.py builds: token authentication against the
registry, the prediction records written to it) and is asked, with a real API token, over keep-alive connections
from a few client threads paced open-loop to --rate requests a second in total (a late request does not delay the
next one's slot), for:

    bare             GET /healthz of the same app: the server's round trip with no work
    predict <case>   POST .../predict with one instance, for each tenant above

and, in this process, each model's own ``predict`` on the same one row (as the predictor calls it), paced the same.
The cases are interleaved in --rounds rounds (so a noisy minute on this shared machine hits every case alike);
--warmup requests per case and round are sent first and not counted.

Target (issue 15, serving speed): predict p99 <= bare p99 + the model's p99 (the champion's plus the shadow's where
a shadow scores) + 2 ms. The table prints p50 and p99 per case and the check per predict case; exit 1 if one fails.

    python bench/bench_serving.py [--rate 150] [--requests 3000] [--rounds 5] [--warmup 100] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving_availability import ServingProcess, free_port

from evolution.demo.synthetic import TARGET, generate_rows
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.registry.db import upgrade_to_head
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from evolution.training.formats import ServedModel
from tests.support.models import install_model, install_onnx_model
from tests.support.postgres import app_role_url, create_database, stoppable_postgres_server

ROOT = Principal.for_tenant("root", Role.ADMIN, "*")
MODEL = "yield"
SLACK_MS = 2.0
# tenant -> (format, with a shadow candidate)
CASES: dict[str, tuple[str, bool]] = {
    "builtin": ("builtin", False),
    "builtin-shadow": ("builtin", True),
    "onnx": ("onnx", False),
    "onnx-shadow": ("onnx", True),
}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def one_row() -> dict[str, Any]:
    """One instance's features as a client sends them (the tenant's field_id included, as events carry it)."""
    row = generate_rows(1, 7, utcnow())[0]
    return {k: v for k, v in row.items() if k not in ("event_time", TARGET)}


# ----------------------------------------------------------------------------------------------- pacing
def paced(
    make_call: Callable[[], Callable[[int], None]], n: int, skip: int, rate: float, threads: int
) -> list[float]:
    """Call ``n`` times from ``threads`` threads (each with its own ``make_call()``) at ``rate`` calls a second in
    total (open loop: each call has its slot; a late one is sent at once and does not move the next slot); the
    seconds each call took, but for the first ``skip`` (the warm-up)."""
    latencies: list[float] = []
    lock = threading.Lock()
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        mine: list[float] = []
        call = make_call()
        try:
            for i in range(k, n, threads):
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t0 = time.perf_counter()
                call(i)
                if i >= skip:
                    mine.append(time.perf_counter() - t0)
        except BaseException as error:  # reported by the caller
            errors.append(error)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return latencies


class HttpCase:
    """A request kind over keep-alive connections (one per client thread)."""

    def __init__(self, port: int, method: str, path: str, token: str | None, row: dict[str, Any] | None):
        self._port, self._method, self._path = port, method, path
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._prefix = self._suffix = b""
        if row is not None:
            features = json.dumps(row, separators=(",", ":")).encode()
            self._prefix = b'{"instances":[{"request_id":"'
            self._suffix = b'","features":' + features + b"}]}"
        self._seq = 0
        self._seq_lock = threading.Lock()

    def client(self) -> Callable[[int], None]:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)

        def call(_i: int) -> None:
            body = None
            if self._prefix:
                with self._seq_lock:
                    self._seq += 1
                    seq = self._seq
                body = self._prefix + f"b{os.getpid()}-{seq}".encode() + self._suffix
            conn.request(self._method, self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{self._method} {self._path}: {response.status} {data[:300]!r}")

        return call


# ----------------------------------------------------------------------------------------------- the stack
@dataclass
class Stack:
    serving: ServingProcess
    token: str
    models: dict[str, list[ServedModel]]  # tenant -> [champion, shadow?] loaded as serving loads them


@contextlib.contextmanager
def stack(workdir: Path) -> Iterator[Stack]:
    with stoppable_postgres_server() as pg:
        owner_url = create_database(pg.url)
        upgrade_to_head(owner_url)
        app_url = app_role_url(owner_url)
        home = workdir / "home"
        services = build_services(Settings(home=home, database_url=app_url, database_owner_url=owner_url))
        models: dict[str, list[ServedModel]] = {}
        try:
            for tenant, (fmt, shadow) in CASES.items():
                services.tenants.ensure_tenant(ROOT, tenant)
                install = install_model if fmt == "builtin" else install_onnx_model
                versions = [install(services, tenant, workdir / "models", ModelState.CHAMPION, seed=1)]
                if shadow:
                    versions.append(install(services, tenant, workdir / "models", ModelState.SHADOW, seed=2))
                models[tenant] = [services.loader.load(v).model for v in versions]
            services.users.add_user(ROOT, "bench", "a long enough password", Role.VIEWER, list(CASES))
            token = services.tokens.create_token(ROOT, "bench", "bench").token.get_secret_value()
        finally:
            services.close()
        port = free_port()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "EVOLUTION_HOME": str(home),
            "EVOLUTION_DATABASE_URL": app_url,
            "EVOLUTION_DATABASE_OWNER_URL": owner_url,
            "EVOLUTION_SERVE_HOST": "127.0.0.1",
            "EVOLUTION_SERVE_PORT": str(port),
            "EVOLUTION_TRACING": "off",
        }
        serving = ServingProcess(env, port, workdir)
        try:
            serving.start()
            yield Stack(serving, token, models)
        finally:
            serving.stop()


# ----------------------------------------------------------------------------------------------- the run
@dataclass
class Figures:
    case: str
    latencies_ms: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 0.99)


def measure(
    s: Stack, rate: float, requests: int, rounds: int, warmup: int, clients: int
) -> dict[str, Figures]:
    row = one_row()
    port = s.serving.port
    http_cases: dict[str, HttpCase] = {"bare": HttpCase(port, "GET", "/healthz", None, None)}
    for tenant in CASES:
        path = f"/v1/tenants/{tenant}/models/{MODEL}/predict"
        http_cases[f"predict {tenant}"] = HttpCase(port, "POST", path, s.token, row)
    makers: dict[str, Callable[[], Callable[[int], None]]] = {
        name: case.client for name, case in http_cases.items()
    }
    for tenant, (fmt, shadow) in CASES.items():
        model = s.models[tenant][1 if shadow else 0]  # the shadow tenants' champions are the same kind
        makers[f"model {fmt} shadow" if shadow else f"model {fmt}"] = _model_call(model, [row])
    figures = {name: Figures(name, []) for name in makers}
    per_round = max(1, requests // rounds)
    for r in range(rounds):
        for name, make_call in makers.items():
            latencies = paced(make_call, warmup + per_round, warmup, rate, clients)
            figures[name].latencies_ms += [x * 1000 for x in latencies]
        print(f"round {r + 1}/{rounds} done", flush=True)
    return figures


def _model_call(model: ServedModel, rows: list[dict[str, Any]]) -> Callable[[], Callable[[int], None]]:
    def call(_i: int) -> None:
        model.predict(rows)

    def make() -> Callable[[int], None]:
        return call

    return make


def table(figures: dict[str, Figures], rate: float, clients: int) -> tuple[str, bool]:
    bare = figures["bare"]
    lines = [
        f"1-row requests over loopback, {rate:.0f} req/s open-loop from {clients} connections; "
        f"{len(bare.latencies_ms)} measured per case",
        f"target: predict p99 <= bare p99 + model p99 (champion + shadow where shadowing) + {SLACK_MS:.0f} ms",
        "",
        f"{'case':<26} {'n':>6} {'p50 ms':>8} {'p99 ms':>8}   target check",
    ]
    ok = True
    for name, f in figures.items():
        check = ""
        if name.startswith("predict "):
            fmt, shadow = CASES[name.removeprefix("predict ")]
            model_p99 = figures[f"model {fmt}"].p99 + (figures[f"model {fmt} shadow"].p99 if shadow else 0.0)
            bound = bare.p99 + model_p99 + SLACK_MS
            passed = f.p99 <= bound
            ok &= passed
            check = (
                f"{'PASS' if passed else 'FAIL'}: {f.p99:.2f} <= {bare.p99:.2f} + {model_p99:.2f} + "
                f"{SLACK_MS:.0f} = {bound:.2f} (overhead p99 {f.p99 - bare.p99 - model_p99:+.2f} ms)"
            )
        lines.append(f"{name:<26} {len(f.latencies_ms):>6} {f.p50:>8.2f} {f.p99:>8.2f}   {check}")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second (default 150)")
    parser.add_argument("--requests", type=int, default=3000, help="measured per case (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted per case and round (default 100)")
    parser.add_argument("--clients", type=int, default=4, help="client connections (default 4)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="evolution-bench-serving-"))
    try:
        with stack(work) as s:
            print(f"evolution serve on port {s.serving.port}; measuring", flush=True)
            figures = measure(s, args.rate, args.requests, args.rounds, args.warmup, args.clients)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text, ok = table(figures, args.rate, args.clients)
    print()
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

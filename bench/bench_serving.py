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
next one's slot), in a small client process of their own (bench/paced_client.py: in this process the client's
threads and collector added their own stalls to every case), for:

    bare             GET /healthz of the same app: the server's round trip with no work
    predict <case>   POST .../predict with one instance, for each tenant above

and, in this process, each model's own ``predict`` on the same one row (as the predictor calls it), paced the same.
The cases are interleaved in --rounds rounds (so a noisy minute on this shared machine hits every case alike);
--warmup requests per case and round are sent first and not counted, and before the first round each case gets
that many (the server loads a model on its first request).

Target (issue 15, serving speed): predict p99 <= bare p99 + the model's p99 (the champion's plus the shadow's where
a shadow scores) + 2 ms. The table prints p50 and p99 per case and the check per predict case; exit 1 if one fails.

    python bench/bench_serving.py [--rate 150] [--requests 3000] [--rounds 5] [--warmup 100] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving_availability import ServingProcess
from paced_client import paced

from evolution.demo.synthetic import TARGET, generate_rows
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.registry.db import upgrade_to_head
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from evolution.training.formats import ServedModel
from tests.support.models import install_model, install_onnx_model
from tests.support.ports import free_port
from tests.support.postgres import app_role_url, create_database, stoppable_postgres_server

ROOT = Principal.for_tenant("root", Role.ADMIN, "*")
MODEL = "yield"
CLIENT = Path(__file__).resolve().parent / "paced_client.py"
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


# ----------------------------------------------------------------------------------------------- the cases
def http_case(
    port: int, method: str, path: str, token: str | None, features: dict[str, Any] | None, tag: str
) -> Callable[[int, int, float, int], list[float]]:
    """Requests of one kind, sent by a paced client process of their own (bench/paced_client.py says why); the
    seconds each took."""

    def run(n: int, skip: int, rate: float, threads: int) -> list[float]:
        spec = {"port": port, "method": method, "path": path, "token": token, "features": features}
        spec.update(n=n, skip=skip, rate=rate, threads=threads, tag=f"{tag}-{uuid.uuid4().hex[:8]}")
        done = subprocess.run(
            [sys.executable, str(CLIENT), json.dumps(spec)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{method} {path}: {done.stderr.strip()}")
        return [ms / 1000 for ms in json.loads(done.stdout)]

    return run


def model_case(
    model: ServedModel, rows: list[dict[str, Any]]
) -> Callable[[int, int, float, int], list[float]]:
    """The model's own predict on ``rows``, in this process, paced the same way; the seconds each call took."""

    def call(_i: int) -> None:
        model.predict(rows)

    def run(n: int, skip: int, rate: float, threads: int) -> list[float]:
        return paced(lambda: call, n, skip, rate, threads)

    return run


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
    cases: dict[str, Callable[[int, int, float, int], list[float]]] = {
        "bare": http_case(port, "GET", "/healthz", None, None, "bare")
    }
    for tenant in CASES:
        path = f"/v1/tenants/{tenant}/models/{MODEL}/predict"
        cases[f"predict {tenant}"] = http_case(port, "POST", path, s.token, row, tenant)
    for tenant, (fmt, shadow) in CASES.items():
        model = s.models[tenant][1 if shadow else 0]  # the shadow tenants' champions are the same kind
        cases[f"model {fmt} shadow" if shadow else f"model {fmt}"] = model_case(model, [row])
    # What was loaded to get here stays, as in the server (workers/serving.py): a full collection walking it would
    # pause a model's measured call for milliseconds that the server never pays.
    gc.freeze()
    figures = {name: Figures(name, []) for name in cases}
    # The server loads each model on its first request (verified, and for ONNX a session built): a second or so
    # in which the first round's warm-up requests would pile up and spill into the measured ones.
    for run in cases.values():
        run(warmup, warmup, rate, clients)
    print("every case warmed up", flush=True)
    per_round = max(1, requests // rounds)
    for r in range(rounds):
        for name, run in cases.items():
            latencies = run(warmup + per_round, warmup, rate, clients)
            figures[name].latencies_ms += [x * 1000 for x in latencies]
        print(f"round {r + 1}/{rounds} done", flush=True)
    return figures


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

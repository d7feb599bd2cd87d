"""Floods against the real serving process (`evolution serve`): 300 MB bodies, announced by Content-Length and
streamed chunked, are refused with 413 (a streamed one without a token with 401) after reading at most the
operation's limit, and the process's resident memory does not grow. Also: only the serving process exports inference_availability_ratio.

The body limits themselves, to the byte: tests/integration/test_serving_http.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from evolution.platform.processes import PACKAGES_ROOT
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.security import Principal, Role
from evolution.serving.body_limits import DEFAULT_MAX_INGEST_BYTES, DEFAULT_MAX_PREDICT_BYTES, MIB
from tests.e2e.conftest import EVOLUTION
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

FLOOD_BYTES = 300 * 1000 * 1000
CHUNK = b"\0" * MIB  # one buffer sent 286 times: the flood never exists in this process's memory
STARTUP_S = (
    180.0  # a bound on waiting for the process, not a measurement: it only turns a hang into a failure
)
MAX_RSS_GROWTH = 50 * MIB
PREDICT = "/v1/tenants/acme/models/yield/predict"
EVENTS = "/v1/tenants/acme/events"


@dataclass
class Served:
    url: str
    token: str
    pid: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("floods") / "home"
    services = build_services(Settings(home=home))
    root = Principal.for_tenant("root", Role.ADMIN, "*")
    services.tenants.ensure_tenant(root, "acme")
    services.users.add_user(root, "field-app", "a long enough password", Role.ADMIN, ["acme"])
    token = services.tokens.create_token(root, "field-app", "floods").token.get_secret_value()
    services.close()
    port = free_port()
    env = {
        **os.environ,
        "EVOLUTION_HOME": str(home),
        "EVOLUTION_SERVE_PORT": str(port),
        "EVOLUTION_TRACING": "off",
    }
    log = (home.parent / "serving.log").open("w")
    process = subprocess.Popen([EVOLUTION, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert process.poll() is None, (home.parent / "serving.log").read_text()
            assert time.monotonic() < deadline, "evolution serve did not answer /healthz"
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        found = Served(url, token, process.pid)  # `evolution serve` execs the server: the same process
        for path in (PREDICT, EVENTS):  # the refusal paths run once before memory is measured
            flood(found, path, announced=True, size=64 * MIB)
            flood(found, path, announced=False, size=64 * MIB)
        yield found
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def flood(
    served: Served, path: str, announced: bool, size: int = FLOOD_BYTES, token: bool = True
) -> tuple[httpx.Response, int]:
    """POST ``size`` bytes to ``path``: the answer, and how many bytes the client got to hand to its socket."""
    pulled = 0

    def body() -> Iterator[bytes]:
        nonlocal pulled
        left = size
        while left > 0:
            piece = CHUNK[: min(left, len(CHUNK))]
            left -= len(piece)
            pulled += len(piece)
            yield piece

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {served.token}"
    if announced:
        headers["Content-Length"] = str(size)  # httpx then streams the generator as it is, not chunked
    # When the server closes the connection under it, httpx stops writing and reads the answer already sent.
    response = httpx.post(f"{served.url}{path}", content=body(), headers=headers, timeout=120)
    return response, pulled


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


def kernel_buffers() -> int:
    """The most two loopback sockets can hold in flight: the receiver's buffer and the sender's, at their maxima."""
    total = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        total += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
    return total


@pytest.mark.parametrize(
    ("path", "limit", "announced", "token", "status"),
    [
        (PREDICT, DEFAULT_MAX_PREDICT_BYTES, True, True, 413),
        (PREDICT, DEFAULT_MAX_PREDICT_BYTES, False, True, 413),
        (EVENTS, DEFAULT_MAX_INGEST_BYTES, True, True, 413),
        (EVENTS, DEFAULT_MAX_INGEST_BYTES, False, True, 413),
        # Announced too large: refused before the token is even looked at; streamed: the token is checked first.
        (PREDICT, DEFAULT_MAX_PREDICT_BYTES, True, False, 413),
        (PREDICT, DEFAULT_MAX_PREDICT_BYTES, False, False, 401),
    ],
    ids=[
        "predict-content-length",
        "predict-chunked",
        "events-content-length",
        "events-chunked",
        "predict-content-length-no-token",
        "predict-chunked-no-token",
    ],
)
def test_a_300_mb_flood_is_refused_unread_and_the_server_memory_does_not_grow(
    served: Served, path: str, limit: int, announced: bool, token: bool, status: int
) -> None:
    before = resident_bytes(served.pid)
    response, pulled = flood(served, path, announced, token=token)
    grown = resident_bytes(served.pid) - before

    assert response.status_code == status, response.text
    assert response.json()["error"] == ("ContentTooLarge" if status == 413 else "Unauthorized")
    if status == 413:
        assert f"limit of {limit} bytes" in response.json()["detail"]
    assert response.headers["connection"] == "close"  # the server stops reading: the rest is never received
    # The client could hand its socket no more than the server read (at most the limit) plus what both
    # kernels buffer; the 300 MB were never sent.
    assert pulled <= limit + kernel_buffers() + 2 * len(CHUNK) < FLOOD_BYTES
    assert grown < MAX_RSS_GROWTH, f"resident memory grew by {grown / MIB:.1f} MiB"
    assert httpx.get(f"{served.url}/healthz").status_code == 200


def test_only_the_serving_process_exports_inference_availability(served: Served) -> None:
    scraped = httpx.get(f"{served.url}/metrics").text
    assert "\ninference_availability_ratio 1.0\n" in scraped
    # What the worker and the dashboard processes import, in a fresh interpreter, scraped as their exporters are.
    code = (
        "import workers.worker, dashboard.serve, evolution.cli.main\n"
        "from prometheus_client import generate_latest\n"
        "print(generate_latest().decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGES_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "# TYPE training_duration_seconds histogram" in done.stdout  # the metrics module was scraped
    assert "inference_availability_ratio" not in done.stdout

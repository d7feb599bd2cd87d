"""An open-loop paced HTTP client, run as its own small process by bench/bench_serving.py.

Why a process of its own: a client thread in the bench's process shares that process's interpreter lock and
garbage collector with the models the bench loaded, and a full collection there (or a thread switch) stalls every
request in flight: with the client in the bench's process the bare round trip measured a p99 of about 20 ms, with
this client about 2 ms. What the bench measures is the server, not its client. This module imports the standard
library only, so the process stays small.

    python bench/paced_client.py '{"port": 8000, "method": "GET", "path": "/healthz", "n": 600, "skip": 100,
                                   "rate": 150, "threads": 4}'

prints the milliseconds of each request but the first ``skip`` as a JSON list on stdout; a request answered with a
status other than 200 ends it with exit 1 and the answer on stderr. Optional: ``token`` (a bearer token) and
``features`` (one instance's features: the body is a prediction request with a fresh request id each time).
"""

from __future__ import annotations

import gc
import http.client
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


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

    def __init__(
        self, port: int, method: str, path: str, token: str | None, features: dict[str, Any] | None, tag: str
    ) -> None:
        self._port, self._method, self._path = port, method, path
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._prefix = self._suffix = b""
        if features is not None:
            self._prefix = b'{"instances":[{"request_id":"' + tag.encode() + b"-"
            self._suffix = b'","features":' + json.dumps(features, separators=(",", ":")).encode() + b"}]}"

    def client(self) -> Callable[[int], None]:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)

        def call(i: int) -> None:
            body = self._prefix + str(i).encode() + self._suffix if self._prefix else None
            conn.request(self._method, self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{self._method} {self._path}: {response.status} {data[:300]!r}")

        return call


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    case = HttpCase(
        spec["port"],
        spec["method"],
        spec["path"],
        spec.get("token"),
        spec.get("features"),
        spec.get("tag", "bench"),
    )
    gc.disable()  # a few thousand requests allocate little; no collection pause in the measurement
    try:
        seconds = paced(case.client, spec["n"], spec["skip"], spec["rate"], spec["threads"])
    except Exception as error:
        print(f"paced_client: {error}", file=sys.stderr)
        return 1
    json.dump([s * 1000 for s in seconds], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""moto's AWS server (S3, KMS, ...) in a child process on a free loopback port, for tests over real HTTP.

A separate process, not a thread: moto keeps its state in module globals, and an in-process ``mock_aws`` used by
some other test would reset (or intercept) an in-process server's state. The child binds port 0, reports the
port it got on stdout, and exits when its stdin closes, so it cannot outlive the test session.

Credentials for talking to it are fake and set per test (:func:`fake_aws_env`), never globally.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator

import pytest

_CHILD = r"""
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("PORT", server.get_host_and_port()[1], flush=True)
sys.stdin.read()          # the parent closes stdin (or dies): stop
server.stop()
"""

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_UNSET = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL")


@contextlib.contextmanager
def moto_server(startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Start moto's server; yields its endpoint URL (``http://127.0.0.1:<port>``)."""
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(FAKE_AWS_ENV)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], startup_timeout_s)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"moto server did not start (exit code {proc.poll()}, said {line!r})")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake credentials and no profile/IMDS lookups, for this test only (monkeypatch undoes it)."""
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(FAKE_AWS_ENV)

"""Temporal behind mutual TLS and an API key, as production runs it: Debian's nginx terminates TLS in front of the
shared dev server, demanding a client certificate from the test CA on one port and a bearer API key on another.

With the right certificate `evolution demo --fast` completes through the proxy; with none, with one from another CA,
against the wrong server CA or with a refused key, the CLI, the worker and `evolution doctor` stop within seconds with
one line naming the problem (no hang, no traceback), and never show a key.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from evolution.platform.doctor import Check, temporal_checks
from evolution.platform.orchestrator import OrchestratorUnavailable
from evolution.platform.settings import Settings
from evolution.platform.temporal_config import TemporalTlsConfig
from evolution.platform.wiring import build_services
from evolution.security import Principal, Role
from tests.e2e.conftest import EVOLUTION
from tests.support.ports import free_port
from tests.support.tls_authority import SERVER_NAMES, CertificateAuthority, Issued
from tests.support.tls_proxy import GrpcProxy, grpc_proxy
from tests.workflows.conftest import temporal_env  # noqa: F401  (the shared dev server)
from workers.temporal_client import connect_client

API_KEY = "tk-" + "5" * 40  # recognisable if it ever leaked into output
PACKAGES_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    foreign_ca: CertificateAuthority
    client: Issued
    foreign_client: Issued
    expired_client: Issued


@dataclass(frozen=True)
class TlsWorld:
    pki: Pki
    proxy: GrpcProxy
    home: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, temporal_env: WorkflowEnvironment) -> Iterator[TlsWorld]:  # noqa: F811
    directory = tmp_path_factory.mktemp("temporal-tls")
    ca = CertificateAuthority.create(directory, "evolution-test-ca")
    foreign_ca = CertificateAuthority.create(directory, "foreign-ca")
    pki = Pki(
        ca=ca,
        foreign_ca=foreign_ca,
        client=ca.issue("evolution-worker"),
        foreign_client=foreign_ca.issue("intruder"),
        expired_client=ca.issue(
            "lapsed", valid_from=datetime.now(UTC) - timedelta(days=40), valid_for=timedelta(days=30)
        ),
    )
    server = ca.issue("temporal-frontend", server_names=SERVER_NAMES)
    upstream = temporal_env.client.service_client.config.target_host
    home = build_services(Settings(home=directory / "home"))  # `status` asks about a tenant that exists
    home.tenants.ensure_tenant(Principal.for_tenant("root", Role.ADMIN, "*"), "acme")
    home.close()
    with grpc_proxy(directory, upstream, server, ca.cert_path, API_KEY) as proxy:
        yield TlsWorld(pki, proxy, directory / "home")


def base_env(world: TlsWorld, address: str, **settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EVOLUTION_")  # nothing of the developer's own configuration
    }
    env.update(
        {
            "EVOLUTION_HOME": str(world.home),
            "EVOLUTION_TEMPORAL_ADDRESS": address,
            "EVOLUTION_TEMPORAL_EXTERNAL": "true",
            "EVOLUTION_TASK_QUEUE": f"tls-{free_port()}",
            "EVOLUTION_SERVE_PORT": str(free_port()),
            "EVOLUTION_DASHBOARD_PORT": str(free_port()),
            "EVOLUTION_WORKER_METRICS_PORT": str(free_port()),
            "EVOLUTION_TEMPORAL_METRICS_PORT": str(free_port()),
            "EVOLUTION_DASHBOARD_METRICS_PORT": str(free_port()),
            "EVOLUTION_TRACING": "off",
        }
    )
    env.update({f"EVOLUTION_TEMPORAL_{key.upper()}": value for key, value in settings.items()})
    return env


def mtls_env(world: TlsWorld, client: Issued | None, ca: Path | None = None) -> dict[str, str]:
    settings = {"tls__server_ca": str(ca or world.pki.ca.cert_path)}
    if client is not None:
        settings |= {"tls__client_cert": str(client.cert), "tls__client_key_file": str(client.key)}
    return base_env(world, world.proxy.mtls_address, **settings)


def api_key_env(world: TlsWorld, key: str) -> dict[str, str]:
    key_file = world.home.parent / f"api-key-{len(key)}-{key[-4:]}"
    key_file.write_text(key + "\n")
    return base_env(
        world,
        world.proxy.api_key_address,
        tls__server_ca=str(world.pki.ca.cert_path),
        api_key_file=str(key_file),
    )


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run(env: dict[str, str], *command: str, timeout: float = 120) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        list(command), env=env, capture_output=True, text=True, timeout=timeout, cwd=PACKAGES_ROOT
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def evolution(env: dict[str, str], *args: str, timeout: float = 120) -> Run:
    return run(env, EVOLUTION, *args, timeout=timeout)


def assert_refused(result: Run, *named: str) -> None:
    """Stopped with one line naming the problem, no traceback (how fast: see the in-process tests below)."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(error_lines) == 1, result.stderr
    assert "no answer within" not in error_lines[0], error_lines[0]  # refused at once, not timed out
    for words in named:
        assert words in error_lines[0], error_lines[0]


def doctor(env: dict[str, str]) -> tuple[Run, dict[str, str]]:
    """`evolution doctor` on Temporal alone; its temporal rows as {check: "ok|FAIL detail"}."""
    skips = [
        arg for c in ("database", "artifacts", "signer", "compute", "notifications") for arg in ("--skip", c)
    ]
    result = evolution(env, "doctor", *skips)
    rows = {}
    for line in result.stdout.splitlines():
        if line.startswith("temporal"):
            _, rest = line.split(None, 1)
            for name in ("auth", "TLS files", "client certificate", "reachable"):
                if rest.startswith(name + " "):
                    rows[name] = rest[len(name) :].strip()
    return result, rows


def test_demo_completes_through_the_mutual_tls_proxy_with_the_right_certificate(world: TlsWorld) -> None:
    env = mtls_env(world, world.pki.client)
    before = (world.proxy.error_log.parent / "access.log").stat().st_size
    result = evolution(env, "demo", "--fast", "--no-dashboard", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "is CHAMPION" in output and "v2" in output, output[-4000:]
    # Every Temporal call of the demo and its worker went through the proxy's mutual-TLS door.
    access = (world.proxy.error_log.parent / "access.log").read_text()[before:]
    assert "WorkflowService/PollWorkflowTaskQueue" in access and "StartWorkflowExecution" in access


def settings_for(
    world: TlsWorld, door: str, client: Issued | None = None, ca: Path | None = None, key: str | None = None
) -> Settings:
    """The settings a process would read from the environment of :func:`mtls_env` / :func:`api_key_env`."""
    tls = TemporalTlsConfig(
        server_ca=ca or world.pki.ca.cert_path,
        client_cert=client.cert if client else None,
        client_key=SecretStr(client.key.read_text()) if client else None,
    )
    address = world.proxy.mtls_address if door == "mtls" else world.proxy.api_key_address
    return Settings(
        home=world.home,
        temporal_address=address,
        temporal_external=True,
        temporal_tls=tls,
        temporal_api_key=SecretStr(key) if key is not None else None,
        temporal_connect_timeout_s=60,  # a refusal must not need it: it comes with the first answer
    )


REFUSALS = {
    "no client certificate": (
        "mtls",
        None,
        None,
        None,
        "requires a client certificate (mutual TLS) and none is set",
    ),
    "certificate from another CA": ("mtls", "foreign", None, None, "refused the client certificate"),
    "expired certificate": ("mtls", "expired", None, None, "refused the client certificate"),
    "wrong server CA": (
        "mtls",
        "client",
        "foreign",
        None,
        "not signed by a CA in EVOLUTION_TEMPORAL_TLS__SERVER_CA",
    ),
    "refused API key": ("key", None, None, "tk-wrong-0000", "refused the API key"),
    "no API key": ("key", None, None, None, "needs an API key"),
}


def _settings_of(world: TlsWorld, case: tuple[str, str | None, str | None, str | None, str]) -> Settings:
    door, client, ca, key, _ = case
    pems = {
        "client": world.pki.client,
        "foreign": world.pki.foreign_client,
        "expired": world.pki.expired_client,
    }
    return settings_for(
        world, door, pems[client] if client else None, world.pki.foreign_ca.cert_path if ca else None, key
    )


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_every_refusal_is_named_at_the_first_answer(world: TlsWorld, case: str) -> None:
    settings = _settings_of(world, REFUSALS[case])
    started = time.monotonic()
    with pytest.raises(OrchestratorUnavailable) as refused:
        await connect_client(settings)
    assert time.monotonic() - started < 5, "waited instead of failing at the refusal"
    message = str(refused.value)
    assert REFUSALS[case][-1] in message and "\n" not in message, message
    assert "tk-wrong" not in message


@pytest.mark.parametrize("door", ["mtls", "key"])
async def test_the_right_certificate_or_key_is_let_in(world: TlsWorld, door: str) -> None:
    settings = (
        settings_for(world, door, client=world.pki.client)
        if door == "mtls"
        else settings_for(world, door, key=API_KEY)
    )
    client = await connect_client(settings)
    assert (await client.count_workflows()).count >= 0


def test_cli_without_a_client_certificate_fails_in_one_line(world: TlsWorld) -> None:
    result = evolution(mtls_env(world, None), "status", "--tenant", "acme")
    assert_refused(result, "requires a client certificate", "EVOLUTION_TEMPORAL_TLS__CLIENT_CERT")


def test_cli_with_a_certificate_from_another_ca_fails_in_one_line(world: TlsWorld) -> None:
    result = evolution(mtls_env(world, world.pki.foreign_client), "status", "--tenant", "acme")
    assert_refused(result, "refused the client certificate", "CN=intruder", "CN=foreign-ca")


def test_worker_with_a_foreign_certificate_exits_in_one_line(world: TlsWorld) -> None:
    result = run(
        mtls_env(world, world.pki.foreign_client), sys.executable, "-m", "workers.worker", timeout=120
    )
    assert_refused(result, "refused the client certificate")


def test_the_dashboard_names_a_refused_certificate(world: TlsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's pages catch this error and show it as one warning (dashboard/views/governance.py)."""
    from dashboard.state import with_orchestrator

    for key, value in mtls_env(world, world.pki.foreign_client).items():
        if key.startswith("EVOLUTION_"):
            monkeypatch.setenv(key, value)
    started = time.monotonic()
    with pytest.raises(OrchestratorUnavailable, match="refused the client certificate"):
        with_orchestrator(lambda orchestrator: orchestrator.retraining_status("acme"))
    assert time.monotonic() - started < 30


def test_the_api_key_reaches_the_proxy_and_a_wrong_one_is_refused_clearly(world: TlsWorld) -> None:
    let_in, rows = doctor(api_key_env(world, API_KEY))
    assert let_in.returncode == 0, let_in.stdout + let_in.stderr
    assert rows["auth"].startswith("ok") and "API key" in rows["auth"], rows
    assert rows["reachable"].startswith("ok"), rows

    refused = evolution(api_key_env(world, "tk-wrong-key-000000"), "status", "--tenant", "acme")
    assert_refused(refused, "refused the API key")
    for output in (let_in.stdout, let_in.stderr, refused.stdout, refused.stderr):
        assert API_KEY not in output and "tk-wrong-key" not in output


def temporal_rows(settings: Settings) -> dict[str, Check]:
    return {check.name: check for check in temporal_checks(settings)}


def test_doctor_reports_mutual_tls_and_the_certificate_expiry(world: TlsWorld) -> None:
    rows = temporal_rows(settings_for(world, "mtls", client=world.pki.client))
    assert all(check.ok for check in rows.values()), rows
    assert rows["auth"].detail.startswith("mutual TLS"), rows
    assert "CN=evolution-worker" in rows["client certificate"].detail, rows
    assert "days left" in rows["client certificate"].detail, rows
    assert "reachable" in rows


def test_doctor_names_each_failure(world: TlsWorld) -> None:
    missing = settings_for(world, "mtls", client=world.pki.client)
    assert missing.temporal_tls is not None
    missing.temporal_tls.client_cert = Path("/nonexistent/tls.crt")
    cases = {
        "missing certificate file": (
            missing,
            "TLS files",
            "EVOLUTION_TEMPORAL_TLS__CLIENT_CERT=/nonexistent/tls.crt: no such file",
        ),
        "expired certificate": (
            _settings_of(world, REFUSALS["expired certificate"]),
            "client certificate",
            "EXPIRED",
        ),
        "wrong CA": (_settings_of(world, REFUSALS["wrong server CA"]), "reachable", "not signed by a CA"),
        "refused key": (_settings_of(world, REFUSALS["refused API key"]), "reachable", "refused the API key"),
    }
    for case, (settings, failed, named) in cases.items():
        rows = temporal_rows(settings)
        assert not rows[failed].ok and named in rows[failed].detail, (case, rows)
        assert all("tk-wrong" not in check.detail for check in rows.values()), rows
    # The expired certificate is also refused by the server, and doctor says so.
    expired = temporal_rows(cases["expired certificate"][0])
    assert not expired["reachable"].ok and "refused the client certificate" in expired["reachable"].detail

"""The Temporal connection settings: mutual TLS and API keys read from settings and files, refusals named for the
operator, and doctor's view of the client certificate (no server here: tests/e2e/test_temporal_tls.py has one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from evolution.platform.doctor import temporal_auth_checks
from evolution.platform.secret_files import secret_settings
from evolution.platform.settings import Settings
from evolution.platform.temporal_config import (
    TemporalConfigError,
    TemporalConnection,
    TemporalTlsConfig,
    TlsMaterial,
    connection_failure,
)
from tests.support.tls_authority import CertificateAuthority, Issued


@pytest.fixture
def client_pem(tmp_path: Path) -> Issued:
    return CertificateAuthority.create(tmp_path, "unit-ca").issue("unit-client")


def mtls(pem: Issued) -> TemporalTlsConfig:
    return TemporalTlsConfig(client_cert=pem.cert, client_key=SecretStr(pem.key.read_text()))


def test_the_private_key_and_the_api_key_can_come_from_files() -> None:
    variables = {s.file_variable for s in secret_settings(Settings)}
    assert "EVOLUTION_TEMPORAL_TLS__CLIENT_KEY_FILE" in variables
    assert "EVOLUTION_TEMPORAL_API_KEY_FILE" in variables


def test_settings_from_the_environment_with_the_key_from_a_file(
    client_pem: Issued, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVOLUTION_TEMPORAL_TLS__CLIENT_CERT", str(client_pem.cert))
    monkeypatch.setenv("EVOLUTION_TEMPORAL_TLS__CLIENT_KEY_FILE", str(client_pem.key))
    monkeypatch.setenv("EVOLUTION_TEMPORAL_TLS__SERVER_NAME", "temporal.internal")
    connection = Settings(home=tmp_path).temporal_connection()
    assert connection.auth == "mutual TLS" and connection.uses_tls
    assert connection.tls is not None and connection.tls.server_name == "temporal.internal"
    assert connection.tls.client_key == client_pem.key.read_bytes().rstrip(b"\n")


def test_a_certificate_without_its_key_is_refused_naming_both(client_pem: Issued) -> None:
    half = Settings(temporal_tls=TemporalTlsConfig(client_cert=client_pem.cert))
    with pytest.raises(
        TemporalConfigError, match="CLIENT_CERT is set without EVOLUTION_TEMPORAL_TLS__CLIENT_KEY_FILE"
    ):
        half.temporal_connection()
    key_only = Settings(
        temporal_tls=TemporalTlsConfig(client_key=SecretStr("-----BEGIN PRIVATE KEY----- s3cr3t"))
    )
    with pytest.raises(TemporalConfigError) as refused:
        key_only.temporal_connection()
    assert "CLIENT_KEY is set without" in str(refused.value) and "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize(
    ("tls", "api_key", "auth", "uses_tls"),
    [
        (False, None, "none", False),
        (True, None, "TLS", True),
        ("mtls", None, "mutual TLS", True),
        (False, "k", "API key", True),  # an API key turns TLS on with the system's roots: Cloud needs it
        ("mtls", "k", "API key + mutual TLS", True),
    ],
)
def test_which_auth_is_in_use(
    client_pem: Issued, tls: object, api_key: str | None, auth: str, uses_tls: bool
) -> None:
    config = {False: None, True: TemporalTlsConfig(server_name="x"), "mtls": mtls(client_pem)}[tls]  # type: ignore[index]
    settings = Settings(temporal_tls=config, temporal_api_key=SecretStr(api_key) if api_key else None)
    connection = settings.temporal_connection()
    assert (connection.auth, connection.uses_tls) == (auth, uses_tls)


def test_a_missing_or_wrong_file_is_named_with_its_variable(client_pem: Issued, tmp_path: Path) -> None:
    missing = Settings(temporal_tls=TemporalTlsConfig(server_ca=tmp_path / "nope.pem"))
    with pytest.raises(
        TemporalConfigError, match=r"EVOLUTION_TEMPORAL_TLS__SERVER_CA=.*nope.pem: no such file"
    ):
        missing.temporal_connection()
    not_a_cert = Settings(temporal_tls=TemporalTlsConfig(server_ca=client_pem.key))
    with pytest.raises(TemporalConfigError, match="holds no PEM certificate"):
        not_a_cert.temporal_connection()


def connection(tls: TlsMaterial | None = None, api_key: str | None = None) -> TemporalConnection:
    return TemporalConnection("temporal.example.com:7233", "prod", tls, api_key)


SERVER_CA = TlsMaterial(
    server_ca=b"-----BEGIN CERTIFICATE-----", client_cert=None, client_key=None, server_name=None
)


@pytest.mark.parametrize(
    ("raw", "tls", "api_key", "named"),
    [
        # A self-hosted frontend with requireClientAuth aborts the handshake with an alert (rustls words).
        (
            "Failed client connect: Server connection error: tonic::transport::Error(Transport, ConnectError(Custom "
            "{ kind: InvalidData, error: AlertReceived(CertificateRequired) }))",
            SERVER_CA,
            None,
            "requires a client certificate (mutual TLS) and none is set",
        ),
        (
            "ConnectError(Custom { kind: InvalidData, error: AlertReceived(BadCertificate) })",
            "mtls",
            None,
            "refused the client certificate",
        ),
        (
            "ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(NotValidForName) })",
            SERVER_CA,
            None,
            "EVOLUTION_TEMPORAL_TLS__SERVER_NAME",
        ),
        (
            "ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(Expired) })",
            SERVER_CA,
            None,
            "the server's certificate has expired",
        ),
        # Temporal Cloud refuses a revoked key with a gRPC status, not an HTTP one.
        (
            'Status { code: PermissionDenied, message: "Request unauthorized." }',
            None,
            "k",
            "refused the API key",
        ),
        # A self-hosted cluster's authorizer refuses a certificate without a role in the namespace.
        (
            'Status { code: PermissionDenied, message: "Request unauthorized." }',
            "mtls",
            None,
            "refused it access to namespace prod",
        ),
        (
            "ConnectError(Custom { kind: InvalidData, error: InvalidContentType })",
            SERVER_CA,
            None,
            "does not speak TLS",
        ),
        ("some new error\nwith a second line", None, None, "some new error"),
    ],
)
def test_refusals_are_named(
    client_pem: Issued, raw: str, tls: object, api_key: str | None, named: str
) -> None:
    material = Settings(temporal_tls=mtls(client_pem)).temporal_connection().tls if tls == "mtls" else tls
    line = connection_failure(connection(material, api_key), raw)  # type: ignore[arg-type]
    assert named in line and "\n" not in line, line
    assert line.startswith("cannot connect to Temporal at temporal.example.com:7233 (namespace prod, auth: ")


def test_doctor_warns_before_the_client_certificate_expires_and_fails_after(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path, "doctor-ca")
    now = datetime.now(UTC)
    soon = ca.issue("soon", valid_from=now - timedelta(days=25), valid_for=timedelta(days=30))
    lapsed = ca.issue("lapsed", valid_from=now - timedelta(days=40), valid_for=timedelta(days=30))
    fresh = ca.issue("fresh")

    def cert_row(pem: Issued) -> tuple[bool, str]:
        rows = {c.name: c for c in temporal_auth_checks(Settings(temporal_tls=mtls(pem)))}
        assert rows["auth"].detail.startswith("mutual TLS")
        return rows["client certificate"].ok, rows["client certificate"].detail

    assert cert_row(fresh)[0] and "days left" in cert_row(fresh)[1]
    ok, detail = cert_row(soon)
    assert ok and "renew now" in detail, detail
    ok, detail = cert_row(lapsed)
    assert not ok and "EXPIRED" in detail and "CN=lapsed" in detail, detail


def test_doctor_never_shows_the_api_key() -> None:
    rows = temporal_auth_checks(Settings(temporal_api_key=SecretStr("tk-very-secret-value")))
    assert rows[0].detail.startswith("API key") and "never shown" in rows[0].detail
    assert all("tk-very-secret" not in row.detail for row in rows)

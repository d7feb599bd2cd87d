"""How every process connects to Temporal: mutual TLS, an API key (Temporal Cloud), or neither (the dev server).

The settings (``EVOLUTION_TEMPORAL_TLS__*``, ``EVOLUTION_TEMPORAL_API_KEY``) are read here into the bytes and strings
a client needs, with errors that name the variable and the file; ``workers/temporal_client.py`` turns them into the
SDK's objects (``evolution`` never imports Temporal). The private key and the API key are secrets: they can be given
as ``…_FILE`` (Kubernetes Secret volumes) and are never printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from evolution.errors import InvalidInput
from evolution.platform.pem_certificates import certificate_summary
from evolution.platform.secret_files import why_unreadable

TLS_VARIABLE = "EVOLUTION_TEMPORAL_TLS__"
CONNECT_TIMEOUT_S = 10.0


class TemporalConfigError(InvalidInput):
    """A Temporal connection setting that cannot be used; names the variable and the file, never a secret."""


class TemporalTlsConfig(BaseModel):
    """TLS to the Temporal frontend; any field set turns TLS on."""

    model_config = ConfigDict(extra="forbid")

    server_ca: Path | None = Field(
        default=None,
        description="PEM bundle of the CAs the server's certificate must chain to; None: the system's roots "
        "(Temporal Cloud). During a CA rotation it holds the old and the new CA.",
    )
    client_cert: Path | None = Field(
        default=None, description="PEM client certificate (and its intermediates) for mutual TLS."
    )
    client_key: SecretStr | None = Field(
        default=None,
        description="PEM private key of the client certificate; usually EVOLUTION_TEMPORAL_TLS__CLIENT_KEY_FILE.",
    )
    server_name: str | None = Field(
        default=None,
        description="The name the server's certificate must carry when it differs from the address's host.",
    )


Auth = Literal["none", "TLS", "mutual TLS", "API key", "API key + mutual TLS"]


@dataclass(frozen=True)
class TlsMaterial:
    server_ca: bytes | None
    client_cert: bytes | None
    client_key: bytes | None
    server_name: str | None


@dataclass(frozen=True)
class TemporalConnection:
    """Everything a client needs to connect, read from the settings and the files they name."""

    address: str
    namespace: str
    tls: TlsMaterial | None
    api_key: str | None = None
    connect_timeout_s: float = CONNECT_TIMEOUT_S

    @property
    def uses_tls(self) -> bool:
        # An API key travels only over TLS: Temporal Cloud refuses it in the clear.
        return self.tls is not None or self.api_key is not None

    @property
    def auth(self) -> Auth:
        return auth_of(
            self.tls is not None, self.tls is not None and self.tls.client_cert is not None, self.api_key
        )


def auth_of(tls: bool, client_cert: bool, api_key: object) -> Auth:
    if api_key is not None:
        return "API key + mutual TLS" if client_cert else "API key"
    if client_cert:
        return "mutual TLS"
    return "TLS" if tls else "none"


def _read(field: str, path: Path) -> bytes:
    where = f"{TLS_VARIABLE}{field.upper()}={path}"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TemporalConfigError(f"{where}: {why_unreadable(error)}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TemporalConfigError(f"{where}: holds no PEM certificate")
    return data


def tls_material(config: TemporalTlsConfig) -> TlsMaterial:
    # Checked here rather than by a model validator: pydantic's error would echo the section, key included.
    if config.client_cert is not None and config.client_key is None:
        raise TemporalConfigError(
            f"{TLS_VARIABLE}CLIENT_CERT is set without {TLS_VARIABLE}CLIENT_KEY_FILE: mutual TLS needs both"
        )
    if config.client_key is not None and config.client_cert is None:
        raise TemporalConfigError(
            f"{TLS_VARIABLE}CLIENT_KEY is set without {TLS_VARIABLE}CLIENT_CERT: mutual TLS needs both"
        )
    key = config.client_key.get_secret_value().encode() if config.client_key is not None else None
    if key is not None and b"PRIVATE KEY-----" not in key:
        raise TemporalConfigError(f"{TLS_VARIABLE}CLIENT_KEY: holds no PEM private key")
    return TlsMaterial(
        server_ca=_read("server_ca", config.server_ca) if config.server_ca is not None else None,
        client_cert=_read("client_cert", config.client_cert) if config.client_cert is not None else None,
        client_key=key,
        server_name=config.server_name,
    )


def temporal_connection(
    address: str,
    namespace: str,
    tls: TemporalTlsConfig | None,
    api_key: SecretStr | None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> TemporalConnection:
    return TemporalConnection(
        address=address,
        namespace=namespace,
        tls=tls_material(tls) if tls is not None else None,
        api_key=api_key.get_secret_value() if api_key is not None else None,
        connect_timeout_s=connect_timeout_s,
    )


# What the SDK's connect errors say (rustls and tonic words), mapped to what the operator must fix.
_SERVER_CERT_UNTRUSTED = ("UnknownIssuer", "BadSignature", "certificate verify failed")
_CLIENT_CERT_REFUSED = (
    "CertificateRequired",
    "BadCertificate",
    "UnknownCA",
    "UnknownCa",
    "CertificateExpired",
    "CertificateRevoked",
    "CertificateUnknown",
    "UnsupportedCertificate",
    "AccessDenied",
    "400 Bad Request",
)
_KEY_REFUSED = ("401 Unauthorized", "403 Forbidden", "Unauthenticated", "PermissionDenied", "unauthorized")
_TLS_TO_PLAINTEXT = ("InvalidContentType", "CorruptMessage", "InvalidMessage", "wrong version number")
_PLAINTEXT_TO_TLS = ("http2 error", "FRAME_SIZE_ERROR", "h2 protocol error")
_UNREACHABLE = (
    "Connection refused",
    "ConnectionRefused",
    "dns error",
    "Name or service not known",
    "tcp connect",
)


def _said(raw: str, words: tuple[str, ...]) -> bool:
    return any(word.lower() in raw.lower() for word in words)


def _client_cert_name(connection: TemporalConnection) -> str:
    material = connection.tls
    if material is None or material.client_cert is None:
        return ""
    try:
        validity = certificate_summary(material.client_cert)
    except ValueError:
        return ""
    return f" ({validity.subject}, issued by {validity.issuer}, valid until {validity.not_after:%Y-%m-%d})"


def failure_reason(connection: TemporalConnection, raw: str) -> str:
    """The problem behind a failed connect, named for the operator, from the SDK's error text and the settings."""
    tls = connection.tls
    cert_set = tls is not None and tls.client_cert is not None
    ca = f"{TLS_VARIABLE}SERVER_CA" if tls is not None and tls.server_ca is not None else "the system's roots"
    if "NotValidForName" in raw or "certificate is not valid for" in raw:
        return (
            "the server's certificate does not carry the name dialled: set "
            f"{TLS_VARIABLE}SERVER_NAME to the name it carries"
        )
    if "Expired" in raw and "CertificateExpired" not in raw:
        return "the server's certificate has expired (or this machine's clock is wrong)"
    if _said(raw, _SERVER_CERT_UNTRUSTED):
        return (
            f"the server's certificate is not signed by a CA in {ca} (wrong CA?): set {TLS_VARIABLE}SERVER_CA to "
            "the bundle of the CA that signed the server's certificate"
        )
    if _said(raw, _KEY_REFUSED):
        if connection.api_key is not None:
            return (
                "the server refused the API key (EVOLUTION_TEMPORAL_API_KEY): wrong, expired or revoked, or "
                "not allowed in this namespace"
            )
        if cert_set:
            return (
                f"the server took the client certificate{_client_cert_name(connection)} but refused it access to "
                f"namespace {connection.namespace}: its authorizer grants this certificate no role there"
            )
        return (
            "the server refused an unauthenticated client: it needs an API key (EVOLUTION_TEMPORAL_API_KEY_FILE) "
            f"or a client certificate ({TLS_VARIABLE}CLIENT_CERT, {TLS_VARIABLE}CLIENT_KEY_FILE)"
        )
    if _said(raw, _CLIENT_CERT_REFUSED):
        if not cert_set:
            return (
                "the server requires a client certificate (mutual TLS) and none is set: set "
                f"{TLS_VARIABLE}CLIENT_CERT and {TLS_VARIABLE}CLIENT_KEY_FILE"
            )
        return (
            f"the server refused the client certificate {TLS_VARIABLE}CLIENT_CERT{_client_cert_name(connection)}: "
            "not signed by a CA the server trusts, expired or revoked"
        )
    if _said(raw, _TLS_TO_PLAINTEXT) and connection.uses_tls:
        return f"the server does not speak TLS: unset {TLS_VARIABLE}* (and the API key), or dial its TLS port"
    if _said(raw, _PLAINTEXT_TO_TLS) and not connection.uses_tls:
        return (
            f"the server speaks TLS and this client does not: set {TLS_VARIABLE}SERVER_CA "
            f"(and {TLS_VARIABLE}CLIENT_CERT, {TLS_VARIABLE}CLIENT_KEY_FILE for mutual TLS)"
        )
    if _said(raw, _UNREACHABLE):
        return "nothing answers there: is `evolution up` running, or EVOLUTION_TEMPORAL_ADDRESS set to your cluster?"
    return _first_line(raw)


def _first_line(raw: str) -> str:
    line = raw.strip().splitlines()[0] if raw.strip() else "unknown error"
    return line if len(line) <= 300 else line[:300] + "…"


def connection_failure(connection: TemporalConnection, raw: str) -> str:
    """One line for a failed connect: where, with which authentication, and what to fix."""
    return (
        f"cannot connect to Temporal at {connection.address} (namespace {connection.namespace}, "
        f"auth: {connection.auth}): {failure_reason(connection, raw)}"
    )

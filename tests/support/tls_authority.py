"""A throwaway certificate authority for the tests' TLS servers and clients, made with ``cryptography``.

One CA serves the PostgreSQL test server (tests/support/postgres.py) and the Temporal mTLS proxy
(tests/support/tls_proxy.py): server certificates (``server_names`` as SANs) and client certificates (CN = the role
or workload), any validity window (expired, not yet valid, about to expire), and a second, foreign CA for the
"wrong CA" cases. P-256 keys (fast to generate); every file is written 0600, as servers and libpq demand of keys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "127.0.0.1")
LEAF_VALIDITY = dt.timedelta(days=90)
# Backdated a little so that a certificate made now is valid to a server whose clock is a few seconds behind.
CLOCK_SKEW = dt.timedelta(hours=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    not_before: dt.datetime
    not_after: dt.datetime


@dataclass
class CertificateAuthority:
    """A CA whose certificate is ``cert_path``; issues server and client certificates into ``directory``."""

    directory: Path
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, directory: Path, name: str = "evolution-test-ca") -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory=directory, name=name, key=key, cert=cert)
        _write(ca.cert_path, _pem(cert))
        _write(ca.key_path, _key_pem(key))
        return ca

    @classmethod
    def open(cls, cert_path: Path) -> CertificateAuthority:
        """The CA whose certificate is ``cert_path`` (its key beside it), to issue more certificates from."""
        key = serialization.load_pem_private_key(cert_path.with_suffix(".key").read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cls(directory=cert_path.parent, name=cert_path.stem, key=key, cert=cert)

    @property
    def cert_path(self) -> Path:
        return self.directory / f"{self.name}.crt"

    @property
    def key_path(self) -> Path:
        return self.directory / f"{self.name}.key"

    def issue(
        self,
        stem: str,
        common_name: str | None = None,
        *,
        server_names: tuple[str, ...] = (),
        valid_from: dt.datetime | None = None,
        valid_for: dt.timedelta = LEAF_VALIDITY,
        expired: bool = False,
    ) -> Issued:
        """A leaf certificate and key as ``<stem>.crt`` and ``<stem>.key``: a server's (``server_names`` as DNS/IP
        SANs) or else a client's. ``common_name`` defaults to ``stem``. The window starts at ``valid_from`` (in the
        future: not yet valid) and lasts ``valid_for``; ``expired`` makes one that lapsed a day ago."""
        if expired and valid_from is not None:
            raise ValueError("give either expired or valid_from, not both")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        if expired:
            valid_from, valid_for = now - dt.timedelta(days=10), dt.timedelta(days=9)
        not_before = valid_from if valid_from is not None else now - CLOCK_SKEW
        not_after = not_before + valid_for
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or stem))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_alt_names(server_names)), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert=_write(self.directory / f"{stem}.crt", _pem(cert)),
            key=_write(self.directory / f"{stem}.key", _key_pem(key)),
            not_before=not_before,
            not_after=not_after,
        )


def _alt_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    return alt

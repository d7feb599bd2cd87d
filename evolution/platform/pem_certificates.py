"""What `evolution doctor` says about a certificate: whose it is, who signed it, and when it expires.

One reader for both of doctor's TLS clients: PostgreSQL's CA and client certificate files and Temporal's client
certificate. Reads PEM only (public certificates, never keys); several certificates (a CA bundle, or a leaf and its
intermediates) are summed up by the one that expires first, since that is the one that will break connections.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from evolution.platform.secret_files import why_unreadable

# Renew before this: a certificate rotated on the last day leaves no time to roll it out.
EXPIRY_WARNING = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertificateSummary:
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    count: int

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    def problem(self, now: dt.datetime) -> str | None:
        if now >= self.not_after:
            return f"expired on {self.not_after:%Y-%m-%d %H:%M} UTC"
        if now < self.not_before:
            return f"not valid before {self.not_before:%Y-%m-%d %H:%M} UTC"
        return None

    def describe(self, now: dt.datetime) -> str:
        left = self.not_after - now
        when = f"expires {self.not_after:%Y-%m-%d} ({left.days} days)"
        if left < EXPIRY_WARNING:
            when += ", renew it soon"
        several = f", first to expire of {self.count}" if self.count > 1 else ""
        return f"{self.subject}, issued by {self.issuer}, {when}{several}"


class CertificateFileError(ValueError):
    """A certificate file that cannot be read or is not PEM; the message names the path."""


def certificate_summary(pem: bytes) -> CertificateSummary:
    """The certificates in ``pem`` summed up by the first to expire; ValueError if it holds none."""
    from cryptography import x509

    certificates = x509.load_pem_x509_certificates(pem)
    first = min(certificates, key=lambda c: c.not_valid_after_utc)
    return CertificateSummary(
        subject=first.subject.rfc4514_string(),
        issuer=first.issuer.rfc4514_string(),
        not_before=first.not_valid_before_utc,
        not_after=first.not_valid_after_utc,
        count=len(certificates),
    )


def read_certificate_file(path: Path) -> CertificateSummary:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CertificateFileError(f"{path}: {why_unreadable(error)}") from None
    try:
        return certificate_summary(data)
    except ValueError:
        raise CertificateFileError(f"{path}: not a PEM certificate") from None

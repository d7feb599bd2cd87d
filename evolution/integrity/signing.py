"""Signatures: the signer port, the local key signer, offline verification and the key ring.

Verification never needs the signer: it takes a public key in PEM, so every signature made by any backend (the
local key, ECDSA P-256 by default and Ed25519 in homes made before; an AWS KMS ECC_NIST_P256 key) is checked offline
with ``cryptography``. Every signature names its key by id, so a key ring that also holds retired keys (see
:mod:`evolution.integrity.key_rotation`) keeps verifying what they signed. A failed check is
always an :class:`IntegrityViolation`, whatever went wrong (bad base64, wrong key type, wrong signature):
callers must not be able to mistake a malformed signature for a transient error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import BaseModel, ConfigDict, Field

from evolution.errors import IntegrityViolation, InvalidInput

Algorithm = Literal["ed25519", "ecdsa-p256-sha256"]
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
LocalKeyKind = Literal["ecdsa-p256-sha256", "ed25519"]
LocalPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MAX_KEY_FILE = 16 * 1024


class Signature(BaseModel):
    """A detached signature: which algorithm, which key, and the signature bytes in standard base64."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    algorithm: Algorithm
    key_id: str = Field(min_length=1, max_length=200)
    value: str = Field(min_length=1, max_length=400, description="standard base64 of the raw signature bytes")
    key_ref: str | None = Field(
        default=None,
        max_length=2048,
        # absent rather than null when unset, so older signatures serialise byte for byte as before
        exclude_if=lambda ref: ref is None,
        description="the backend's own name of the signing key (e.g. the AWS KMS key ARN); informational only, "
        "verification always goes by key_id",
    )
    prehash: Literal["sha256"] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="sha256: what was signed is signed_message(payload, 'sha256') — a fixed prefix and the "
        "payload's SHA-256 — because the signer takes messages of bounded size (AWS KMS: 4096 bytes RAW)",
    )


PREHASH_PREFIX = b"controlled-evolution/prehash/sha256\n"


def signed_message(payload: bytes, prehash: str | None) -> bytes:
    """The bytes a signature covers: the payload itself, or for a prehashed signature a prefix and its SHA-256.

    The prefix keeps the two apart: the system signs canonical JSON (which starts with ``{``) or manifests, never
    bytes that start with the prefix, so a prehashed signature cannot be passed off as one over a payload.
    """
    if prehash is None:
        return payload
    if prehash != "sha256":
        raise IntegrityViolation(f"unknown prehash {prehash!r}")
    return PREHASH_PREFIX + hashlib.sha256(payload).digest()


@runtime_checkable
class Signer(Protocol):
    """Port: whatever signs on the system's behalf (local key file, AWS KMS)."""

    @property
    def key_id(self) -> str: ...

    @property
    def algorithm(self) -> str: ...

    def sign(self, payload: bytes) -> Signature: ...

    def public_key_pem(self) -> bytes: ...


def _load_public_pem(public_key_pem: bytes | str) -> PublicKey:
    pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as error:
        raise IntegrityViolation(f"public key is not a readable PEM public key: {error}") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise IntegrityViolation(
        f"unsupported public key type {type(key).__name__}: only Ed25519 and ECDSA P-256"
    )


def _algorithm_of(key: PublicKey) -> Algorithm:
    return "ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "ecdsa-p256-sha256"


def _key_id_of(key: PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return "ecdsa-p256:" + hashlib.sha256(point).hexdigest()[:16]


def _public_pem_of(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_pem_of(private: LocalPrivateKey) -> bytes:
    """The public key (SubjectPublicKeyInfo PEM) of a private key."""
    return _public_pem_of(private.public_key())


def key_id_for_public_pem(public_key_pem: bytes | str) -> str:
    """The key id the system derives from a public key: ``ed25519:<16 hex>`` or ``ecdsa-p256:<16 hex>``."""
    return _key_id_of(_load_public_pem(public_key_pem))


def algorithm_for_public_pem(public_key_pem: bytes | str) -> Algorithm:
    """Which signature algorithm a public key verifies."""
    return _algorithm_of(_load_public_pem(public_key_pem))


def verify_signature(public_key_pem: bytes | str, payload: bytes, signature: Signature) -> None:
    """Check ``signature`` over ``payload`` with the given public key; IntegrityViolation if it fails."""
    key = _load_public_pem(public_key_pem)
    expected = _algorithm_of(key)
    if signature.algorithm != expected:
        raise IntegrityViolation(
            f"signature by {signature.key_id} claims {signature.algorithm}, but the key is {expected}"
        )
    try:
        raw = base64.b64decode(signature.value, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityViolation(f"signature by {signature.key_id} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != signature.value:
        # One signature, one spelling: non-canonical padding bits would let a changed text verify.
        raise IntegrityViolation(f"signature by {signature.key_id} is not canonical base64")
    message = signed_message(payload, signature.prehash)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, message)
        else:
            key.verify(raw, message, ec.ECDSA(hashes.SHA256()))  # DER-encoded (r, s), as AWS KMS returns it
    except InvalidSignature:
        raise IntegrityViolation(
            f"signature by {signature.key_id} does not verify over the payload"
        ) from None


class KeyRing:
    """Trusted public keys by key id; verifies a signature with the key its ``key_id`` names.

    ``reload`` (optional) reads the trusted keys again from where they are kept: a key id the ring does not know
    asks it once before the key is called untrusted, so a process that was running when another one rotated the
    signing key trusts the new key (and the old one, kept verify-only) without a restart."""

    def __init__(
        self,
        keys: Mapping[str, bytes | str] | None = None,
        reload: Callable[[], Mapping[str, bytes]] | None = None,
    ) -> None:
        self._keys: dict[str, bytes] = {}
        self._reload = reload
        for key_id, pem in (keys or {}).items():
            self.add(key_id, pem)

    def _knows(self, key_id: object) -> bool:
        if key_id in self._keys:
            return True
        if self._reload is not None:
            for known_id, pem in self._reload().items():
                if known_id not in self._keys:
                    self.add(known_id, pem)
        return key_id in self._keys

    @classmethod
    def of(cls, *signers: Signer) -> KeyRing:
        ring = cls()
        for signer in signers:
            ring.add(signer.key_id, signer.public_key_pem())
        return ring

    def add(self, key_id: str, public_key_pem: bytes | str) -> None:
        """Trust ``public_key_pem`` under ``key_id``; a different key under a known id is refused."""
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else bytes(public_key_pem)
        try:
            _load_public_pem(pem)
        except IntegrityViolation as error:
            raise InvalidInput(f"key {key_id!r}: {error}") from None
        known = self._keys.get(key_id)
        if known is not None and known != pem:
            raise InvalidInput(f"key id {key_id!r} is already bound to a different public key")
        self._keys[key_id] = pem

    def public_key_pem(self, key_id: str) -> bytes:
        if not self._knows(key_id):
            raise IntegrityViolation(f"signing key {key_id!r} is not a trusted key")
        return self._keys[key_id]

    def verify(self, payload: bytes, signature: Signature) -> None:
        """Raises IntegrityViolation unless a trusted key named by the signature verifies it."""
        verify_signature(self.public_key_pem(signature.key_id), payload, signature)

    def __contains__(self, key_id: object) -> bool:
        return self._knows(key_id)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def new_private_key(kind: LocalKeyKind) -> LocalPrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _sign_with(key: LocalPrivateKey, payload: bytes) -> Signature:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Signature(
            algorithm="ed25519", key_id=_key_id_of(key.public_key()), value=_b64(key.sign(payload))
        )
    raw = key.sign(payload, ec.ECDSA(hashes.SHA256()))  # DER-encoded (r, s), like AWS KMS and DSSE verifiers
    return Signature(algorithm="ecdsa-p256-sha256", key_id=_key_id_of(key.public_key()), value=_b64(raw))


def write_private_file(directory: Path, path: Path, data: bytes, *, replace: bool = False) -> bool:
    """Write ``data`` to ``path`` (mode 0600) atomically: a private temporary file, fsynced, then linked into place.

    Without ``replace`` an existing file is never overwritten (False: it was there first); with it, the new file
    takes the old one's place in one rename, so readers see either the old key or the new one, never neither.
    """
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits, but be explicit
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite a key
            except FileExistsError:
                return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)
    return True


def private_key_pem(key: LocalPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class LocalSigner:
    """The embedded signer: a key in ``<key_dir>/<name>.key`` (PKCS#8 PEM, mode 0600, dir 0700).

    A new key is ECDSA P-256 (what AWS KMS signs with in production, and what the OpenSSF ``model_signing``
    verifier takes); a home made before that keeps its Ed25519 key, which signs until ``evolution keys rotate``.

    The key is created on first use and loaded afterwards. Creation is atomic and race-free: the key is
    written to a private temporary file, fsynced, and hard-linked into place, so a concurrent process either
    wins (and both use its key) or loses; a half-written key file is never visible. A key file that group or
    others can read, or that is a symlink, is refused rather than used: a leaked signing key would let anyone
    forge models.
    """

    def __init__(
        self, key_dir: Path, name: str = "signing", *, new_key: LocalKeyKind = "ecdsa-p256-sha256"
    ) -> None:
        if not _KEY_NAME.match(name):
            raise InvalidInput(f"key name {name!r} must match {_KEY_NAME.pattern}")
        self.key_dir = Path(key_dir)
        self.path = self.key_dir / f"{name}.key"
        self._new_key: LocalKeyKind = new_key
        self._ensure_dir()
        private = self._load() if os.path.lexists(self.path) else self._create()
        self._private = private
        self._public: PublicKey = private.public_key()
        self.key_id: str = _key_id_of(self._public)
        self.algorithm: str = _algorithm_of(self._public)

    def _ensure_dir(self) -> None:
        if not self.key_dir.exists():
            self.key_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
            os.chmod(self.key_dir, 0o700)
        mode = self.key_dir.stat().st_mode
        if not stat.S_ISDIR(mode):
            raise InvalidInput(f"key directory {self.key_dir} is not a directory")
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise IntegrityViolation(
                f"key directory {self.key_dir} is writable by group/other (mode {stat.S_IMODE(mode):o}); "
                "anyone could replace the signing key: chmod 700 it"
            )

    def _create(self) -> LocalPrivateKey:
        private = new_private_key(self._new_key)
        if not write_private_file(self.key_dir, self.path, private_key_pem(private)):
            return self._load()
        return private

    def _load(self) -> LocalPrivateKey:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            raise IntegrityViolation(
                f"signing key {self.path} cannot be opened safely (symlink?): {error}"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise IntegrityViolation(f"signing key {self.path} is not a regular file")
            if info.st_mode & 0o077:
                raise IntegrityViolation(
                    f"signing key {self.path} is accessible by group/other "
                    f"(mode {stat.S_IMODE(info.st_mode):o}); "
                    "refusing to use a possibly leaked key: chmod 600 it, or rotate it if it was exposed"
                )
            pem = os.read(fd, _MAX_KEY_FILE)
        finally:
            os.close(fd)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise IntegrityViolation(
                f"signing key {self.path} is not a readable PEM private key: {error}"
            ) from None
        return self._accept(key)

    def _accept(self, key: object) -> LocalPrivateKey:
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        raise IntegrityViolation(
            f"signing key {self.path} is a {type(key).__name__}, not ECDSA P-256 or Ed25519"
        )

    def sign(self, payload: bytes) -> Signature:
        return _sign_with(self._private, payload)

    def public_key_pem(self) -> bytes:
        return _public_pem_of(self._public)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id!r}, path={str(self.path)!r})"


class LocalEd25519Signer(LocalSigner):
    """A local Ed25519 key only (event sources' habits, and the signer of homes made before ECDSA P-256)."""

    def __init__(self, key_dir: Path, name: str = "signing") -> None:
        super().__init__(key_dir, name, new_key="ed25519")

    def _accept(self, key: object) -> LocalPrivateKey:
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise IntegrityViolation(f"signing key {self.path} is a {type(key).__name__}, not Ed25519")
        return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_source_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair for an event source: (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return private_pem, _public_pem_of(private.public_key())


def sign_with_private_pem(private_pem: bytes | str, payload: bytes) -> Signature:
    """What an event source does: sign ``payload`` with its Ed25519 or ECDSA P-256 private key."""
    pem = private_pem.encode() if isinstance(private_pem, str) else private_pem
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"private key is not a readable unencrypted PEM private key: {error}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return _sign_with(key, payload)
    raise InvalidInput(f"unsupported private key type {type(key).__name__}: only Ed25519 and ECDSA P-256")

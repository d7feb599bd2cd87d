"""Retired signing keys stay trusted for verification: ``<key_dir>/verify-only/<key id>.pem``, public keys only.

``evolution keys rotate`` (:func:`rotate_local_key`) first copies the current key's public key there, then puts a
new ECDSA P-256 key in the signing key's place in one rename, so a reader finds the old key or the new one, never
none. Every signature names its key by id, and :func:`trusted_keyring` trusts the signer's key plus every
verify-only key: what the old key signed keeps verifying, and the old key signs nothing more here. Its private
key is gone from the home (a backup taken before still has it: keep such backups as secret as the key itself).
A process that was running keeps the key it loaded until it restarts; what it signs meanwhile still verifies.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from evolution.errors import IntegrityViolation, InvalidInput
from evolution.integrity.signing import (
    KeyRing,
    LocalKeyKind,
    LocalSigner,
    Signer,
    key_id_for_public_pem,
    new_private_key,
    private_key_pem,
    public_pem_of,
    write_private_file,
)

VERIFY_ONLY_DIR = "verify-only"
_FILE_NAME = re.compile(r"^(ed25519|ecdsa-p256)-[0-9a-f]{16}\.pem$")
_MAX_PUBLIC_KEY_FILE = 8 * 1024


def _file_name(key_id: str) -> str:
    return key_id.replace(":", "-") + ".pem"


def verify_only_keys(key_dir: Path) -> dict[str, bytes]:
    """The retired keys' public PEMs by key id; a file whose key does not have the id its name says is refused."""
    directory = Path(key_dir) / VERIFY_ONLY_DIR
    if not directory.is_dir():
        return {}
    keys: dict[str, bytes] = {}
    for path in sorted(directory.iterdir()):
        if not _FILE_NAME.match(path.name) or path.is_symlink() or not path.is_file():
            continue  # temp files and strangers are not keys
        pem = path.read_bytes()[:_MAX_PUBLIC_KEY_FILE]
        key_id = key_id_for_public_pem(pem)
        if _file_name(key_id) != path.name:
            raise IntegrityViolation(
                f"verify-only key {path} holds the key {key_id}, not the one its name says"
            )
        keys[key_id] = pem
    return keys


def trusted_keyring(signer: Signer, key_dir: Path) -> KeyRing:
    """The keys this home trusts: the signer's own and every retired (verify-only) one, read again when a
    signature names a key the ring does not know (another process rotated the key: its new signing key, and
    the old one now verify-only)."""

    def current() -> dict[str, bytes]:
        keys = verify_only_keys(key_dir)
        if isinstance(signer, LocalSigner) and signer.path.exists():
            rotated = LocalSigner(signer.key_dir, signer.path.stem)
            keys[rotated.key_id] = rotated.public_key_pem()
        return keys

    ring = KeyRing(verify_only_keys(key_dir), reload=current)
    ring.add(signer.key_id, signer.public_key_pem())
    return ring


def keep_verify_only(key_dir: Path, public_key_pem: bytes) -> str:
    """Trust ``public_key_pem`` for verification from now on (idempotent); returns its key id."""
    key_id = key_id_for_public_pem(public_key_pem)
    directory = Path(key_dir) / VERIFY_ONLY_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / _file_name(key_id)
    if not write_private_file(directory, path, public_key_pem) and path.read_bytes() != public_key_pem:
        raise IntegrityViolation(f"{path} already holds other bytes than the public key {key_id}")
    return key_id


@dataclass(frozen=True)
class Rotation:
    previous_key_id: str
    previous_algorithm: str
    key_id: str
    algorithm: str


def prepare_rotation(
    key_dir: Path, name: str = "signing", *, kind: LocalKeyKind = "ecdsa-p256-sha256"
) -> tuple[Rotation, bytes]:
    """The rotation to make, and the new private key (PEM); nothing is written yet."""
    current = LocalSigner(key_dir, name)
    fresh = new_private_key(kind)
    rotation = Rotation(
        previous_key_id=current.key_id,
        previous_algorithm=current.algorithm,
        key_id=key_id_for_public_pem(public_pem_of(fresh)),
        algorithm="ed25519" if kind == "ed25519" else "ecdsa-p256-sha256",
    )
    return rotation, private_key_pem(fresh)


def apply_rotation(key_dir: Path, rotation: Rotation, private_pem: bytes, name: str = "signing") -> None:
    """Keep the current key as verify-only, then put the new key in its place in one rename."""
    current = LocalSigner(key_dir, name)
    if current.key_id != rotation.previous_key_id:
        raise InvalidInput(f"the signing key changed meanwhile (now {current.key_id}): rotate again")
    keep_verify_only(key_dir, current.public_key_pem())
    write_private_file(current.key_dir, current.path, private_pem, replace=True)
    os.chmod(current.path, 0o600)
    if LocalSigner(key_dir, name).key_id != rotation.key_id:
        raise IntegrityViolation(f"the signing key {current.path} is not the new key {rotation.key_id}")


def rotate_local_key(
    key_dir: Path, name: str = "signing", *, kind: LocalKeyKind = "ecdsa-p256-sha256"
) -> Rotation:
    """A new signing key in place of the current one, which stays trusted as verify-only."""
    rotation, private_pem = prepare_rotation(key_dir, name, kind=kind)
    apply_rotation(key_dir, rotation, private_pem, name)
    return rotation

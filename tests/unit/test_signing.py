"""Signatures: the local Ed25519 key's life cycle, offline Ed25519 / ECDSA P-256 checks, the key ring."""

from __future__ import annotations

import base64
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from evolution.errors import IntegrityViolation, InvalidInput
from evolution.integrity.signing import (
    KeyRing,
    LocalEd25519Signer,
    Signature,
    Signer,
    algorithm_for_public_pem,
    generate_source_keypair,
    key_id_for_public_pem,
    sign_with_private_pem,
    verify_signature,
)

PAYLOAD = b'{"model":"yield","version":3}'


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def flip_bit(signature: Signature, byte: int = 0, bit: int = 0) -> Signature:
    raw = bytearray(base64.b64decode(signature.value))
    raw[byte] ^= 1 << bit
    return signature.model_copy(update={"value": base64.b64encode(bytes(raw)).decode()})


@pytest.fixture
def signer(tmp_path: Path) -> LocalEd25519Signer:
    return LocalEd25519Signer(tmp_path / "keys")


def test_key_is_created_on_first_use_with_mode_0600_in_a_0700_directory(tmp_path: Path) -> None:
    key_dir = tmp_path / "state" / "keys"
    signer = LocalEd25519Signer(key_dir)
    assert signer.path == key_dir / "signing.key"
    assert mode_of(signer.path) == 0o600
    assert mode_of(key_dir) == 0o700
    assert signer.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in key_dir.iterdir()] == ["signing.key"]  # no temporary file left behind


def test_key_is_reloaded_with_the_same_key_id_and_verifies_old_signatures(tmp_path: Path) -> None:
    first = LocalEd25519Signer(tmp_path / "keys")
    signature = first.sign(PAYLOAD)
    second = LocalEd25519Signer(tmp_path / "keys")
    assert second.key_id == first.key_id
    assert second.public_key_pem() == first.public_key_pem()
    verify_signature(second.public_key_pem(), PAYLOAD, signature)


def test_key_id_is_the_prefixed_sha256_of_the_raw_public_key(signer: LocalEd25519Signer) -> None:
    assert signer.key_id.startswith("ed25519:")
    assert len(signer.key_id) == len("ed25519:") + 16
    assert key_id_for_public_pem(signer.public_key_pem()) == signer.key_id
    assert signer.sign(PAYLOAD).key_id == signer.key_id


def test_local_signer_satisfies_the_signer_port(signer: LocalEd25519Signer) -> None:
    port: Signer = signer
    assert isinstance(port, Signer)
    assert port.algorithm == "ed25519"


def test_concurrent_first_use_creates_exactly_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        key_ids = set(pool.map(lambda _: LocalEd25519Signer(tmp_path / "keys").key_id, range(16)))
    assert len(key_ids) == 1
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["signing.key"]


def test_key_readable_by_group_or_other_is_refused(signer: LocalEd25519Signer, tmp_path: Path) -> None:
    for loose in (0o640, 0o604, 0o644):
        os.chmod(signer.path, loose)
        with pytest.raises(IntegrityViolation, match="group/other"):
            LocalEd25519Signer(tmp_path / "keys")


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = LocalEd25519Signer(tmp_path / "real")
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    (other / "signing.key").symlink_to(real.path)
    with pytest.raises(IntegrityViolation, match="symlink"):
        LocalEd25519Signer(other)


def test_key_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    os.chmod(key_dir, 0o777)
    with pytest.raises(IntegrityViolation, match="writable"):
        LocalEd25519Signer(key_dir)


def test_key_name_cannot_leave_the_key_directory(tmp_path: Path) -> None:
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(InvalidInput):
            LocalEd25519Signer(tmp_path / "keys", name=bad)


def test_tampered_payload_is_rejected(signer: LocalEd25519Signer) -> None:
    signature = signer.sign(PAYLOAD)
    verify_signature(signer.public_key_pem(), PAYLOAD, signature)
    with pytest.raises(IntegrityViolation, match="does not verify"):
        verify_signature(signer.public_key_pem(), PAYLOAD.replace(b"3", b"4"), signature)


@pytest.mark.parametrize(("byte", "bit"), [(0, 0), (31, 7), (63, 3)])
def test_flipped_signature_bit_is_rejected(signer: LocalEd25519Signer, byte: int, bit: int) -> None:
    with pytest.raises(IntegrityViolation):
        verify_signature(signer.public_key_pem(), PAYLOAD, flip_bit(signer.sign(PAYLOAD), byte, bit))


def test_signature_from_another_key_is_rejected(signer: LocalEd25519Signer, tmp_path: Path) -> None:
    other = LocalEd25519Signer(tmp_path / "other-keys")
    with pytest.raises(IntegrityViolation):
        verify_signature(signer.public_key_pem(), PAYLOAD, other.sign(PAYLOAD))


def test_malformed_signatures_and_keys_are_integrity_violations(signer: LocalEd25519Signer) -> None:
    good = signer.sign(PAYLOAD)
    for bad in (
        good.model_copy(update={"value": "not base64!"}),
        good.model_copy(update={"value": base64.b64encode(b"short").decode()}),
        good.model_copy(update={"algorithm": "ecdsa-p256-sha256"}),
    ):
        with pytest.raises(IntegrityViolation):
            verify_signature(signer.public_key_pem(), PAYLOAD, bad)
    with pytest.raises(IntegrityViolation):
        verify_signature(b"-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n", PAYLOAD, good)


def test_ecdsa_p256_der_signatures_verify_as_a_kms_key_would_produce_them() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = private.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))  # what KMS Sign(ECDSA_SHA_256) returns
    signature = Signature(
        algorithm="ecdsa-p256-sha256", key_id="kms:alias/evolution", value=base64.b64encode(der).decode()
    )
    verify_signature(public_pem, PAYLOAD, signature)
    assert algorithm_for_public_pem(public_pem) == "ecdsa-p256-sha256"
    with pytest.raises(IntegrityViolation):
        verify_signature(public_pem, PAYLOAD + b" ", signature)
    with pytest.raises(IntegrityViolation):
        verify_signature(public_pem, PAYLOAD, flip_bit(signature, byte=10))
    with pytest.raises(IntegrityViolation):
        verify_signature(public_pem, PAYLOAD, signature.model_copy(update={"algorithm": "ed25519"}))


def test_ecdsa_on_another_curve_is_refused() -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = private.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))
    signature = Signature(algorithm="ecdsa-p256-sha256", key_id="p384", value=base64.b64encode(der).decode())
    with pytest.raises(IntegrityViolation, match="unsupported"):
        verify_signature(public_pem, PAYLOAD, signature)


def test_source_keypair_signs_events_verifiable_with_its_public_key() -> None:
    private_pem, public_pem = generate_source_keypair()
    signature = sign_with_private_pem(private_pem, PAYLOAD)
    assert signature.algorithm == "ed25519"
    assert signature.key_id == key_id_for_public_pem(public_pem)
    verify_signature(public_pem, PAYLOAD, signature)
    verify_signature(public_pem.decode(), PAYLOAD, signature)  # PEM as text, as a database column holds it
    with pytest.raises(IntegrityViolation):
        verify_signature(public_pem, PAYLOAD[:-1], signature)


def test_source_may_sign_with_an_ecdsa_p256_key() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = sign_with_private_pem(private_pem, PAYLOAD)
    assert signature.algorithm == "ecdsa-p256-sha256"
    assert signature.key_id == key_id_for_public_pem(public_pem)
    verify_signature(public_pem, PAYLOAD, signature)


def test_keyring_verifies_with_the_named_key_and_refuses_unknown_keys(
    signer: LocalEd25519Signer, tmp_path: Path
) -> None:
    ring = KeyRing.of(signer)
    assert signer.key_id in ring
    ring.verify(PAYLOAD, signer.sign(PAYLOAD))
    stranger = LocalEd25519Signer(tmp_path / "stranger")
    with pytest.raises(IntegrityViolation, match="not a trusted key"):
        ring.verify(PAYLOAD, stranger.sign(PAYLOAD))
    forged = stranger.sign(PAYLOAD).model_copy(update={"key_id": signer.key_id})
    with pytest.raises(IntegrityViolation):
        ring.verify(PAYLOAD, forged)


def test_keyring_refuses_to_rebind_a_key_id_to_another_key(signer: LocalEd25519Signer) -> None:
    ring = KeyRing({signer.key_id: signer.public_key_pem()})
    ring.add(signer.key_id, signer.public_key_pem())  # the same binding again is fine
    other_public = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidInput, match="already bound"):
        ring.add(signer.key_id, other_public)
    with pytest.raises(InvalidInput):
        ring.add("junk", b"not a key")

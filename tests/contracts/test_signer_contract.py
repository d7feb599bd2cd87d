"""The Signer contract: the local Ed25519 key and AWS KMS (moto over HTTP) both make signatures that verify
offline, under the key id derived from their public key, and only over exactly what was signed."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from evolution.errors import EvolutionError, IntegrityViolation, InvalidInput
from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.integrity.kms_signing import (
    KmsSigner,
    KmsSignerConfig,
    SigningKeyUnavailable,
    check_kms,
    check_kms_key,
    create_signing_key,
)
from evolution.integrity.manifest import (
    SignedManifest,
    build_manifest_from_dir,
    sign_manifest,
    verify_manifest,
    verify_model_files,
)
from evolution.integrity.model_signature import bundle_json
from evolution.integrity.signing import (
    PREHASH_PREFIX,
    KeyRing,
    Signature,
    Signer,
    algorithm_for_public_pem,
    key_id_for_public_pem,
    verify_signature,
)
from tests.contracts.conftest import aws_client, make_kms_signer
from tests.support.model_signing_verifier import verify_with_api

PAYLOAD = b'{"model":"yield-forecast","version":7,"root":"' + b"ab" * 32 + b'"}'


def flip_bit(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index % len(changed)] ^= 0x01
    return bytes(changed)


def test_signer_satisfies_the_port(signer_factory: Callable[[], Signer]) -> None:
    assert isinstance(signer_factory(), Signer)


def test_signature_verifies_offline_with_the_public_key_and_the_key_ring(
    signer_factory: Callable[[], Signer],
) -> None:
    signer = signer_factory()
    signature = signer.sign(PAYLOAD)
    verify_signature(signer.public_key_pem(), PAYLOAD, signature)
    KeyRing.of(signer).verify(PAYLOAD, signature)
    KeyRing({signature.key_id: signer.public_key_pem()}).verify(PAYLOAD, signature)


def test_the_key_id_is_derived_from_the_public_key_and_recorded(signer_factory: Callable[[], Signer]) -> None:
    signer = signer_factory()
    signature = signer.sign(PAYLOAD)
    assert signer.key_id == key_id_for_public_pem(signer.public_key_pem())
    assert signature.key_id == signer.key_id
    assert signature.algorithm == signer.algorithm == algorithm_for_public_pem(signer.public_key_pem())


def test_a_flipped_payload_bit_is_rejected(signer_factory: Callable[[], Signer]) -> None:
    signer = signer_factory()
    signature = signer.sign(PAYLOAD)
    ring = KeyRing.of(signer)
    for index in (0, len(PAYLOAD) // 2, len(PAYLOAD) - 1):
        with pytest.raises(IntegrityViolation, match="does not verify"):
            ring.verify(flip_bit(PAYLOAD, index), signature)
    with pytest.raises(IntegrityViolation):
        ring.verify(PAYLOAD + b" ", signature)


def test_a_flipped_signature_bit_is_rejected(signer_factory: Callable[[], Signer]) -> None:
    signer = signer_factory()
    signature = signer.sign(PAYLOAD)
    raw = base64.b64decode(signature.value)
    for index in (0, 5, len(raw) // 2, len(raw) - 1):
        forged = signature.model_copy(update={"value": base64.b64encode(flip_bit(raw, index)).decode()})
        with pytest.raises(IntegrityViolation):
            verify_signature(signer.public_key_pem(), PAYLOAD, forged)


def test_another_key_of_the_same_kind_is_rejected(signer_factory: Callable[[], Signer]) -> None:
    signer, other = signer_factory(), signer_factory()
    assert signer.key_id != other.key_id
    signature = signer.sign(PAYLOAD)
    with pytest.raises(IntegrityViolation, match="does not verify"):
        verify_signature(other.public_key_pem(), PAYLOAD, signature)
    with pytest.raises(IntegrityViolation, match="not a trusted key"):
        KeyRing.of(other).verify(PAYLOAD, signature)
    claimed = signature.model_copy(update={"key_id": other.key_id})  # claiming the other's id does not help
    with pytest.raises(IntegrityViolation):
        KeyRing.of(other).verify(PAYLOAD, claimed)


def test_signatures_survive_json_and_still_verify(signer_factory: Callable[[], Signer]) -> None:
    signer = signer_factory()
    signature = signer.sign(PAYLOAD)
    again = Signature.model_validate_json(signature.model_dump_json())
    assert again == signature
    KeyRing.of(signer).verify(PAYLOAD, again)


def test_signed_manifests_round_trip(signer_factory: Callable[[], Signer], tmp_path: Path) -> None:
    signer = signer_factory()
    model_dir = tmp_path / "model"
    (model_dir / "weights").mkdir(parents=True)
    (model_dir / "weights" / "layer0.bin").write_bytes(b"\x00\x01" * 500)
    (model_dir / "config.json").write_text('{"depth": 3}')
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    manifest = build_manifest_from_dir(
        model_dir,
        tenant="acme",
        model_name="yield-forecast",
        dataset_snapshot_id="snap-0001",
        dataset_merkle_root="cd" * 32,
        training_config={"learning_rate": 0.05, "trees": 200},
        seed=42,
        trainer="tests",
        store=store,
    )
    signed = sign_manifest(manifest, signer)
    loaded = SignedManifest.model_validate_json(signed.model_dump_json())
    ring = KeyRing.of(signer)
    verify_manifest(loaded, ring)
    assert loaded.digest == signed.digest
    files = verify_model_files(loaded, store, "acme", ring)
    assert files["config.json"] == b'{"depth": 3}'
    altered = SignedManifest(
        manifest=loaded.manifest.model_copy(update={"seed": 43}), signature=loaded.signature
    )
    with pytest.raises(IntegrityViolation):
        verify_manifest(altered, ring)


def test_model_signing_verifies_the_bundle_of_every_ecdsa_signer(
    signer_factory: Callable[[], Signer], tmp_path: Path
) -> None:
    """The OpenSSF verifier accepts the bundle of the local P-256 key and of KMS (moto signs RAW: a one-file model's
    statement is below 4096 bytes; the DIGEST path is tests/unit/test_model_signature.py); Ed25519 makes none."""
    signer = signer_factory()
    model_dir = tmp_path / "export"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"\x08\x07" * 300)
    manifest = build_manifest_from_dir(
        model_dir,
        tenant="acme",
        model_name="yield-forecast",
        dataset_snapshot_id="snap-0001",
        dataset_merkle_root="cd" * 32,
        training_config={"trees": 200},
        seed=42,
        trainer="tests",
    )
    signed = sign_manifest(manifest, signer)
    if signer.algorithm == "ed25519":
        assert signed.bundle is None
        return
    assert signed.bundle is not None
    (model_dir / "model.sig").write_text(bundle_json(signed.bundle))
    key = tmp_path / "key.pem"
    key.write_bytes(signer.public_key_pem())
    verify_with_api(model_dir, key)
    (model_dir / "model.onnx").write_bytes(b"\x08\x07" * 299)
    with pytest.raises(ValueError, match="Hash mismatch"):
        verify_with_api(model_dir, key)


# -- KMS specifics -------------------------------------------------------------------------------------


@pytest.fixture
def kms(fake_aws_env: dict[str, str], moto_endpoint: str) -> tuple[KmsSigner, str, Any]:
    signer, arn = make_kms_signer(moto_endpoint)
    return signer, arn, aws_client("kms", moto_endpoint)


def test_kms_signatures_record_the_key_arn_and_old_signatures_still_parse(
    kms: tuple[KmsSigner, str, Any],
) -> None:
    signer, arn, _client = kms
    signature = signer.sign(PAYLOAD)
    assert signature.key_ref == arn
    assert signature.key_id.startswith("ecdsa-p256:")
    old = {"algorithm": signature.algorithm, "key_id": signature.key_id, "value": signature.value}
    parsed = Signature.model_validate(old)  # written before key_ref existed
    assert parsed.key_ref is None and parsed.model_dump(mode="json") == old  # and serialised as before
    KeyRing.of(signer).verify(PAYLOAD, parsed)


def test_a_disabled_kms_key_refuses_to_sign_with_an_error_naming_it(kms: tuple[KmsSigner, str, Any]) -> None:
    signer, arn, client = kms
    key_id = arn.rsplit("/", 1)[1]
    client.disable_key(KeyId=key_id)
    with pytest.raises(SigningKeyUnavailable, match="Disabled") as caught:
        signer.sign(PAYLOAD)
    assert arn in str(caught.value)
    assert isinstance(caught.value, EvolutionError)
    assert [r.ok for r in signer.check() if r.name == "kms key enabled"] == [False]
    client.enable_key(KeyId=key_id)
    KeyRing.of(signer).verify(PAYLOAD, signer.sign(PAYLOAD))


def test_a_missing_kms_key_is_a_clear_error(fake_aws_env: dict[str, str], moto_endpoint: str) -> None:
    client = aws_client("kms", moto_endpoint)
    with pytest.raises(SigningKeyUnavailable, match=r"alias/evolution-does-not-exist .*does not exist"):
        KmsSigner(client, "alias/evolution-does-not-exist")
    checks = check_kms_key(client, "alias/evolution-does-not-exist")
    assert [(r.name, r.ok) for r in checks] == [("kms reachable", True), ("kms key exists", False)]


def test_a_kms_key_of_the_wrong_kind_is_refused(fake_aws_env: dict[str, str], moto_endpoint: str) -> None:
    client = aws_client("kms", moto_endpoint)
    rsa = client.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    symmetric = client.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"][
        "Arn"
    ]
    for arn in (rsa, symmetric):
        with pytest.raises(SigningKeyUnavailable, match="not ECC_NIST_P256/SIGN_VERIFY"):
            KmsSigner(client, arn)
        assert [r.ok for r in check_kms_key(client, arn) if r.name == "kms key type"] == [False]


def test_payloads_above_4096_bytes_are_signed_raw_through_the_prehash_envelope(
    kms: tuple[KmsSigner, str, Any],
) -> None:
    """KMS signs at most 4096 bytes RAW; above that the prefixed SHA-256 is signed, and verifies offline."""
    import hashlib

    signer, _arn, _client = kms
    sent: list[dict[str, Any]] = []
    signer.client.meta.events.register(
        "provide-client-params.kms.Sign", lambda params, **_: sent.append(params)
    )
    small = b"s" * 4096
    signer.sign(small)
    large = b"L" * 10_000
    signature = signer.sign(large)
    KeyRing.of(signer).verify(large, signature)
    assert signature.prehash == "sha256"
    with pytest.raises(IntegrityViolation):
        KeyRing.of(signer).verify(large[:-1] + b"X", signature)
    with pytest.raises(IntegrityViolation):  # the envelope is not a signature over the payload itself
        KeyRing.of(signer).verify(large, signature.model_copy(update={"prehash": None}))
    assert (sent[0]["MessageType"], sent[0]["Message"]) == ("RAW", small)
    assert (sent[1]["MessageType"], sent[1]["Message"]) == (
        "RAW",
        PREHASH_PREFIX + hashlib.sha256(large).digest(),
    )
    assert {p["SigningAlgorithm"] for p in sent} == {"ECDSA_SHA_256"}


def test_create_signing_key_is_idempotent_and_check_passes(
    fake_aws_env: dict[str, str], moto_endpoint: str
) -> None:
    client = aws_client("kms", moto_endpoint)
    arn = create_signing_key(client, "evolution-setup-test")
    assert create_signing_key(client, "alias/evolution-setup-test") == arn
    config = KmsSignerConfig(
        alias="evolution-setup-test",
        endpoint_url=moto_endpoint,
        access_key_id=SecretStr("testing"),
        secret_access_key=SecretStr("testing"),
    )
    results = check_kms(config)
    assert all(r.ok for r in results), results
    assert [r.name for r in results] == [
        "kms reachable",
        "kms key exists",
        "kms key enabled",
        "kms key type",
        "kms public key",
    ]


def test_kms_config_needs_exactly_one_key_and_hides_its_secrets() -> None:
    config = KmsSignerConfig(
        key_id="arn:aws:kms:eu-west-1:111122223333:key/abc",
        access_key_id=SecretStr("AKIAEXAMPLE"),
        secret_access_key=SecretStr("kms-s3cr3t"),
    )
    assert "kms-s3cr3t" not in repr(config) and "kms-s3cr3t" not in config.model_dump_json()
    assert KmsSignerConfig(alias="evolution-signing").key_reference == "alias/evolution-signing"
    with pytest.raises(ValidationError, match="exactly one"):
        KmsSignerConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        KmsSignerConfig(key_id="k", alias="a")
    with pytest.raises(ValidationError, match="alias/aws/"):
        KmsSignerConfig(alias="aws/s3")
    with pytest.raises(InvalidInput):
        create_signing_key(None, "bad alias!")

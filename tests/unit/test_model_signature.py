"""OpenSSF model signatures: every signed manifest made by an ECDSA P-256 signer (the local key, KMS) carries a
Sigstore bundle that the real `model_signing` verifier (1.1.1, through its Python API) accepts for the model's
directory, for 1 file and for 50; a tampered copy fails there; our own check binds the bundle to the manifest."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from evolution.canonical import canonical_json
from evolution.errors import IntegrityViolation
from evolution.integrity.kms_signing import KmsSigner
from evolution.integrity.manifest import (
    SignedManifest,
    build_manifest_from_dir,
    sign_manifest,
    verify_manifest,
)
from evolution.integrity.model_signature import (
    PREDICATE_TYPE,
    PROVENANCE_KEY,
    bundle_json,
    pae,
    statement_for,
)
from evolution.integrity.signing import KeyRing, LocalEd25519Signer, LocalSigner, Signer
from tests.support.digest_kms import DigestKms
from tests.support.model_signing_verifier import verify_with_api


def model_dir(root: Path, files: int) -> Path:
    directory = root / f"model-{files}"
    (directory / "weights").mkdir(parents=True)
    for i in range(files):
        where = directory / "weights" if i % 3 else directory
        (where / f"part-{i:02d}.bin").write_bytes(hashlib.sha256(str(i).encode()).digest() * (i + 1))
    return directory


def signed_export(directory: Path, signer: Signer) -> SignedManifest:
    """Sign the directory's files as training does, and lay it out as `evolution model export` does."""
    manifest = build_manifest_from_dir(
        directory,
        tenant="acme",
        model_name="yield",
        dataset_snapshot_id="snap-1",
        dataset_merkle_root="ab" * 32,
        training_config={"features": ["rain", "sun"], "max_depth": 3},
        seed=7,
        trainer="builtin-gbr",
    )
    signed = sign_manifest(manifest, signer)
    assert signed.bundle is not None
    (directory / "model.sig").write_text(bundle_json(signed.bundle))
    return signed


def public_key_file(root: Path, signer: Signer) -> Path:
    path = root / f"{signer.key_id.replace(':', '-')}.pem"
    path.write_bytes(signer.public_key_pem())
    return path


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LocalSigner:
    return LocalSigner(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def kms_digest() -> tuple[KmsSigner, DigestKms]:
    stand_in = DigestKms()
    return KmsSigner(stand_in, "alias/evolution-signing"), stand_in


@pytest.mark.parametrize("files", [1, 50])
def test_model_signing_accepts_the_local_signers_bundle_and_refuses_a_tampered_copy(
    local: LocalSigner, tmp_path: Path, files: int
) -> None:
    assert local.algorithm == "ecdsa-p256-sha256"  # the default for a new key
    directory = model_dir(tmp_path, files)
    signed = signed_export(directory, local)
    verify_manifest(signed, KeyRing.of(local))
    key = public_key_file(tmp_path, local)
    verify_with_api(directory, key)

    changed = tmp_path / "changed"
    shutil.copytree(directory, changed)
    victim = sorted(p for p in changed.rglob("*.bin"))[-1]
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Hash mismatch"):
        verify_with_api(changed, key)

    added = tmp_path / "added"
    shutil.copytree(directory, added)
    (added / "backdoor.py").write_text("import os\n")
    with pytest.raises(ValueError, match="Extra files"):
        verify_with_api(added, key)


@pytest.mark.parametrize("files", [1, 50])
def test_model_signing_accepts_a_kms_bundle_signed_as_a_digest_when_large(
    kms_digest: tuple[KmsSigner, DigestKms], tmp_path: Path, files: int
) -> None:
    signer, stand_in = kms_digest
    stand_in.sent.clear()
    directory = model_dir(tmp_path, files)
    signed = signed_export(directory, signer)
    verify_with_api(directory, public_key_file(tmp_path, signer))
    statement = base64.b64decode(signed.bundle["dsseEnvelope"]["payload"])  # type: ignore[index]
    bundle_request = stand_in.sent[-1]
    if len(pae(statement)) > 4096:
        assert (bundle_request["MessageType"], bundle_request["Message"]) == (
            "DIGEST",
            hashlib.sha256(pae(statement)).digest(),
        )
    else:
        assert (bundle_request["MessageType"], bundle_request["Message"]) == ("RAW", pae(statement))
    assert files == 1 or bundle_request["MessageType"] == "DIGEST", (
        "50 files make a statement above 4096 bytes"
    )


def test_the_kms_digest_path_is_an_ordinary_ecdsa_signature_over_the_payload(
    kms_digest: tuple[KmsSigner, DigestKms],
) -> None:
    """Checked offline with cryptography alone: nothing of ours, no envelope, any size."""
    signer, stand_in = kms_digest
    payload = b"x" * 100_000
    signature = signer.sign(payload)
    assert signature.prehash is None
    assert stand_in.sent[-1]["MessageType"] == "DIGEST"
    public = serialization.load_pem_public_key(signer.public_key_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    raw = base64.b64decode(signature.value)
    public.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(raw, payload + b"!", ec.ECDSA(hashes.SHA256()))
    empty = signer.sign(b"")  # KMS refuses an empty RAW message: a digest has none of that problem
    public.verify(base64.b64decode(empty.value), b"", ec.ECDSA(hashes.SHA256()))


def test_the_statement_is_model_signings_format_with_our_provenance(
    local: LocalSigner, tmp_path: Path
) -> None:
    signed = signed_export(model_dir(tmp_path, 3), local)
    bundle = signed.bundle
    assert bundle is not None
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert bundle["dsseEnvelope"]["signatures"][0]["keyid"] == local.key_id
    assert (
        bundle["verificationMaterial"]["publicKey"]["hint"]
        == hashlib.sha256(local.public_key_pem()).hexdigest()
    )
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    assert [r["name"] for r in statement["predicate"]["resources"]] == [f.name for f in signed.manifest.files]
    assert [r["digest"] for r in statement["predicate"]["resources"]] == [
        f.sha256 for f in signed.manifest.files
    ]
    provenance = statement["predicate"][PROVENANCE_KEY]
    assert provenance["manifest_digest"] == signed.digest
    assert (provenance["dataset_snapshot_id"], provenance["dataset_merkle_root"]) == ("snap-1", "ab" * 32)
    assert (provenance["seed"], provenance["trainer"]) == (7, "builtin-gbr")
    assert provenance["training_config"] == {"features": ["rain", "sun"], "max_depth": 3}


def test_a_bundle_that_does_not_match_its_manifest_fails_our_verification(
    local: LocalSigner, tmp_path: Path
) -> None:
    signed = signed_export(model_dir(tmp_path, 2), local)
    ring = KeyRing.of(local)
    # Re-signed by the same key over a statement with another seed: a valid signature, but not this manifest's.
    other = statement_for(signed.manifest)
    other["predicate"][PROVENANCE_KEY]["seed"] = 8
    payload = canonical_json(other)
    forged = json.loads(json.dumps(signed.bundle))
    forged["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    forged["dsseEnvelope"]["signatures"][0]["sig"] = local.sign(pae(payload)).value
    with pytest.raises(IntegrityViolation, match="differs from the signed manifest"):
        verify_manifest(signed.model_copy(update={"bundle": forged}), ring)
    broken = json.loads(json.dumps(signed.bundle))
    broken["dsseEnvelope"]["signatures"][0]["sig"] = local.sign(b"something else").value
    with pytest.raises(IntegrityViolation, match="does not verify"):
        verify_manifest(signed.model_copy(update={"bundle": broken}), ring)


def test_an_ed25519_signer_signs_the_manifest_but_makes_no_bundle(tmp_path: Path) -> None:
    old = LocalEd25519Signer(tmp_path / "keys")
    directory = model_dir(tmp_path, 1)
    manifest = build_manifest_from_dir(
        directory,
        tenant="acme",
        model_name="yield",
        dataset_snapshot_id="snap-1",
        dataset_merkle_root="ab" * 32,
        training_config={},
        seed=1,
        trainer="builtin-gbr",
    )
    signed = sign_manifest(manifest, old)
    assert signed.bundle is None
    assert "bundle" not in signed.model_dump(mode="json")  # stored byte for byte as before bundles existed
    verify_manifest(signed, KeyRing.of(old))

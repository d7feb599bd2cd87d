"""OpenSSF model signatures: a Sigstore bundle that the ``model_signing`` verifier (v1.x) accepts for a model.

The bundle (media type v0.3) carries a DSSE envelope over an in-toto Statement v1 with the predicate type
``https://model_signing/signature/v1.0``: the predicate lists every file of the model by its manifest name and
SHA-256 (``resources``), says how a verifier re-hashes a directory (``serialization``: by file, SHA-256, no
symlinks, ``model.sig`` and git's files ignored, as ``model_signing`` itself records it), and adds our provenance
under :data:`PROVENANCE_KEY` (the manifest's digest, snapshot and Merkle root, configuration, seed and trainer),
which v1.0 verifiers ignore and ours checks. The subject is the model's name with the SHA-256 over the files'
digests in the listed order (what ``model_signing`` recomputes).

The signature is ECDSA P-256 / SHA-256 (DER) over the DSSE pre-authentication encoding, made by the system's
signer: the local key or AWS KMS (which takes a large encoding as a digest). ``verificationMaterial.publicKey.hint``
is the SHA-256 of the public key's PEM, as ``model_signing verify key`` checks it; the signature's ``keyid`` is our
key id, so :func:`verify_model_bundle` finds the key in the key ring, and a retired key keeps verifying.

An Ed25519 signer cannot make one (``model_signing`` takes EC keys only), nor a signer that had to sign an
envelope of its own (a KMS emulator without DIGEST): :func:`bundle_refusal` says why, and the version simply has
no bundle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING, Any, Final

from evolution.canonical import canonical_json
from evolution.errors import IntegrityViolation
from evolution.integrity.signing import KeyRing, Signature, Signer, verify_signature

if TYPE_CHECKING:
    from evolution.integrity.manifest import ModelManifest

BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://model_signing/signature/v1.0"
PROVENANCE_KEY: Final = "controlled_evolution_provenance"
SIGNATURE_FILE: Final = "model.sig"
# What model_signing records when it signs a directory: its verifier skips these when it re-hashes one.
IGNORED_PATHS: Final = (SIGNATURE_FILE, ".git", ".gitattributes", ".github", ".gitignore")
ALGORITHM: Final = "ecdsa-p256-sha256"


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of an in-toto payload: what the signature covers."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def provenance(manifest: ModelManifest) -> dict[str, Any]:
    """What produced the model, from its signed manifest (the manifest's digest binds the two)."""
    identity = manifest.trainer_identity
    return {
        "manifest_digest": manifest.digest,
        "manifest_schema": manifest.schema_,
        "tenant": manifest.tenant,
        "model_name": manifest.model_name,
        "dataset_snapshot_id": manifest.dataset_snapshot_id,
        "dataset_merkle_root": manifest.dataset_merkle_root,
        "training_config": manifest.training_config,
        "seed": manifest.seed,
        "trainer": manifest.trainer,
        "trainer_identity": identity.model_dump(mode="json") if identity is not None else None,
    }


def statement_for(manifest: ModelManifest) -> dict[str, Any]:
    """The in-toto Statement for the manifest's files, as ``model_signing`` reads it, with our provenance."""
    root = hashlib.sha256(b"".join(bytes.fromhex(f.sha256) for f in manifest.files)).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": manifest.model_name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": list(IGNORED_PATHS),
            },
            "resources": [
                {"name": f.name, "algorithm": "sha256", "digest": f.sha256} for f in manifest.files
            ],
            PROVENANCE_KEY: provenance(manifest),
        },
    }


def _ignored(name: str) -> bool:
    return any(name == path or name.startswith(path + "/") for path in IGNORED_PATHS)


def bundle_refusal(manifest: ModelManifest, signer: Signer) -> str | None:
    """Why no bundle can be made for this manifest with this signer; None if one can."""
    if signer.algorithm != ALGORITHM:
        return f"the signer's key {signer.key_id} is {signer.algorithm}; model_signing verifies EC keys only"
    clashing = [f.name for f in manifest.files if _ignored(f.name)]
    if clashing:
        return f"model file {clashing[0]!r} is a name model_signing's verifier skips"
    return None


def make_model_bundle(manifest: ModelManifest, signer: Signer) -> dict[str, Any] | None:
    """The Sigstore bundle for ``manifest`` signed by ``signer``; None when :func:`bundle_refusal` says so, or
    when the signer had to sign something else than the encoding itself (its own prehash envelope)."""
    if bundle_refusal(manifest, signer) is not None:
        return None
    payload = canonical_json(statement_for(manifest))
    signature = signer.sign(pae(payload))
    if signature.prehash is not None or signature.algorithm != ALGORITHM:
        return None
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": hashlib.sha256(signer.public_key_pem()).hexdigest()},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": signature.value, "keyid": signature.key_id}],
        },
    }


def _field(data: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(data, dict) or name not in data:
            raise IntegrityViolation(f"model signature bundle has no {'.'.join(path)}")
        data = data[name]
    return data


def verify_model_bundle(manifest: ModelManifest, bundle: dict[str, Any], keys: KeyRing | bytes | str) -> None:
    """IntegrityViolation unless ``bundle`` is a valid signature by a trusted key over exactly the statement
    :func:`statement_for` makes of ``manifest`` (every file, digest and provenance field)."""
    if _field(bundle, "mediaType") != BUNDLE_MEDIA_TYPE:
        raise IntegrityViolation(f"model signature bundle is not a {BUNDLE_MEDIA_TYPE}")
    if _field(bundle, "dsseEnvelope", "payloadType") != PAYLOAD_TYPE:
        raise IntegrityViolation(f"model signature bundle's payload is not {PAYLOAD_TYPE}")
    signatures = _field(bundle, "dsseEnvelope", "signatures")
    if not isinstance(signatures, list) or len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise IntegrityViolation("model signature bundle must carry exactly one signature")
    key_id, value = signatures[0].get("keyid"), signatures[0].get("sig")
    if not isinstance(key_id, str) or not key_id or not isinstance(value, str) or not value:
        raise IntegrityViolation("model signature bundle's signature has no keyid or sig")
    try:
        payload = base64.b64decode(_field(bundle, "dsseEnvelope", "payload"), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise IntegrityViolation("model signature bundle's payload is not base64") from None
    pem = keys.public_key_pem(key_id) if isinstance(keys, KeyRing) else keys
    pem_bytes = pem.encode() if isinstance(pem, str) else pem
    if _field(bundle, "verificationMaterial", "publicKey", "hint") != hashlib.sha256(pem_bytes).hexdigest():
        raise IntegrityViolation(f"model signature bundle's public key hint is not the key {key_id}")
    try:
        signature = Signature(algorithm=ALGORITHM, key_id=key_id, value=value)
    except ValueError:
        raise IntegrityViolation("model signature bundle's signature is malformed") from None
    verify_signature(pem_bytes, pae(payload), signature)
    try:
        statement = json.loads(payload)
    except ValueError:
        raise IntegrityViolation("model signature bundle's payload is not JSON") from None
    if statement != statement_for(manifest):
        raise IntegrityViolation(
            "model signature bundle's statement differs from the signed manifest (files, digests or provenance)"
        )


def bundle_json(bundle: dict[str, Any]) -> str:
    """The bundle as ``model.sig`` holds it."""
    return json.dumps(bundle, indent=2, sort_keys=True) + "\n"

"""Signed model manifests, in the spirit of the OpenSSF model-signing spec.

A manifest lists every file of a model artifact by name, SHA-256 and size, and binds them to what produced
them: the dataset snapshot (id and Merkle root), the training configuration, the seed and the trainer. The
signature covers the canonical JSON of the manifest, and the SHA-256 of that same encoding is the model's identity
(the "model hash").

Schema v2 adds the trainer's identity (:mod:`evolution.integrity.trainer_identity`: the built-in trainer's name, a
command's argv and code file digests, or an image's digest) to the signed bytes. A v1 manifest has none, and its
canonical encoding leaves the field out, so every manifest signed before v2 keeps verifying.

A manifest signed by an ECDSA P-256 key also carries an OpenSSF model signature over the same files
(:mod:`evolution.integrity.model_signature`), stored with it and checked with it.

Loading goes in one direction only: signature first, then each file against its entry, and only then are bytes
handed out. Nothing that failed a check is ever returned, so nothing unverified can reach a deserializer.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from evolution.canonical import canonical_json, sha256_hex
from evolution.errors import IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import TENANT_PATTERN, ArtifactStore
from evolution.integrity.model_signature import make_model_bundle, verify_model_bundle
from evolution.integrity.signing import KeyRing, Signature, Signer, verify_signature
from evolution.integrity.trainer_identity import TrainerIdentity

MANIFEST_SCHEMA: Final = "controlled-evolution/model-manifest/v1"
MANIFEST_SCHEMA_V2: Final = "controlled-evolution/model-manifest/v2"  # with the trainer's identity
_HEX64 = r"^[0-9a-f]{64}$"
_READ_BLOCK = 1024 * 1024


def validate_relative_name(name: str) -> str:
    """A file name inside an artifact: a relative POSIX path without '..', '.', empty parts, '\\' or NUL."""
    if not name:
        raise ValueError("file name is empty")
    if "\x00" in name:
        raise ValueError(f"file name {name!r} contains NUL")
    if "\\" in name:
        raise ValueError(f"file name {name!r} contains a backslash; use '/'")
    if name.startswith("/"):
        raise ValueError(f"file name {name!r} is absolute")
    if "//" in name or name.endswith("/"):
        raise ValueError(f"file name {name!r} has an empty path component")
    if any(part in (".", "..") for part in name.split("/")):
        raise ValueError(f"file name {name!r} contains a '.' or '..' component")
    return name


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(max_length=1024)
    sha256: str = Field(pattern=_HEX64)
    size: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return validate_relative_name(value)


class ModelManifest(BaseModel):
    # The JSON key is "schema", which as a field name would shadow BaseModel.schema(); hence the alias, used
    # both ways (serialize_by_alias needs pydantic >= 2.11); canonical() passes by_alias explicitly anyway.
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    schema_: Literal["controlled-evolution/model-manifest/v1", "controlled-evolution/model-manifest/v2"] = (
        Field(default=MANIFEST_SCHEMA, alias="schema")
    )
    tenant: str = Field(pattern=TENANT_PATTERN.pattern)
    model_name: str = Field(min_length=1, max_length=100)
    files: list[FileEntry] = Field(min_length=1)
    dataset_snapshot_id: str = Field(min_length=1, max_length=100)
    dataset_merkle_root: str = Field(pattern=_HEX64)
    training_config: dict[str, Any]
    seed: int
    trainer: str = Field(min_length=1, max_length=200)
    trainer_identity: TrainerIdentity | None = Field(
        default=None, description="Schema v2 only (required there): the trainer's lineage."
    )

    @model_validator(mode="after")
    def _identity_matches_schema(self) -> ModelManifest:
        if self.schema_ == MANIFEST_SCHEMA and self.trainer_identity is not None:
            raise ValueError(f"a {MANIFEST_SCHEMA} manifest carries no trainer_identity (that is v2)")
        if self.schema_ != MANIFEST_SCHEMA and self.trainer_identity is None:
            raise ValueError(f"a {self.schema_} manifest must carry the trainer_identity")
        return self

    @model_serializer(mode="wrap")
    def _v1_without_identity(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A v1 manifest is written (and so signed) without ``trainer_identity``, exactly as before v2 existed."""
        data: dict[str, Any] = handler(self)
        if self.trainer_identity is None:
            data.pop("trainer_identity", None)
        return data

    @field_validator("files")
    @classmethod
    def _sorted_unique(cls, files: list[FileEntry]) -> list[FileEntry]:
        """Sorted by name so the encoding does not depend on directory order; a name may appear once only."""
        ordered = sorted(files, key=lambda f: f.name)
        for a, b in itertools.pairwise(ordered):
            if a.name == b.name:
                raise ValueError(f"file {a.name!r} is listed twice")
        return ordered

    @field_validator("training_config")
    @classmethod
    def _canonical_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        try:  # refuse NaN, non-string keys and non-JSON types now, not at signing time
            canonical_json(config)
        except InvalidInput as error:
            raise ValueError(str(error)) from None
        return config

    def canonical(self) -> bytes:
        """The signed bytes: canonical JSON with the field named ``schema``."""
        return canonical_json(self.model_dump(mode="json", by_alias=True))

    @property
    def digest(self) -> str:
        return sha256_hex(self.canonical())


class SignedManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest: ModelManifest
    signature: Signature
    bundle: dict[str, Any] | None = Field(
        default=None,
        # absent rather than null when unset, so a manifest signed before bundles serialises byte for byte as before
        exclude_if=lambda bundle: bundle is None,
        description="The OpenSSF model signature (a Sigstore bundle, see evolution.integrity.model_signature) over "
        "the same files, for `model_signing verify`; none for an Ed25519 signer or a version signed before.",
    )

    @property
    def digest(self) -> str:
        """The model hash: SHA-256 of the canonical manifest, i.e. of exactly the bytes that were signed."""
        return self.manifest.digest


def sign_manifest(manifest: ModelManifest, signer: Signer) -> SignedManifest:
    """The manifest signed, and with it the OpenSSF model signature when the signer can make one."""
    return SignedManifest(
        manifest=manifest,
        signature=signer.sign(manifest.canonical()),
        bundle=make_model_bundle(manifest, signer),
    )


def verify_manifest(signed: SignedManifest, keys: KeyRing | bytes | str) -> None:
    """Raises IntegrityViolation unless the manifest's signature, and its model signature bundle if it has one,
    verify with a trusted key."""
    payload = signed.manifest.canonical()
    if isinstance(keys, KeyRing):
        keys.verify(payload, signed.signature)
    else:
        verify_signature(keys, payload, signed.signature)
    if signed.bundle is not None:
        verify_model_bundle(signed.manifest, signed.bundle, keys)


def verify_model_files(
    signed: SignedManifest, store: ArtifactStore, tenant: str, keys: KeyRing | bytes | str
) -> dict[str, bytes]:
    """Check the signature, then every file's digest and size; return ``{name: bytes}`` only if all pass.

    ``keys`` is the key ring (or one public key PEM) trusted to sign this tenant's models.
    """
    verify_manifest(signed, keys)
    manifest = signed.manifest
    if manifest.tenant != tenant:
        raise IntegrityViolation(f"model manifest is for tenant {manifest.tenant!r}, loaded for {tenant!r}")
    files: dict[str, bytes] = {}
    for entry in manifest.files:
        try:
            data = store.read_bytes(tenant, entry.sha256)
        except IntegrityViolation as error:
            raise IntegrityViolation(f"model file {entry.name!r}: {error}") from None
        except (
            NotFound
        ) as error:  # an incomplete model is an integrity failure too (I/O errors stay transient)
            raise IntegrityViolation(
                f"model file {entry.name!r} cannot be read from the store: {error}"
            ) from None
        if hashlib.sha256(data).hexdigest() != entry.sha256:  # do not rely on the adapter having checked
            raise IntegrityViolation(f"model file {entry.name!r} does not match its signed digest")
        if len(data) != entry.size:
            raise IntegrityViolation(
                f"model file {entry.name!r} is {len(data)} bytes, the manifest says {entry.size}"
            )
        files[entry.name] = data
    return files


def _hash_file(fd: int) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while block := os.read(fd, _READ_BLOCK):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def hash_dir(directory: Path) -> list[FileEntry]:
    """Entries for every regular file under ``directory``; symlinks and special files are refused."""
    base = Path(directory)
    if base.is_symlink() or not base.is_dir():
        raise InvalidInput(f"model directory {base} is not a directory (or is a symlink)")
    resolved_base = base.resolve()
    entries: list[FileEntry] = []
    for current, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(current)
        for name in [*dirnames, *filenames]:
            path = here / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                raise InvalidInput(f"model directory contains a symlink: {path.relative_to(base)}")
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                raise InvalidInput(f"model directory contains a special file: {path.relative_to(base)}")
        for name in filenames:
            path = here / name
            if not path.resolve().is_relative_to(resolved_base):
                raise InvalidInput(f"model file {path} escapes the directory {base}")
            relative = PurePosixPath(*path.relative_to(base).parts).as_posix()
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError as error:
                raise InvalidInput(f"cannot read model file {relative}: {error}") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise InvalidInput(f"model file {relative} is not a regular file")
                digest, size = _hash_file(fd)
            finally:
                os.close(fd)
            try:
                entries.append(FileEntry(name=relative, sha256=digest, size=size))
            except ValueError as error:
                raise InvalidInput(f"model file name {relative!r} is not allowed: {error}") from None
    if not entries:
        raise InvalidInput(f"model directory {base} holds no files")
    return sorted(entries, key=lambda e: e.name)


def build_manifest_from_dir(
    directory: Path,
    *,
    tenant: str,
    model_name: str,
    dataset_snapshot_id: str,
    dataset_merkle_root: str,
    training_config: dict[str, Any],
    seed: int,
    trainer: str,
    store: ArtifactStore | None = None,
    trainer_identity: TrainerIdentity | None = None,
) -> ModelManifest:
    """Hash every file in ``directory`` into a manifest; with ``store``, also store each file by digest.

    With ``trainer_identity`` the manifest is schema v2 and binds it; without, v1 (the trainer's name only).

    When storing, the digest the store computes must equal the one hashed here: a file that changed in between
    is refused, so the manifest never names content that is not what was stored.
    """
    entries = hash_dir(directory)
    if store is not None:
        for entry in entries:
            stored = store.put_file(tenant, Path(directory) / entry.name)
            if stored != entry.sha256:
                raise IntegrityViolation(f"model file {entry.name!r} changed while it was being stored")
    try:
        return ModelManifest(
            tenant=tenant,
            model_name=model_name,
            files=entries,
            dataset_snapshot_id=dataset_snapshot_id,
            dataset_merkle_root=dataset_merkle_root,
            training_config=training_config,
            seed=seed,
            trainer=trainer,
            trainer_identity=trainer_identity,
            schema_=MANIFEST_SCHEMA_V2 if trainer_identity is not None else MANIFEST_SCHEMA,
        )
    except ValueError as error:
        raise InvalidInput(f"model manifest is invalid: {error}") from None

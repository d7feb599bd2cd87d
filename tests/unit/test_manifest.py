"""Signed model manifests: any tampering with files or manifest is refused before a byte is returned."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from evolution.errors import IntegrityViolation, InvalidInput
from evolution.integrity.artifacts import FilesystemArtifactStore
from evolution.integrity.manifest import (
    MANIFEST_SCHEMA,
    FileEntry,
    ModelManifest,
    SignedManifest,
    build_manifest_from_dir,
    sign_manifest,
    verify_manifest,
    verify_model_files,
)
from evolution.integrity.signing import KeyRing, LocalEd25519Signer

TENANT = "acme"
ROOT = "ab" * 32
FILES = {
    "model.pkl": b"\x80\x05 pretend pickle " * 50,
    "meta/config.json": b'{"alpha": 0.1}',
    "meta/z.txt": b"",
}


@pytest.fixture
def signer(tmp_path: Path) -> LocalEd25519Signer:
    return LocalEd25519Signer(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path) -> FilesystemArtifactStore:
    return FilesystemArtifactStore(tmp_path / "artifacts")


def write_model_dir(base: Path, files: dict[str, bytes] = FILES) -> Path:
    for name, data in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return base


def build(directory: Path, store: FilesystemArtifactStore | None = None, **overrides: Any) -> ModelManifest:
    args: dict[str, Any] = {
        "tenant": TENANT,
        "model_name": "yield",
        "dataset_snapshot_id": "ds-1",
        "dataset_merkle_root": ROOT,
        "training_config": {"alpha": 0.1, "features": ["ndvi", "rain"]},
        "seed": 42,
        "trainer": "sklearn-ridge/1",
    }
    args.update(overrides)
    return build_manifest_from_dir(directory, store=store, **args)


@pytest.fixture
def signed(tmp_path: Path, store: FilesystemArtifactStore, signer: LocalEd25519Signer) -> SignedManifest:
    manifest = build(write_model_dir(tmp_path / "model"), store)
    return sign_manifest(manifest, signer)


def keyring(signer: LocalEd25519Signer) -> KeyRing:
    return KeyRing.of(signer)


def stored_path(store: FilesystemArtifactStore, digest: str) -> Path:
    return store.root / TENANT / "sha256" / digest[:2] / digest


def with_files(signed: SignedManifest, files: list[FileEntry]) -> SignedManifest:
    """The same signature over a manifest whose file list was edited (what an attacker can do)."""
    manifest = signed.manifest.model_copy(update={"files": sorted(files, key=lambda f: f.name)})
    return SignedManifest(manifest=manifest, signature=signed.signature)


def entry(signed: SignedManifest, name: str) -> FileEntry:
    return next(f for f in signed.manifest.files if f.name == name)


def test_intact_model_verifies_and_returns_exactly_its_files(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    assert verify_model_files(signed, store, TENANT, keyring(signer)) == FILES
    assert verify_model_files(signed, store, TENANT, signer.public_key_pem()) == FILES


def test_manifest_binds_files_dataset_root_config_and_seed(signed: SignedManifest) -> None:
    manifest = signed.manifest
    assert manifest.schema_ == MANIFEST_SCHEMA
    assert [f.name for f in manifest.files] == ["meta/config.json", "meta/z.txt", "model.pkl"]
    assert {f.name: f.size for f in manifest.files} == {n: len(d) for n, d in FILES.items()}
    payload = manifest.canonical()
    for bound in (
        ROOT.encode(),
        b'"seed":42',
        b'"alpha":0.1',
        b'"dataset_snapshot_id":"ds-1"',
        MANIFEST_SCHEMA.encode(),
    ):
        assert bound in payload


def test_model_hash_is_deterministic_and_survives_a_json_round_trip(
    tmp_path: Path, signed: SignedManifest, signer: LocalEd25519Signer
) -> None:
    again = build(write_model_dir(tmp_path / "again"))
    assert again.digest == signed.digest
    reloaded = SignedManifest.model_validate_json(signed.model_dump_json())
    assert reloaded.digest == signed.digest
    verify_manifest(reloaded, keyring(signer))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", 43),
        ("dataset_merkle_root", "cd" * 32),
        ("training_config", {"alpha": 0.2}),
        ("model_name", "other"),
    ],
)
def test_changing_any_bound_field_breaks_the_signature(
    signed: SignedManifest, signer: LocalEd25519Signer, field: str, value: Any
) -> None:
    tampered = SignedManifest(
        manifest=signed.manifest.model_copy(update={field: value}), signature=signed.signature
    )
    assert tampered.digest != signed.digest
    with pytest.raises(IntegrityViolation):
        verify_manifest(tampered, keyring(signer))


@pytest.mark.parametrize("name", ["model.pkl", "meta/config.json"])
def test_flipped_byte_in_a_stored_file_is_refused_naming_the_file(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer, name: str
) -> None:
    path = stored_path(store, entry(signed, name).sha256)
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityViolation, match=name):
        verify_model_files(signed, store, TENANT, keyring(signer))


def test_file_deleted_from_the_store_is_refused_naming_the_file(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    store.delete(TENANT, entry(signed, "model.pkl").sha256)
    with pytest.raises(IntegrityViolation, match=r"model\.pkl"):
        verify_model_files(signed, store, TENANT, keyring(signer))


def test_added_file_entry_is_refused(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    digest = store.put_bytes(TENANT, b"import os; os.system('evil')")
    extra = FileEntry(name="hook.py", sha256=digest, size=28)
    with pytest.raises(IntegrityViolation):
        verify_model_files(
            with_files(signed, [*signed.manifest.files, extra]), store, TENANT, keyring(signer)
        )


def test_deleted_file_entry_is_refused(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    fewer = [f for f in signed.manifest.files if f.name != "meta/config.json"]
    with pytest.raises(IntegrityViolation):
        verify_model_files(with_files(signed, fewer), store, TENANT, keyring(signer))


def test_renamed_file_entry_is_refused(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    renamed = [
        f.model_copy(update={"name": "model2.pkl"}) if f.name == "model.pkl" else f
        for f in signed.manifest.files
    ]
    with pytest.raises(IntegrityViolation):
        verify_model_files(with_files(signed, renamed), store, TENANT, keyring(signer))


def test_swapped_file_contents_are_refused(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    a, b = entry(signed, "model.pkl"), entry(signed, "meta/config.json")
    swapped = [
        a.model_copy(update={"sha256": b.sha256, "size": b.size}),
        b.model_copy(update={"sha256": a.sha256, "size": a.size}),
        entry(signed, "meta/z.txt"),
    ]
    with pytest.raises(IntegrityViolation):
        verify_model_files(with_files(signed, swapped), store, TENANT, keyring(signer))


@pytest.mark.parametrize(("byte", "bit"), [(0, 0), (17, 5), (63, 7)])
def test_flipped_signature_bit_is_refused(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer, byte: int, bit: int
) -> None:
    raw = bytearray(base64.b64decode(signed.signature.value))
    raw[byte] ^= 1 << bit
    bad = signed.model_copy(
        update={"signature": signed.signature.model_copy(update={"value": base64.b64encode(raw).decode()})}
    )
    with pytest.raises(IntegrityViolation):
        verify_model_files(bad, store, TENANT, keyring(signer))


def test_manifest_signed_by_an_untrusted_key_is_refused(
    tmp_path: Path, signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    intruder = LocalEd25519Signer(tmp_path / "intruder")
    resigned = sign_manifest(signed.manifest, intruder)
    with pytest.raises(IntegrityViolation, match="not a trusted key"):
        verify_model_files(resigned, store, TENANT, keyring(signer))
    with pytest.raises(IntegrityViolation):
        verify_model_files(resigned, store, TENANT, signer.public_key_pem())


def test_manifest_of_another_tenant_is_refused(
    signed: SignedManifest, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    with pytest.raises(IntegrityViolation, match="tenant"):
        verify_model_files(signed, store, "other", keyring(signer))


def test_signed_size_that_does_not_match_the_file_is_refused(
    tmp_path: Path, store: FilesystemArtifactStore, signer: LocalEd25519Signer
) -> None:
    manifest = build(write_model_dir(tmp_path / "model"), store)
    wrong = [
        f.model_copy(update={"size": f.size + 1}) if f.name == "model.pkl" else f for f in manifest.files
    ]
    signed = sign_manifest(manifest.model_copy(update={"files": wrong}), signer)  # an honest signer's mistake
    with pytest.raises(IntegrityViolation, match=r"model\.pkl.*bytes"):
        verify_model_files(signed, store, TENANT, keyring(signer))


class CountingStore(FilesystemArtifactStore):
    """Counts every opening of a stored file (read_bytes goes through open)."""

    reads = 0

    def open(self, tenant: str, digest: str) -> BinaryIO:
        self.reads += 1
        return super().open(tenant, digest)


def test_signature_is_checked_before_any_file_is_read(
    tmp_path: Path, signed: SignedManifest, signer: LocalEd25519Signer
) -> None:
    counting = CountingStore(tmp_path / "artifacts")
    tampered = SignedManifest(
        manifest=signed.manifest.model_copy(update={"seed": 1}), signature=signed.signature
    )
    with pytest.raises(IntegrityViolation, match="does not verify"):
        verify_model_files(tampered, counting, TENANT, keyring(signer))
    assert counting.reads == 0
    verify_model_files(signed, counting, TENANT, keyring(signer))
    assert counting.reads == len(FILES)


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "/abs", "a//b", "a\x00b", "./a", "a/./b", "a/", "a\\b", "", ".."]
)
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        FileEntry(name=name, sha256="00" * 32, size=0)


def test_file_list_is_sorted_and_names_are_unique() -> None:
    common: dict[str, Any] = {
        "tenant": TENANT,
        "model_name": "m",
        "dataset_snapshot_id": "ds",
        "dataset_merkle_root": ROOT,
        "training_config": {},
        "seed": 0,
        "trainer": "t",
    }
    b, a = FileEntry(name="b", sha256="00" * 32, size=0), FileEntry(name="a", sha256="11" * 32, size=0)
    assert [f.name for f in ModelManifest(files=[b, a], **common).files] == ["a", "b"]
    with pytest.raises(ValueError, match="twice"):
        ModelManifest(files=[a, a.model_copy(update={"sha256": "22" * 32})], **common)
    with pytest.raises(ValueError):
        ModelManifest(files=[a], **{**common, "training_config": {"alpha": float("nan")}})


def test_building_refuses_symlinks_and_empty_directories(tmp_path: Path) -> None:
    model = write_model_dir(tmp_path / "model")
    (model / "leak").symlink_to(tmp_path / "keys")
    with pytest.raises(InvalidInput, match="symlink"):
        build(model)
    (model / "leak").unlink()
    (model / "meta" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="symlink"):
        build(model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no files"):
        build(tmp_path / "empty")
    linked_dir = tmp_path / "linked"
    linked_dir.symlink_to(tmp_path / "empty")
    with pytest.raises(InvalidInput):
        build(linked_dir)

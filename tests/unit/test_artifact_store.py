"""The filesystem artifact store: content addressed, write-once, read-only, checked on read, no path games."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from evolution.errors import IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import ArtifactStore, FilesystemArtifactStore
from evolution.integrity.digest_checks import verify_artifact

DATA = b"model weights \x00\x01\x02" * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemArtifactStore:
    return FilesystemArtifactStore(tmp_path / "artifacts")


def stored_path(store: FilesystemArtifactStore, tenant: str, digest: str) -> Path:
    return store.root / tenant / "sha256" / digest[:2] / digest


def corrupt(path: Path, offset: int = 5) -> None:
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    os.chmod(path, 0o444)


def test_filesystem_store_satisfies_the_port(store: FilesystemArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)


def test_put_returns_the_sha256_and_files_it_under_its_content_address(
    store: FilesystemArtifactStore,
) -> None:
    assert store.put_bytes("acme", DATA) == DIGEST
    path = stored_path(store, "acme", DIGEST)
    assert path.read_bytes() == DATA
    assert store.exists("acme", DIGEST)
    assert store.read_bytes("acme", DIGEST) == DATA
    assert store.list_digests("acme") == [DIGEST]


def test_stored_files_are_read_only(store: FilesystemArtifactStore) -> None:
    store.put_bytes("acme", DATA)
    path = stored_path(store, "acme", DIGEST)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    if os.geteuid() != 0:  # root ignores mode bits; the bits themselves are asserted above
        with pytest.raises(PermissionError):
            path.open("r+b")


def test_second_put_of_the_same_content_is_a_no_op(store: FilesystemArtifactStore) -> None:
    store.put_bytes("acme", DATA)
    path = stored_path(store, "acme", DIGEST)
    before = os.stat(path)
    assert store.put_bytes("acme", DATA) == DIGEST
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert store.list_digests("acme") == [DIGEST]
    assert not any((store.root / "acme" / "tmp").iterdir())  # no temporary file left behind


def test_tenants_are_kept_apart(store: FilesystemArtifactStore) -> None:
    store.put_bytes("acme", DATA)
    assert not store.exists("other", DIGEST)
    with pytest.raises(NotFound):
        store.read_bytes("other", DIGEST)
    assert store.list_digests("other") == []


def test_put_file_streams_a_file_and_matches_put_bytes(
    store: FilesystemArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "model.bin"
    big = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(big)
    digest = store.put_file("acme", source)
    assert digest == hashlib.sha256(big).hexdigest()
    assert store.read_bytes("acme", digest) == big
    assert store.put_bytes("acme", big) == digest


def test_put_file_refuses_a_symlink(store: FilesystemArtifactStore, tmp_path: Path) -> None:
    target = tmp_path / "real.bin"
    target.write_bytes(DATA)
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    with pytest.raises(InvalidInput):
        store.put_file("acme", link)


def test_corruption_on_disk_is_detected_on_read(store: FilesystemArtifactStore) -> None:
    store.put_bytes("acme", DATA)
    corrupt(stored_path(store, "acme", DIGEST))
    with pytest.raises(IntegrityViolation, match="corrupted"):
        store.read_bytes("acme", DIGEST)
    with pytest.raises(IntegrityViolation, match="corrupted"):
        verify_artifact(store, "acme", DIGEST)


def test_truncated_file_is_detected_on_read_and_not_masked_by_a_second_put(
    store: FilesystemArtifactStore,
) -> None:
    store.put_bytes("acme", DATA)
    path = stored_path(store, "acme", DIGEST)
    os.chmod(path, 0o644)
    path.write_bytes(DATA[:100])
    with pytest.raises(IntegrityViolation):
        store.read_bytes("acme", DIGEST)
    with pytest.raises(IntegrityViolation):
        store.put_bytes("acme", DATA)


def test_verify_artifact_streams_and_returns_the_size(store: FilesystemArtifactStore) -> None:
    store.put_bytes("acme", DATA)
    assert verify_artifact(store, "acme", DIGEST) == len(DATA)


@pytest.mark.parametrize(
    "tenant", ["", "../acme", "acme/../other", "/etc", "Acme", "-acme", "a" * 64, "acme\x00", "ac me", ".."]
)
def test_bad_tenant_ids_are_refused(store: FilesystemArtifactStore, tenant: str) -> None:
    with pytest.raises(InvalidInput, match="tenant"):
        store.put_bytes(tenant, DATA)
    with pytest.raises(InvalidInput, match="tenant"):
        store.read_bytes(tenant, DIGEST)


@pytest.mark.parametrize(
    "digest", ["", "../" + DIGEST[3:], DIGEST.upper(), DIGEST[:63], DIGEST + "0", "/" + DIGEST[1:], "g" * 64]
)
def test_bad_digests_are_refused(store: FilesystemArtifactStore, digest: str) -> None:
    for call in (store.read_bytes, store.exists, store.open, store.delete):
        with pytest.raises(InvalidInput, match="digest"):
            call("acme", digest)


def test_missing_artifact_is_not_found(store: FilesystemArtifactStore) -> None:
    with pytest.raises(NotFound):
        store.read_bytes("acme", DIGEST)
    assert not store.exists("acme", DIGEST)


def test_symlinked_artifact_is_refused(store: FilesystemArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(DATA)
    path = stored_path(store, "acme", DIGEST)
    path.parent.mkdir(parents=True)
    path.symlink_to(outside)
    with pytest.raises(IntegrityViolation):
        store.read_bytes("acme", DIGEST)
    assert not store.exists("acme", DIGEST)
    assert store.list_digests("acme") == []


def test_symlinked_tenant_directory_is_refused(store: FilesystemArtifactStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store.root / "acme").symlink_to(elsewhere)
    with pytest.raises(IntegrityViolation, match="symlink"):
        store.put_bytes("acme", DATA)
    assert not any(elsewhere.iterdir())


def test_delete_removes_once_and_reports_whether_it_did(store: FilesystemArtifactStore) -> None:
    store.put_bytes("acme", DATA)
    assert store.delete("acme", DIGEST) is True
    assert not store.exists("acme", DIGEST)
    assert store.delete("acme", DIGEST) is False
    assert store.put_bytes("acme", DATA) == DIGEST  # the content can be stored again after collection


def test_list_digests_is_sorted_and_ignores_foreign_files(store: FilesystemArtifactStore) -> None:
    digests = sorted(store.put_bytes("acme", b"blob %d" % i) for i in range(5))
    (store.root / "acme" / "sha256" / digests[0][:2] / "README").write_text("not an artifact")
    assert store.list_digests("acme") == digests


def test_empty_artifact_is_storable(store: FilesystemArtifactStore) -> None:
    digest = store.put_bytes("acme", b"")
    assert digest == hashlib.sha256(b"").hexdigest()
    assert store.read_bytes("acme", digest) == b""

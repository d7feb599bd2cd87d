"""The ArtifactStore contract: the filesystem twin and S3 (moto over HTTP) behave the same, test for test."""

from __future__ import annotations

import hashlib
import random
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from evolution.errors import Conflict, IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.digest_checks import verify_artifact
from evolution.integrity.s3_buckets import S3StoreConfig, bucket_name_for
from tests.contracts.conftest import MULTIPART_THRESHOLD_MB, StoreUnderTest, make_s3_store

DATA = b"model weights \x00\x01\x02" * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()
MIB = 1024 * 1024


def test_store_satisfies_the_port(store_under_test: StoreUnderTest) -> None:
    assert isinstance(store_under_test.store, ArtifactStore)


def test_bytes_round_trip_under_their_sha256(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    assert store.put_bytes("acme", DATA) == DIGEST
    assert store.read_bytes("acme", DIGEST) == DATA
    with store.open("acme", DIGEST) as reader:
        assert reader.read(10) + reader.read() == DATA
    assert verify_artifact(store, "acme", DIGEST) == len(DATA)
    assert store.exists("acme", DIGEST)


def test_empty_content_is_an_artifact_too(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    digest = store.put_bytes("acme", b"")
    assert digest == hashlib.sha256(b"").hexdigest()
    assert store.read_bytes("acme", digest) == b""


def test_put_file_stores_the_same_digest_as_put_bytes(
    store_under_test: StoreUnderTest, tmp_path: Path
) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(DATA)
    assert store_under_test.store.put_file("acme", source) == DIGEST
    assert store_under_test.store.read_bytes("acme", DIGEST) == DATA


def test_second_put_of_the_same_content_is_a_no_op(store_under_test: StoreUnderTest, tmp_path: Path) -> None:
    store = store_under_test.store
    store.put_bytes("acme", DATA)
    state = store_under_test.raw_state()
    source = tmp_path / "again.bin"
    source.write_bytes(DATA)
    assert store.put_bytes("acme", DATA) == DIGEST
    assert store.put_file("acme", source) == DIGEST
    assert store_under_test.raw_state() == state  # not even a new S3 version
    assert store.list_digests("acme") == [DIGEST]


def test_missing_artifacts_are_not_found(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    store.put_bytes("acme", b"something else")
    assert not store.exists("acme", DIGEST)
    with pytest.raises(NotFound, match=DIGEST):
        store.read_bytes("acme", DIGEST)
    with pytest.raises(NotFound):
        store.open("acme", DIGEST)
    with pytest.raises(NotFound):
        store.read_bytes("never-written", DIGEST)  # a tenant without a bucket/directory yet


def test_tenants_cannot_read_each_others_artifacts(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    store.put_bytes("tenant-a", DATA)
    store.put_object("tenant-a", "audit-checkpoints/000000000001.json", b"{}")
    assert not store.exists("tenant-b", DIGEST)
    with pytest.raises(NotFound):
        store.read_bytes("tenant-b", DIGEST)
    with pytest.raises(NotFound):
        store.get_object("tenant-b", "audit-checkpoints/000000000001.json")
    assert store.list_digests("tenant-b") == []
    assert store.list_objects("tenant-b") == []
    store.put_bytes("tenant-b", b"b's own")
    assert store.list_digests("tenant-a") == [DIGEST]


def test_list_digests_is_sorted_and_complete(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    digests = [store.put_bytes("acme", f"artifact {i}".encode()) for i in range(12)]
    assert store.list_digests("acme") == sorted(digests)


def test_delete_removes_it_from_reads_and_listings(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    other = store.put_bytes("acme", b"stays")
    store.put_bytes("acme", DATA)
    assert store.delete("acme", DIGEST) is True
    assert store.delete("acme", DIGEST) is False
    assert not store.exists("acme", DIGEST)
    with pytest.raises(NotFound):
        store.read_bytes("acme", DIGEST)
    assert store.list_digests("acme") == [other]
    assert store.put_bytes("acme", DATA) == DIGEST  # garbage-collected content may come back
    assert store.read_bytes("acme", DIGEST) == DATA


def test_content_changed_behind_the_stores_back_is_refused_on_read(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    store.put_bytes("acme", DATA)
    store_under_test.tamper_digest("acme", DIGEST, DATA[:-1] + b"\xff")
    with pytest.raises(IntegrityViolation, match="corrupted"):
        store.read_bytes("acme", DIGEST)
    with pytest.raises(IntegrityViolation):
        verify_artifact(store, "acme", DIGEST)


def test_bad_tenants_and_digests_are_refused(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    for tenant in ("../etc", "Acme", "", "a/b", "x" * 64):
        with pytest.raises(InvalidInput):
            store.put_bytes(tenant, DATA)
        with pytest.raises(InvalidInput):
            store.put_object(tenant, "k", b"x")
    for digest in ("../" + DIGEST[3:], DIGEST.upper(), DIGEST[:-1], ""):
        with pytest.raises(InvalidInput):
            store.read_bytes("acme", digest)
        with pytest.raises(InvalidInput):
            store.exists("acme", digest)


def test_put_file_refuses_a_symlink(store_under_test: StoreUnderTest, tmp_path: Path) -> None:
    target = tmp_path / "real.bin"
    target.write_bytes(DATA)
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    with pytest.raises(InvalidInput, match="symlink"):
        store_under_test.store.put_file("acme", link)


def test_a_file_above_the_multipart_threshold_round_trips(
    store_under_test: StoreUnderTest, tmp_path: Path
) -> None:
    size = int(2.4 * MULTIPART_THRESHOLD_MB * MIB)  # three parts of 5 MiB (the last one short)
    data = random.Random(7).randbytes(size)
    source = tmp_path / "large.bin"
    source.write_bytes(data)
    digest = store_under_test.store.put_file("acme", source)
    assert digest == hashlib.sha256(data).hexdigest()
    assert verify_artifact(store_under_test.store, "acme", digest) == size
    assert store_under_test.store.read_bytes("acme", digest) == data
    assert store_under_test.store.put_file("acme", source) == digest  # again: a no-op
    if store_under_test.kind == "s3":
        s3 = store_under_test.store
        head = store_under_test.extra[
            "raw"
        ].head_object(
            Bucket=s3.bucket_name("acme"),  # type: ignore[attr-defined]
            Key=f"sha256/{digest[:2]}/{digest}",
        )
        assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part multipart upload
        assert head["Metadata"]["sha256"] == digest


# -- named objects -------------------------------------------------------------------------------------


CHECKPOINT = "audit-checkpoints/000000001200.json"


def test_named_objects_round_trip_and_list_by_segment(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    assert store.put_object("acme", CHECKPOINT, b'{"seq": 1200}') == CHECKPOINT
    store.put_object("acme", "audit-checkpoints/000000000600.json", b'{"seq": 600}')
    store.put_object("acme", "audit-checkpoints-old/x.json", b"{}")
    store.put_object("acme", "top", b"t")
    assert store.get_object("acme", CHECKPOINT) == b'{"seq": 1200}'
    assert store.list_objects("acme", "audit-checkpoints") == [
        "audit-checkpoints/000000000600.json",
        CHECKPOINT,
    ]
    assert store.list_objects("acme") == sorted(
        ["audit-checkpoints-old/x.json", "audit-checkpoints/000000000600.json", CHECKPOINT, "top"]
    )
    assert store.list_objects("acme", CHECKPOINT) == [CHECKPOINT]
    assert store.list_objects("acme", "audit") == []  # segment-wise, not a string prefix
    assert store.list_objects("acme", "nothing/here") == []


def test_named_objects_are_kept_apart_from_digests(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    store.put_object("acme", "sha256/aa/" + "a" * 64, DATA)
    assert store.list_digests("acme") == []
    store.put_bytes("acme", DATA)
    assert store.list_objects("acme") == ["sha256/aa/" + "a" * 64]


def test_named_objects_are_write_once(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    store.put_object("acme", CHECKPOINT, b"first")
    state = store_under_test.raw_state()
    assert store.put_object("acme", CHECKPOINT, b"first") == CHECKPOINT  # same bytes: no-op
    with pytest.raises(Conflict, match="write-once"):
        store.put_object("acme", CHECKPOINT, b"second")
    assert store.get_object("acme", CHECKPOINT) == b"first"
    assert store_under_test.raw_state() == state


def test_a_key_cannot_be_both_an_object_and_a_prefix(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    store.put_object("acme", "a/b", b"1")
    with pytest.raises(Conflict, match="prefix"):
        store.put_object("acme", "a", b"2")
    with pytest.raises(Conflict, match="already an object"):
        store.put_object("acme", "a/b/c", b"3")
    with pytest.raises(NotFound):
        store.get_object("acme", "a")
    assert store.list_objects("acme") == ["a/b"]


def test_missing_named_objects_are_not_found(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    with pytest.raises(NotFound, match=r"nope\.json"):
        store.get_object("acme", "audit-checkpoints/nope.json")
    store.put_object("acme", CHECKPOINT, b"{}")
    with pytest.raises(NotFound):
        store.get_object("acme", "audit-checkpoints/nope.json")


def test_racing_writers_of_one_key_leave_exactly_one_winner(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    store.put_object("acme", "warm-up", b"bucket exists")  # the race is about the key, not bucket creation
    outcomes: dict[int, str] = {}
    start = threading.Barrier(6)

    def write(i: int) -> None:
        start.wait()
        try:
            store.put_object("acme", CHECKPOINT, f"writer {i}".encode())
            outcomes[i] = "stored"
        except Conflict:
            outcomes[i] = "conflict"

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, outcome in outcomes.items() if outcome == "stored"]
    assert len(winners) == 1 and len(outcomes) == 6
    assert store.get_object("acme", CHECKPOINT) == f"writer {winners[0]}".encode()


# -- S3 specifics (same file: they are about the same adapter's guarantees) -----------------------------


@pytest.fixture
def s3_under_test(fake_aws_env: dict[str, str], moto_endpoint: str) -> StoreUnderTest:
    return make_s3_store(moto_endpoint)


def test_s3_buckets_are_created_on_first_write_with_versioning(s3_under_test: StoreUnderTest) -> None:
    store, raw = s3_under_test.store, s3_under_test.extra["raw"]
    assert store.list_digests("acme") == [] and not store.exists("acme", DIGEST)
    assert s3_under_test.raw_state() == []  # reads create nothing
    store.put_bytes("acme", DATA)
    bucket = store.bucket_name("acme")  # type: ignore[attr-defined]
    assert bucket == s3_under_test.extra["prefix"] + "acme"
    assert raw.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_s3_object_lock_is_enabled_when_configured(fake_aws_env: dict[str, str], moto_endpoint: str) -> None:
    locked = make_s3_store(moto_endpoint, object_lock=True, object_lock_retention_days=1)
    locked.store.put_bytes("acme", DATA)
    bucket = locked.store.bucket_name("acme")  # type: ignore[attr-defined]
    lock = locked.extra["raw"].get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("GOVERNANCE", 1)
    assert locked.store.read_bytes("acme", DIGEST) == DATA


def test_s3_a_tampered_version_is_refused_and_the_original_survives(s3_under_test: StoreUnderTest) -> None:
    store, raw = s3_under_test.store, s3_under_test.extra["raw"]
    store.put_bytes("acme", DATA)
    s3_under_test.tamper_digest("acme", DIGEST, b"evil")
    with pytest.raises(IntegrityViolation, match="corrupted"):
        store.read_bytes("acme", DIGEST)
    bucket = store.bucket_name("acme")  # type: ignore[attr-defined]
    versions = raw.list_object_versions(Bucket=bucket, Prefix=f"sha256/{DIGEST[:2]}/{DIGEST}")["Versions"]
    assert len(versions) == 2  # versioning kept the original
    original = next(v for v in versions if not v["IsLatest"])
    body = raw.get_object(Bucket=bucket, Key=original["Key"], VersionId=original["VersionId"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == DIGEST


def test_s3_a_named_object_replaced_behind_the_stores_back_is_refused(s3_under_test: StoreUnderTest) -> None:
    s3_under_test.store.put_object("acme", CHECKPOINT, b'{"seq": 1200}')
    s3_under_test.tamper_object("acme", CHECKPOINT, b'{"seq": 1201}')
    with pytest.raises(IntegrityViolation, match="outside the store"):
        s3_under_test.store.get_object("acme", CHECKPOINT)


def test_s3_check_reports_reachability_credentials_and_the_bucket(s3_under_test: StoreUnderTest) -> None:
    store = s3_under_test.store
    before = store.check("acme")  # type: ignore[attr-defined]
    assert [(r.name, r.ok) for r in before] == [
        ("s3 reachable", True),
        ("s3 credentials", True),
        ("s3 bucket for acme", True),
    ]
    assert "created on the first write" in before[2].detail
    after = store.check("acme", create=True)  # type: ignore[attr-defined]
    assert after[2].ok and "versioning Enabled" in after[2].detail


def test_s3_check_reports_an_unreachable_endpoint(fake_aws_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = make_s3_store(f"http://127.0.0.1:{port}", max_attempts=1, connect_timeout_s=1.0)
    results = dead.store.check("acme")  # type: ignore[attr-defined]
    assert results[0].name == "s3 reachable" and not results[0].ok
    assert f"127.0.0.1:{port}" in results[0].detail


def test_s3_config_never_shows_its_secrets() -> None:
    config = S3StoreConfig(
        access_key_id=SecretStr("AKIAEXAMPLE"), secret_access_key=SecretStr("s3cr3t-value")
    )
    assert "s3cr3t-value" not in repr(config) and "s3cr3t-value" not in config.model_dump_json()
    with pytest.raises(ValidationError, match="together"):
        S3StoreConfig(access_key_id=SecretStr("AKIAEXAMPLE"))
    with pytest.raises(ValidationError, match="bucket_prefix"):
        S3StoreConfig(bucket_prefix="Bad_Prefix")


@pytest.mark.parametrize(
    ("tenant", "bucket"),
    [
        ("acme", "evolution-acme"),
        ("north-farm-7", "evolution-north-farm-7"),
        ("a_b", "evolution-a-b-" + hashlib.sha256(b"a_b").hexdigest()[:16]),
        ("a-b", "evolution-a-b"),
        ("farm-", "evolution-farm-" + hashlib.sha256(b"farm-").hexdigest()[:16]),
        (
            "x-0123456789abcdef",
            "evolution-x-0123456789abcdef-" + hashlib.sha256(b"x-0123456789abcdef").hexdigest()[:16],
        ),
    ],
)
def test_bucket_names_follow_the_documented_mapping(tenant: str, bucket: str) -> None:
    assert bucket_name_for("evolution-", tenant) == bucket


def test_bucket_names_are_valid_and_distinct_for_every_kind_of_tenant_id() -> None:
    tenants = [
        "a",
        "a-b",
        "a_b",
        "a__b",
        "a--b",
        "farm-",
        "0",
        "x" * 63,
        "x" * 62 + "_",
        "xn--abc",
        "a-s3alias",
    ]
    tenants += [f"{t}-{hashlib.sha256(t.encode()).hexdigest()[:16]}"[:63] for t in ("a_b", "farm-", "x" * 40)]
    names = [bucket_name_for("evolution-", t) for t in tenants]
    assert len(set(names)) == len(tenants)
    for name in names:
        assert 3 <= len(name) <= 63 and name == name.lower() and name[0].isalnum() and name[-1].isalnum()
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") and not name.endswith("-s3alias")


def test_file_changed_between_hash_and_upload_is_not_stored(
    s3_under_test: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evolution.integrity import s3_artifacts

    size = int(1.2 * MULTIPART_THRESHOLD_MB * MIB)
    source = tmp_path / "moving.bin"
    source.write_bytes(b"\x01" * size)
    real_hash = s3_artifacts._hash_fd

    def hash_then_change(fd: int) -> tuple[str, int]:
        result = real_hash(fd)
        with open(source, "r+b") as f:  # another process rewrites the file right after it was hashed
            f.write(b"\x02")
        return result

    monkeypatch.setattr(s3_artifacts, "_hash_fd", hash_then_change)
    with pytest.raises(IntegrityViolation, match="changed while it was being stored"):
        s3_under_test.store.put_file("acme", source)
    assert s3_under_test.store.list_digests("acme") == []
    bucket = s3_under_test.store.bucket_name("acme")  # type: ignore[attr-defined]
    assert s3_under_test.extra["raw"].list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# -- filesystem specifics ------------------------------------------------------------------------------


def test_fs_named_objects_are_read_only_and_never_followed_through_symlinks(tmp_path: Path) -> None:
    from evolution.integrity.artifacts import FilesystemArtifactStore

    root = tmp_path / "artifacts"
    store = FilesystemArtifactStore(root)
    store.put_object("acme", CHECKPOINT, b"{}")
    path = root / "acme" / "objects" / CHECKPOINT
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"not yours")
    (root / "acme" / "objects" / "elsewhere").symlink_to(outside)
    with pytest.raises(IntegrityViolation, match="symlink"):
        store.get_object("acme", "elsewhere/secret.json")
    with pytest.raises(IntegrityViolation, match="symlink"):
        store.put_object("acme", "elsewhere/new.json", b"x")
    with pytest.raises(IntegrityViolation, match="symlink"):
        store.list_objects("acme", "elsewhere")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.json"]
    assert store.list_objects("acme") == [CHECKPOINT]  # the walk does not follow the link either

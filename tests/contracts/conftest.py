"""Port contract suites: one parametrised fixture per port yields every implementation, embedded and production.

The production twins run against moto's AWS server over real HTTP (started once per session, in a child
process); each test gets its own buckets / keys, so tests do not see each other's state.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from evolution.integrity.artifacts import ArtifactStore, FilesystemArtifactStore
from evolution.integrity.kms_signing import KmsSigner, KmsSignerConfig, create_signing_key
from evolution.integrity.s3_artifacts import S3ArtifactStore
from evolution.integrity.s3_buckets import S3StoreConfig
from evolution.integrity.signing import LocalEd25519Signer, LocalSigner, Signer
from tests.support.moto_server import FAKE_AWS_ENV, fake_aws_env, moto_server

__all__ = ["fake_aws_env"]  # re-exported: pytest finds fixtures by name in this module


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server for the session: its endpoint URL."""
    with moto_server() as url:
        yield url


@functools.lru_cache(maxsize=8)
def aws_client(service: str, endpoint: str) -> Any:
    """A boto3 client for moto with explicit fake credentials (no environment needed); shared, thread-safe."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


# -- artifact stores ----------------------------------------------------------------------------------


@dataclass
class StoreUnderTest:
    """An ArtifactStore plus what a test needs to reach behind its back (tampering, raw listings)."""

    kind: str
    store: ArtifactStore
    tamper_digest: Callable[[str, str, bytes], None]
    tamper_object: Callable[[str, str, bytes], None]
    raw_state: Callable[[], list[str]]
    """Every stored thing, below the port: FS paths under the root; S3 buckets and object versions."""
    extra: dict[str, Any] = field(default_factory=dict)


MULTIPART_THRESHOLD_MB = 5.0  # S3's smallest part is 5 MiB, so this is the smallest real multipart test


def filesystem_store(root: Path) -> StoreUnderTest:
    store = FilesystemArtifactStore(root)

    def overwrite(path: Path, data: bytes) -> None:
        os.chmod(path, 0o644)
        path.write_bytes(data)
        os.chmod(path, 0o444)

    def tamper_digest(tenant: str, digest: str, data: bytes) -> None:
        overwrite(root / tenant / "sha256" / digest[:2] / digest, data)

    def tamper_object(tenant: str, key: str, data: bytes) -> None:
        overwrite(root / tenant / "objects" / key, data)

    def raw_state() -> list[str]:
        found = []
        for current, dirs, files in os.walk(root):
            for name in [*dirs, *files]:
                found.append(os.path.relpath(os.path.join(current, name), root))
        return sorted(found)

    return StoreUnderTest("filesystem", store, tamper_digest, tamper_object, raw_state, {"root": root})


def make_s3_store(endpoint: str, **overrides: Any) -> StoreUnderTest:
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    settings: dict[str, Any] = {
        "endpoint_url": endpoint,
        "bucket_prefix": prefix,
        "access_key_id": FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "secret_access_key": FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "multipart_threshold_mb": MULTIPART_THRESHOLD_MB,
        "multipart_chunk_mb": 5.0,
        "max_attempts": 2,
    }
    settings.update(overrides)
    store = S3ArtifactStore(S3StoreConfig(**settings))
    raw = aws_client("s3", endpoint)

    def tamper_digest(tenant: str, digest: str, data: bytes) -> None:
        raw.put_object(Bucket=store.bucket_name(tenant), Key=f"sha256/{digest[:2]}/{digest}", Body=data)

    def tamper_object(tenant: str, key: str, data: bytes) -> None:
        raw.put_object(Bucket=store.bucket_name(tenant), Key=f"objects/{key}", Body=data)

    def raw_state() -> list[str]:
        found = []
        for bucket in raw.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            if not name.startswith(prefix):
                continue
            found.append(name)
            versions = raw.list_object_versions(Bucket=name)
            for entry in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
                found.append(f"{name}/{entry['Key']}@{entry['VersionId']}")
        return sorted(found)

    return StoreUnderTest(
        "s3", store, tamper_digest, tamper_object, raw_state, {"raw": raw, "prefix": prefix}
    )


@pytest.fixture(params=["filesystem", "s3"])
def store_under_test(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    """Each ArtifactStore implementation, fresh and empty."""
    if request.param == "filesystem":
        return filesystem_store(tmp_path / "artifacts")
    request.getfixturevalue("fake_aws_env")
    return make_s3_store(request.getfixturevalue("moto_endpoint"))


# -- signers -----------------------------------------------------------------------------------------


@pytest.fixture
def kms_client(moto_endpoint: str) -> Any:
    return aws_client("kms", moto_endpoint)


def make_kms_signer(endpoint: str) -> tuple[KmsSigner, str]:
    """A fresh KMS key under a fresh alias, and a signer made from configuration; returns (signer, key ARN)."""
    alias = f"alias/evolution-test-{uuid.uuid4().hex[:12]}"
    arn = create_signing_key(aws_client("kms", endpoint), alias)
    config = KmsSignerConfig(
        alias=alias,
        endpoint_url=endpoint,
        access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        max_attempts=2,
        digest_signing=False,  # moto hashes a DIGEST message again (tests/support/digest_kms.py tests that path)
    )
    return KmsSigner.from_config(config), arn


@pytest.fixture(params=["local-p256", "local-ed25519", "aws-kms"])
def signer_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Signer]:
    """Makes signers of one implementation; every call is a new, different key."""
    counter = iter(range(1000))
    if request.param == "local-p256":
        return lambda: LocalSigner(tmp_path / "keys", name=f"k{next(counter)}")
    if request.param == "local-ed25519":
        return lambda: LocalEd25519Signer(tmp_path / "keys", name=f"k{next(counter)}")
    request.getfixturevalue("fake_aws_env")
    endpoint = request.getfixturevalue("moto_endpoint")
    return lambda: make_kms_signer(endpoint)[0]

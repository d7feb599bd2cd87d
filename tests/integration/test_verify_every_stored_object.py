"""`evolution verify` checks every object the artifact store holds, on the filesystem store and on S3 (moto's server).

A demo-like tenant: a sealed snapshot, two really trained and signed model versions (v1 DEPRECATED, v2 CHAMPION,
each with its files and its stored signed manifest), a signed baseline reset, a drift report written by a scan, and
the audit checkpoint the first ``verify`` signs. Then, for each stored object in turn, one bit in its middle is
flipped the way someone with write access to the store would: on the filesystem the 0444 file is made writable,
rewritten and made read-only again; on S3 a new version is put over the key (object lock keeps the original version,
but a new one still becomes the current one: the lock does not stop this), with the metadata checksum the adapter
records rewritten to match, so only ``verify``'s own checks can catch it. ``verify`` must fail naming the object,
and pass again once the object is restored.

An object nothing references is listed as an orphan (reported, not failed) unless a version is training; a corrupted
one is a failure like any other; a baseline reset replaced by a later one is still accounted for, by the audit trail.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import boto3
import pytest
from typer.testing import CliRunner

from evolution.cli.main import app
from evolution.demo.scenario import Scenario
from evolution.integrity.s3_artifacts import S3ArtifactStore
from evolution.integrity.s3_buckets import S3StoreConfig
from evolution.lifecycle import ModelState, TransitionRequest
from evolution.platform.settings import Settings
from evolution.platform.stored_objects import digest_location, object_location
from evolution.platform.verification import VerificationReport, verify_all
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from tests.support.models import install_model
from tests.support.moto_server import FAKE_AWS_ENV, moto_server
from tests.support.scenario import seed_tenant

TENANT = "acme-agro"
ADMIN = Principal.for_tenant("ada", Role.ADMIN, "*")


class RawAccess(Protocol):
    """What someone with write access to the store can do, below the port: by tenant and where the object is."""

    def read(self, tenant: str, name: str) -> bytes: ...

    def tamper(self, tenant: str, name: str, data: bytes) -> None: ...

    def restore(self, tenant: str, name: str, original: bytes) -> None: ...


class FilesystemAccess:
    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, tenant: str, name: str) -> bytes:
        return (self.root / tenant / name).read_bytes()

    def tamper(self, tenant: str, name: str, data: bytes) -> None:
        path = self.root / tenant / name
        path.chmod(0o644)  # written once as 0444: the owner of the files can still change that
        path.write_bytes(data)
        path.chmod(0o444)

    def restore(self, tenant: str, name: str, original: bytes) -> None:
        self.tamper(tenant, name, original)


class S3Access:
    def __init__(self, client: Any, store: S3ArtifactStore) -> None:
        self.client = client
        self.store = store

    def read(self, tenant: str, name: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.store.bucket_name(tenant), Key=name)["Body"].read())

    def tamper(self, tenant: str, name: str, data: bytes) -> None:
        # The adapter's own read check compares the bytes with the SHA-256 it recorded in the metadata; an attacker
        # who can write the bucket rewrites that too. Object lock lets the PUT through as a new current version.
        self.client.put_object(
            Bucket=self.store.bucket_name(tenant),
            Key=name,
            Body=data,
            ChecksumAlgorithm="SHA256",
            Metadata={"sha256": hashlib.sha256(data).hexdigest()},
        )

    def restore(self, tenant: str, name: str, original: bytes) -> None:
        # Object lock kept the original version: read it by its version id and put it back on top, metadata and all.
        bucket = self.store.bucket_name(tenant)
        versions = self.client.list_object_versions(Bucket=bucket, Prefix=name)["Versions"]
        mine = [v for v in versions if v["Key"] == name and not v["IsLatest"]]
        assert mine, "the tampered PUT added a version; the original is still there"
        # Found by its bytes, not by LastModified: whole seconds, so the original and the tampered copy may tie.
        for version in mine:
            kept = self.client.get_object(Bucket=bucket, Key=name, VersionId=version["VersionId"])
            body = kept["Body"].read()
            if body == original:
                break
        else:
            raise AssertionError(f"no kept version of {name} holds the original bytes")
        self.client.put_object(
            Bucket=bucket,
            Key=name,
            Body=body,
            ChecksumAlgorithm="SHA256",  # object lock asks for a checksum on every write
            Metadata=kept["Metadata"],
        )
        assert self.read(tenant, name) == original


@dataclass
class Demo:
    """A demo-like state, the environment the CLI needs to reach it, and raw access to its store."""

    kind: str
    services: Services
    env: dict[str, str]
    raw: RawAccess

    def objects(self, tenant: str = TENANT) -> list[str]:
        """Every stored object of the tenant, named where the store keeps it (``sha256/…``, ``objects/…``)."""
        store = self.services.store
        return [digest_location(d) for d in store.list_digests(tenant)] + [
            object_location(k) for k in store.list_objects(tenant)
        ]

    def verify(self, tenant: str = TENANT) -> VerificationReport:
        return verify_all(self.services, [tenant])


def _build_state(services: Services, work: Path) -> None:
    seed_tenant(services, Scenario(tenant_id=TENANT, history_rows=400))
    snapshot = services.snapshots.seal(ADMIN, TENANT, utcnow())
    install_model(services, TENANT, work, ModelState.CHAMPION, seed=1)
    install_model(services, TENANT, work, ModelState.CHAMPION, seed=2)  # v1 DEPRECATED
    services.baselines.reset(ADMIN, TENANT, "yield", "this season is the new normal", services.keyring)
    scan = services.drift_scanner.scan(TENANT, "yield", snapshot.id)
    assert scan.report_id is not None, scan
    first = verify_all(services, [TENANT])  # signs the audit checkpoint at the current head
    assert first.ok and not first.orphans, [*first.failures, *first.orphans]


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    home = tmp_path_factory.mktemp(f"verify-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        if request.param == "filesystem":
            settings = Settings(home=home)
            services = build_services(settings)
            env = {"EVOLUTION_HOME": str(home)}
            with contextlib.closing(services):
                _build_state(services, home / "work")
                yield Demo("filesystem", services, env, FilesystemAccess(settings.artifacts_dir))
            return
        with moto_server() as endpoint:
            prefix = f"v{uuid.uuid4().hex[:10]}-"
            s3 = {
                "endpoint_url": endpoint,
                "bucket_prefix": prefix,
                "access_key_id": FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                "secret_access_key": FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                "object_lock": True,  # as in production: WORM versions
                "object_lock_retention_days": 1,
            }
            settings = Settings(home=home, artifact_backend="s3", s3=S3StoreConfig(**s3))
            services = build_services(settings)
            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            )
            env = {
                "EVOLUTION_HOME": str(home),
                "EVOLUTION_ARTIFACT_BACKEND": "s3",
                **{f"EVOLUTION_S3__{k.upper()}": str(v) for k, v in s3.items()},
                **FAKE_AWS_ENV,
            }
            assert isinstance(services.store, S3ArtifactStore)
            with contextlib.closing(services):
                _build_state(services, home / "work")
                yield Demo("s3", services, env, S3Access(client, services.store))


def _flip_middle_bit(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    return bytes(flipped)


def test_flipping_one_bit_of_any_stored_object_fails_verify_naming_that_object(demo: Demo) -> None:
    objects = demo.objects()
    # 2 versions x (model.json, model.pkl, stored signed manifest) + snapshot + baseline + report + checkpoint
    assert len(objects) == 10, objects
    what = {c.subject: c.detail for c in demo.verify().checks if c.kind == "stored-objects"}
    assert what == {"10 objects": "9 by digest, 1 named: each hashes to its name and matches what was signed"}

    caught: list[str] = []
    for name in objects:
        original = demo.raw.read(TENANT, name)
        demo.raw.tamper(TENANT, name, _flip_middle_bit(original))
        report = demo.verify()
        named = [c for c in report.failures if c.kind == "stored-object" and c.subject == name]
        assert not report.ok and len(named) == 1, (name, report.failures)
        caught.append(named[0].detail)
        demo.raw.restore(TENANT, name, original)
        again = demo.verify()
        assert again.ok, (name, again.failures)

    assert len(caught) == len(objects)
    labels = " | ".join(caught)
    # the three the issue found unchecked: both stored signed manifests and the stored drift report
    assert labels.count("stored signed manifest") == 2, labels
    assert "yield v1 stored signed manifest" in labels and "yield v2 stored signed manifest" in labels
    assert "drift report dr-" in labels and "audit checkpoint" in labels, labels


def test_an_unreferenced_object_is_reported_as_an_orphan_except_while_a_version_trains(demo: Demo) -> None:
    tenant = f"orphan-{uuid.uuid4().hex[:8]}"  # a tenant of its own: the other test's store stays as it was
    services = demo.services
    services.tenants.ensure_tenant(ADMIN, tenant)
    assert verify_all(services, [tenant]).ok
    digest = services.store.put_bytes(tenant, b"written behind the registry's back")

    report = verify_all(services, [tenant])
    assert report.ok, report.failures  # an orphan is reported, not failed
    assert [(c.subject, c.ok) for c in report.orphans] == [(digest_location(digest), True)]
    assert "orphan: no version, snapshot, drift report" in report.orphans[0].detail

    cli = CliRunner().invoke(app, ["verify", "--tenant", tenant], env=demo.env)
    assert cli.exit_code == 0, cli.output
    lines = [line.split() for line in cli.output.splitlines() if "ORPHAN" in line]
    assert [line[:4] for line in lines] == [[tenant, "stored-object", digest_location(digest), "ORPHAN"]]
    assert "0 failed, 1 orphaned object (reported, not failed)" in cli.output, cli.output

    # A training stores its files before the registry lists them: no orphan is reported while one runs.
    system = Principal.system(tenant)
    version = services.registry.register_version(system, tenant, "yield", uuid.uuid4().hex)
    services.registry.transition(
        system,
        TransitionRequest(
            version_id=version.id,
            to_state=ModelState.TRAINING,
            expected_version=version.lock_version,
            request_id=uuid.uuid4().hex,
        ),
    )
    training = verify_all(services, [tenant])
    assert training.ok and training.orphans == [], training.orphans
    note = [c.detail for c in training.checks if c.kind == "stored-objects"]
    assert note and "yield v1 TRAINING" in note[0], note


def test_a_corrupted_orphan_is_a_failure_not_an_orphan(demo: Demo) -> None:
    tenant = f"orphan-{uuid.uuid4().hex[:8]}"
    demo.services.tenants.ensure_tenant(ADMIN, tenant)
    digest = demo.services.store.put_bytes(tenant, b"nobody references me " * 10)
    name = digest_location(digest)
    demo.raw.tamper(tenant, name, _flip_middle_bit(demo.raw.read(tenant, name)))
    report = verify_all(demo.services, [tenant])
    failed = [c for c in report.failures if c.subject == name]
    assert len(failed) == 1 and "hashes to" in failed[0].detail, report.failures
    assert report.orphans == []


def test_a_replaced_baseline_reset_is_still_accounted_for_and_checked(tmp_path: Path) -> None:
    """Only the latest reset stays in the tenant's settings; the audit trail names the one it replaced."""
    services = build_services(Settings(home=tmp_path / "home"))
    with contextlib.closing(services):
        seed_tenant(services, Scenario(tenant_id=TENANT, history_rows=400))
        services.snapshots.seal(ADMIN, TENANT, utcnow() - timedelta(days=20))
        install_model(services, TENANT, tmp_path / "work", ModelState.CHAMPION)
        first = services.baselines.reset(ADMIN, TENANT, "yield", "the first dry spell", services.keyring)
        services.snapshots.seal(ADMIN, TENANT, utcnow())
        second = services.baselines.reset(ADMIN, TENANT, "yield", "the season after", services.keyring)
        assert first.digest != second.digest
        assert (
            services.tenants.tenant_settings(ADMIN, TENANT).baseline_overrides["yield"]["digest"]
            == second.digest
        )

        report = verify_all(services, [TENANT])
        assert report.ok and report.orphans == [], [*report.failures, *report.orphans]

        raw = FilesystemAccess(services.settings.artifacts_dir)
        name = digest_location(first.digest)
        raw.tamper(TENANT, name, _flip_middle_bit(raw.read(TENANT, name)))
        failed = [c for c in verify_all(services, [TENANT]).failures if c.kind == "stored-object"]
        assert [(c.subject, c.detail.split(":")[0]) for c in failed] == [(name, "baseline reset of yield")]

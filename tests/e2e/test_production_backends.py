"""The walking skeleton once more, on the production backends: PostgreSQL with row-level security (the services
connect as the fenced application role), S3 over HTTP (moto) and AWS KMS over HTTP (moto), chosen by settings alone.
`evolution doctor` checks them all, the demo reaches a new champion, verify re-checks every signature, the champion
exported with its KMS-signed model.sig verifies with model_signing, and a model file changed behind the store's back
in S3 fails verify."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from evolution.integrity.kms_signing import create_signing_key
from evolution.registry.db import upgrade_to_head
from tests.e2e.conftest import cli
from tests.support.model_signing_verifier import verify_with_api
from tests.support.moto_server import FAKE_AWS_ENV, moto_server
from tests.support.postgres import app_role_url, create_database, tls_as_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BUCKET_PREFIX = "evo-e2e-"
KEY_ALIAS = "alias/evolution-e2e"


@pytest.fixture(scope="module")
def aws_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def production_env(cli_env: dict[str, str], pg_server: str, aws_endpoint: str) -> dict[str, str]:
    owner_url = create_database(pg_server)
    upgrade_to_head(owner_url)  # the owner migrates; the processes below connect as the application role
    key_arn = create_signing_key(_client("kms", aws_endpoint), KEY_ALIAS)
    # TLS by the settings, as in production: verify-full against the test CA, the app role by its certificate.
    app_url, tls_settings = tls_as_settings(app_role_url(owner_url))
    return {
        **cli_env,
        **FAKE_AWS_ENV,
        **tls_settings,
        "EVOLUTION_DATABASE_URL": app_url,
        "EVOLUTION_DATABASE_OWNER_URL": tls_as_settings(owner_url)[0],
        "EVOLUTION_ARTIFACT_BACKEND": "s3",
        "EVOLUTION_S3__ENDPOINT_URL": aws_endpoint,
        "EVOLUTION_S3__BUCKET_PREFIX": BUCKET_PREFIX,
        "EVOLUTION_SIGNER_BACKEND": "kms",
        "EVOLUTION_KMS__KEY_ID": key_arn,
        "EVOLUTION_KMS__ENDPOINT_URL": aws_endpoint,
        "EVOLUTION_KMS__DIGEST_SIGNING": "false",  # moto hashes a DIGEST message again
    }


def test_demo_runs_on_postgres_s3_and_kms_and_verify_catches_an_s3_tamper(
    production_env: dict[str, str], aws_endpoint: str
) -> None:
    doctor = cli(production_env, "doctor", "--skip", "temporal")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for line in ("row-level security forced", "application role fenced", "s3 credentials", "kms"):
        assert line in doctor.stdout.lower(), doctor.stdout
    for line in ("sslmode=verify-full", "client certificate presented", "CN=evolution_app_login"):
        assert line in doctor.stdout, doctor.stdout

    demo = cli(production_env, "demo", "--fast", timeout=600)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    assert "promoted; approved by demo-manager" in demo.stdout and ", 0 failed" in demo.stdout

    home = Path(production_env["EVOLUTION_HOME"])
    assert not (home / "artifacts").exists() or not any((home / "artifacts").rglob("*"))
    assert not (home / "keys" / "signing.key").exists(), "KMS signs: no local signing key is created"

    s3 = _client("s3", aws_endpoint)
    bucket = f"{BUCKET_PREFIX}acme-agro"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(objects) >= 5, objects

    verify = cli(production_env, "verify")
    assert verify.returncode == 0 and ", 0 failed" in verify.stdout, verify.stdout + verify.stderr

    # The champion, signed by KMS, verifies with the OpenSSF verifier and the public key KMS holds.
    exported = home.parent / "champion"
    export = cli(production_env, "model", "export", "acme-agro", "yield", "champion", str(exported))
    assert export.returncode == 0, export.stdout + export.stderr
    key = home.parent / "kms-key.pem"
    assert cli(production_env, "keys", "export-public", str(key)).returncode == 0
    verify_with_api(exported, key)

    # An attacker with bucket credentials writes a new version of one artifact, bypassing the store.
    victim = max(objects, key=lambda k: s3.head_object(Bucket=bucket, Key=k)["ContentLength"])
    body = bytearray(s3.get_object(Bucket=bucket, Key=victim)["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=victim, Body=bytes(body))
    assert hashlib.sha256(body).hexdigest() not in victim
    tampered = cli(production_env, "verify", "--tenant", "acme-agro")
    assert tampered.returncode == 1, tampered.stdout
    assert "FAILED" in tampered.stdout

"""boto3 plumbing shared by the S3 artifact store and the KMS signer: the one client factory, and error codes.

Every boto3 client the product makes comes from :func:`boto_client`, so credentials (explicit when the settings
give them, else boto3's default chain), retries and timeouts are set up one way for every AWS backend.
"""

from __future__ import annotations

from typing import Any, Protocol

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from pydantic import SecretStr


class AwsConnection(Protocol):
    """How a backend's settings reach AWS (or an emulator); S3StoreConfig and KmsSignerConfig both say it."""

    @property
    def region(self) -> str: ...
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def access_key_id(self) -> SecretStr | None: ...
    @property
    def secret_access_key(self) -> SecretStr | None: ...
    @property
    def session_token(self) -> SecretStr | None: ...
    @property
    def connect_timeout_s(self) -> float: ...
    @property
    def read_timeout_s(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...


def _reveal(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def boto_client(
    service: str, connection: AwsConnection, *, verify: bool | None = None, **options: Any
) -> Any:
    """A boto3 client for ``service`` over ``connection``, with standard-mode retries and its timeouts.

    ``options`` are further botocore ``Config`` settings (S3 addressing, pool size). ``verify=None`` leaves TLS
    verification to boto3's own configuration (e.g. ``AWS_CA_BUNDLE``); a bool overrides it.
    """
    session = boto3.session.Session(
        aws_access_key_id=_reveal(connection.access_key_id),
        aws_secret_access_key=_reveal(connection.secret_access_key),
        aws_session_token=_reveal(connection.session_token),
        region_name=connection.region,
    )
    return session.client(
        service,
        endpoint_url=connection.endpoint_url,
        verify=verify,
        config=BotoConfig(
            retries={"max_attempts": connection.max_attempts, "mode": "standard"},
            connect_timeout=connection.connect_timeout_s,
            read_timeout=connection.read_timeout_s,
            **options,
        ),
    )


def error_code(error: ClientError) -> str:
    """The service's error code (``NoSuchKey``, ``DisabledException``...); empty if the response has none."""
    return str(error.response.get("Error", {}).get("Code", ""))


def http_status(error: ClientError) -> int:
    """The HTTP status of the failed response; 0 if unknown."""
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)

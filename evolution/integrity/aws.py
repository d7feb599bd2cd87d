"""A boto3 session from a backend's settings: explicit credentials when given, else boto3's default chain."""

from __future__ import annotations

from typing import Any

import boto3
from pydantic import SecretStr


def aws_session(
    *,
    region: str,
    access_key_id: SecretStr | None,
    secret_access_key: SecretStr | None,
    session_token: SecretStr | None,
) -> Any:
    def reveal(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return boto3.session.Session(
        aws_access_key_id=reveal(access_key_id),
        aws_secret_access_key=reveal(secret_access_key),
        aws_session_token=reveal(session_token),
        region_name=region,
    )

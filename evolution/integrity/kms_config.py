"""The KMS signer's settings: a section of the settings, so reading them loads neither boto3 nor the signer.

The signer itself is :mod:`evolution.integrity.kms_signing`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")


class KmsSignerConfig(BaseModel):
    """Which KMS key signs, and how to reach KMS. Exactly one of ``key_id`` and ``alias``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str | None = Field(
        default=None, max_length=2048, description="Key id, key ARN, alias name or alias ARN."
    )
    alias: str | None = Field(
        default=None, max_length=256, description="Alias, with or without 'alias/' (e.g. evolution-signing)."
    )
    region: str = Field(default="us-east-1", min_length=1, max_length=40)
    endpoint_url: str | None = Field(default=None, description="KMS endpoint; None: AWS KMS of the region.")
    access_key_id: SecretStr | None = Field(
        default=None, description="None: boto3's default credential chain."
    )
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    digest_signing: bool = Field(
        default=True,
        description="Sign a payload above KMS's 4096-byte RAW limit as MessageType DIGEST (its SHA-256), an "
        "ordinary ECDSA P-256/SHA-256 signature over the payload. False only for KMS emulators that hash a digest "
        "again (moto): those payloads are then signed through the prehash envelope, which model_signing cannot "
        "verify, so a model whose statement is that large gets no OpenSSF bundle.",
    )
    check_key_state: bool = Field(
        default=True,
        description="DescribeKey before every Sign, so a disabled key is refused with a clear error even by KMS "
        "emulators that do not enforce it (one extra request per signature).",
    )

    @field_validator("alias")
    @classmethod
    def _alias_name(cls, alias: str | None) -> str | None:
        if alias is None:
            return None
        full = alias if alias.startswith("alias/") else f"alias/{alias}"
        if not ALIAS.match(full) or full.startswith("alias/aws/"):
            raise ValueError(
                f"alias {alias!r} must match {ALIAS.pattern} and not be an AWS-managed alias/aws/"
            )
        return full

    @model_validator(mode="after")
    def _one_key(self) -> KmsSignerConfig:
        if (self.key_id is None) == (self.alias is None):
            raise ValueError("set exactly one of key_id and alias")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together: set both or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self

    @property
    def key_reference(self) -> str:
        """What is passed to KMS as KeyId: the key id/ARN, or ``alias/<name>``."""
        return self.key_id if self.key_id is not None else str(self.alias)

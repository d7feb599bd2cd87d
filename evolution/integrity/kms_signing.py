"""The production signer: an AWS KMS asymmetric key (ECC_NIST_P256, SIGN_VERIFY), signing ECDSA_SHA_256.

The private key never leaves KMS. The public key is exported once (GetPublicKey) when the signer is made and
cached, so every signature also verifies *offline* with ``cryptography`` through
:func:`~evolution.integrity.signing.verify_signature` and :class:`~evolution.integrity.signing.KeyRing`, under the
same key id scheme as every other public key (``ecdsa-p256:<16 hex of sha256(X9.62 point)>``). Each
:class:`Signature` also records the KMS key ARN in ``key_ref`` (informational; trust goes by ``key_id``).

Signing is pinned to the key ARN resolved when the signer was made, so re-pointing an alias later does not
silently change which key signs. Before each signature the key's state is read (DescribeKey): a disabled key, or
one pending deletion, is refused with :class:`SigningKeyUnavailable` naming the key (AWS itself also refuses,
with DisabledException / KMSInvalidStateException, which map to the same error). Every signature KMS returns is
verified against the cached public key before it is handed out.

Payloads up to 4096 bytes (KMS's RAW limit) go to KMS as MessageType RAW. A larger one (or an empty one, which
RAW refuses) goes as MessageType DIGEST: its SHA-256, which KMS signs without hashing again, so the signature is an
ordinary ECDSA P-256/SHA-256 signature over the payload — nothing is capped at 4096 bytes, and a DSSE envelope of any
size (:mod:`evolution.integrity.model_signature`) verifies with ``model_signing``. KMS emulators that hash a DIGEST
message again (moto) are configured with ``digest_signing = false``: a large payload is then signed RAW through a
fixed prefix and its SHA-256 (``Signature.prehash = "sha256"``, see
:func:`~evolution.integrity.signing.signed_message`), which our verifier checks just the same (signatures made that
way before keep verifying), but which is no DSSE signature.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from evolution.errors import Conflict, EvolutionError, IntegrityViolation, InvalidInput
from evolution.integrity.aws import boto_client, error_code
from evolution.integrity.kms_config import ALIAS, KmsSignerConfig
from evolution.integrity.signing import Signature, key_id_for_public_pem, signed_message, verify_signature
from evolution.observability.checks import CheckResult

logger = logging.getLogger(__name__)

KEY_SPEC = "ECC_NIST_P256"
KEY_USAGE = "SIGN_VERIFY"
SIGNING_ALGORITHM = "ECDSA_SHA_256"
MAX_RAW_MESSAGE = 4096
# Errors that say "this key cannot sign" (as opposed to throttling, timeouts, 5xx: those stay transient).
_KEY_ERRORS = {
    "NotFoundException": "does not exist (or is not visible to these credentials)",
    "DisabledException": "is disabled",
    "KMSInvalidStateException": "is not in a state that allows signing (disabled, pending deletion or import)",
    "InvalidKeyUsageException": "is not a SIGN_VERIFY key",
    "AccessDeniedException": "may not be used by these credentials (kms:Sign / kms:GetPublicKey denied)",
    "IncorrectKeyException": "is not the expected key",
    "ValidationException": "was refused by KMS",
    "UnrecognizedClientException": "cannot be reached: KMS does not recognise these credentials",
    "InvalidSignatureException": "cannot be reached: KMS rejected the request signature (wrong secret key?)",
}


class SigningKeyUnavailable(EvolutionError):
    """The configured signing key cannot sign (missing, disabled, wrong type, access denied)."""

    error_type = "SigningKeyUnavailable"


def _key_error(error: ClientError, key: str) -> SigningKeyUnavailable | None:
    reason = _KEY_ERRORS.get(error_code(error))
    if reason is None:
        return None
    return SigningKeyUnavailable(f"KMS key {key} {reason} ({error_code(error)})")


def _describe(client: Any, key: str) -> dict[str, Any]:
    try:
        return dict(client.describe_key(KeyId=key)["KeyMetadata"])
    except ClientError as error:
        mapped = _key_error(error, key)
        if mapped is not None:
            raise mapped from None
        raise
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise SigningKeyUnavailable(
            f"KMS key {key} cannot be reached: no usable AWS credentials ({error})"
        ) from None


def _require_signing_key(meta: dict[str, Any], key: str) -> None:
    state = meta.get("KeyState", "Enabled" if meta.get("Enabled") else "Disabled")
    if state != "Enabled":
        named = key if meta.get("Arn") in (None, key) else f"{key} ({meta.get('Arn')})"
        raise SigningKeyUnavailable(f"KMS key {named} is {state}: it cannot sign")
    spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec")
    if spec != KEY_SPEC or meta.get("KeyUsage") != KEY_USAGE:
        raise SigningKeyUnavailable(
            f"KMS key {key} is {spec}/{meta.get('KeyUsage')}, not {KEY_SPEC}/{KEY_USAGE}: it cannot make "
            "ECDSA P-256 signatures"
        )
    algorithms = meta.get("SigningAlgorithms")
    if algorithms is not None and SIGNING_ALGORITHM not in algorithms:
        raise SigningKeyUnavailable(
            f"KMS key {key} does not offer {SIGNING_ALGORITHM} (it offers {algorithms})"
        )


def _export_public_pem(client: Any, key: str) -> bytes:
    try:
        der = client.get_public_key(KeyId=key)["PublicKey"]
    except ClientError as error:
        mapped = _key_error(error, key)
        if mapped is not None:
            raise mapped from None
        raise
    try:
        public = serialization.load_der_public_key(bytes(der))
    except (ValueError, TypeError) as error:
        raise IntegrityViolation(f"KMS key {key} returned an unreadable public key: {error}") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        raise SigningKeyUnavailable(
            f"KMS key {key}'s public key is a {type(public).__name__}, not ECDSA P-256"
        )
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class KmsSigner:
    """The Signer port over an AWS KMS ECC_NIST_P256 key. Making one contacts KMS (DescribeKey, GetPublicKey)."""

    algorithm: str = "ecdsa-p256-sha256"

    def __init__(
        self, client: Any, key: str, *, check_state: bool = True, digest_signing: bool = True
    ) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidInput("KMS key reference must be a non-empty key id, key ARN, alias or alias ARN")
        self.client = client
        self.key_reference = key
        self.check_state = check_state
        self.digest_signing = digest_signing
        meta = _describe(client, key)
        _require_signing_key(meta, key)
        self.key_arn: str = str(meta.get("Arn") or meta["KeyId"])
        self._public_pem = _export_public_pem(client, self.key_arn)
        self.key_id: str = key_id_for_public_pem(self._public_pem)
        logger.info("KMS signer ready: key %s (%s)", self.key_arn, self.key_id)

    @classmethod
    def from_config(cls, config: KmsSignerConfig, *, client: Any | None = None) -> KmsSigner:
        return cls(
            client if client is not None else boto_client("kms", config),
            config.key_reference,
            check_state=config.check_key_state,
            digest_signing=config.digest_signing,
        )

    def public_key_pem(self) -> bytes:
        return self._public_pem

    def sign(self, payload: bytes) -> Signature:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InvalidInput(f"payload to sign must be bytes, not {type(payload).__name__}")
        payload = bytes(payload)
        if self.check_state:
            _require_signing_key(_describe(self.client, self.key_arn), self.key_arn)
        prehash: Literal["sha256"] | None = None
        if 0 < len(payload) <= MAX_RAW_MESSAGE:
            message, message_type = payload, "RAW"
        elif self.digest_signing:  # KMS takes at most 4096 bytes RAW, and none empty
            message, message_type = hashlib.sha256(payload).digest(), "DIGEST"
        else:
            prehash = "sha256"
            message, message_type = signed_message(payload, prehash), "RAW"
        try:
            response = self.client.sign(
                KeyId=self.key_arn,
                Message=message,
                MessageType=message_type,
                SigningAlgorithm=SIGNING_ALGORITHM,
            )
        except ClientError as error:
            mapped = _key_error(error, self.key_arn)
            if mapped is not None:
                raise mapped from None
            raise
        signature = Signature(
            algorithm="ecdsa-p256-sha256",
            key_id=self.key_id,
            value=base64.b64encode(bytes(response["Signature"])).decode("ascii"),
            key_ref=self.key_arn,
            prehash=prehash,
        )
        try:
            verify_signature(self._public_pem, payload, signature)
        except IntegrityViolation:
            raise IntegrityViolation(
                f"KMS key {self.key_arn} returned a signature that does not verify with its exported public "
                f"key {self.key_id} (MessageType {message_type}); refusing to use it"
            ) from None
        return signature

    def check(self) -> list[CheckResult]:
        large = (
            "MessageType DIGEST (OpenSSF model signatures of any size)"
            if self.digest_signing
            else "prehash envelope (digest_signing=false): no OpenSSF model signature above 4096 bytes"
        )
        return [
            *check_kms_key(self.client, self.key_arn),
            CheckResult("kms payloads above 4096 bytes", True, large),
        ]

    def __repr__(self) -> str:
        return f"KmsSigner(key_id={self.key_id!r}, key_arn={self.key_arn!r})"


def check_kms_key(client: Any, key: str) -> list[CheckResult]:
    """For ``evolution doctor``: KMS reachable, the key exists, is enabled, and is a P-256 signing key."""
    results: list[CheckResult] = []
    try:
        meta = dict(client.describe_key(KeyId=key)["KeyMetadata"])
    except ClientError as error:
        results.append(CheckResult("kms reachable", True, "KMS answered"))
        mapped = _key_error(error, key)
        results.append(
            CheckResult("kms key exists", False, str(mapped) if mapped else f"{error_code(error)}: {error}")
        )
        return results
    except (NoCredentialsError, PartialCredentialsError) as error:
        results.append(CheckResult("kms reachable", False, f"no usable AWS credentials: {error}"))
        return results
    except BotoCoreError as error:
        results.append(CheckResult("kms reachable", False, f"cannot reach KMS: {error}"))
        return results
    results.append(CheckResult("kms reachable", True, "KMS answered"))
    results.append(CheckResult("kms key exists", True, str(meta.get("Arn"))))
    state = str(meta.get("KeyState", "Enabled" if meta.get("Enabled") else "Disabled"))
    results.append(CheckResult("kms key enabled", state == "Enabled", f"state {state}"))
    spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec")
    usage = meta.get("KeyUsage")
    algorithms = meta.get("SigningAlgorithms") or []
    spec_ok = spec == KEY_SPEC and usage == KEY_USAGE and SIGNING_ALGORITHM in algorithms
    results.append(
        CheckResult("kms key type", spec_ok, f"{spec}/{usage}, algorithms {', '.join(algorithms) or 'none'}")
    )
    if state == "Enabled" and spec_ok:
        try:
            results.append(
                CheckResult("kms public key", True, key_id_for_public_pem(_export_public_pem(client, key)))
            )
        except (EvolutionError, ClientError, BotoCoreError) as error:
            results.append(CheckResult("kms public key", False, str(error)))
    return results


def check_kms(config: KmsSignerConfig) -> list[CheckResult]:
    """:func:`check_kms_key` for a configuration (works even when the key is unusable)."""
    return check_kms_key(boto_client("kms", config), config.key_reference)


def create_signing_key(
    client: Any, alias: str, *, description: str = "Controlled Evolution signing key"
) -> str:
    """Set-up: an ECC_NIST_P256 SIGN_VERIFY key under ``alias``; returns its ARN. Idempotent.

    If the alias already names a usable signing key, that key's ARN is returned; if it names anything else,
    :class:`Conflict`.
    """
    full = alias if alias.startswith("alias/") else f"alias/{alias}"
    if not ALIAS.match(full) or full.startswith("alias/aws/"):
        raise InvalidInput(f"alias {alias!r} must match {ALIAS.pattern} and not be an AWS-managed alias/aws/")
    try:
        existing = client.describe_key(KeyId=full)["KeyMetadata"]
    except ClientError as error:
        if error_code(error) != "NotFoundException":
            raise
    else:
        try:
            _require_signing_key(dict(existing), full)
        except SigningKeyUnavailable as problem:
            raise Conflict(f"alias {full} already exists and names an unusable key: {problem}") from None
        return str(existing["Arn"])
    created = client.create_key(KeySpec=KEY_SPEC, KeyUsage=KEY_USAGE, Description=description)["KeyMetadata"]
    try:
        client.create_alias(AliasName=full, TargetKeyId=created["KeyId"])
    except ClientError as error:
        try:  # do not leave an orphan key behind (7 days is the shortest waiting period KMS allows)
            client.schedule_key_deletion(KeyId=created["KeyId"], PendingWindowInDays=7)
        except ClientError:
            logger.warning("could not schedule deletion of orphan KMS key %s", created["Arn"])
        if error_code(error) == "AlreadyExistsException":  # a concurrent set-up won: use its key
            return create_signing_key(client, full, description=description)
        raise
    logger.info("created KMS signing key %s as %s", created["Arn"], full)
    return str(created["Arn"])

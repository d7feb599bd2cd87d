"""A KMS stand-in that signs MessageType DIGEST the way AWS KMS does (moto hashes the digest again).

It holds a P-256 key of its own and answers DescribeKey, GetPublicKey and Sign like KMS for an ECC_NIST_P256
SIGN_VERIFY key: RAW messages are hashed with SHA-256 and signed; DIGEST messages are signed as the digest they
are. Every Sign request is recorded, so a test can see which message type went out.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

ARN = "arn:aws:kms:us-east-1:000000000000:key/digest-stand-in"


class DigestKms:
    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.sent: list[dict[str, Any]] = []

    def describe_key(self, KeyId: str) -> dict[str, Any]:
        return {
            "KeyMetadata": {
                "KeyId": "digest-stand-in",
                "Arn": ARN,
                "KeyState": "Enabled",
                "KeySpec": "ECC_NIST_P256",
                "KeyUsage": "SIGN_VERIFY",
                "SigningAlgorithms": ["ECDSA_SHA_256"],
            }
        }

    def get_public_key(self, KeyId: str) -> dict[str, Any]:
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"PublicKey": der}

    def sign(self, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str) -> dict[str, Any]:
        self.sent.append(
            {"MessageType": MessageType, "Message": Message, "SigningAlgorithm": SigningAlgorithm}
        )
        assert SigningAlgorithm == "ECDSA_SHA_256"
        if MessageType == "DIGEST":
            assert len(Message) == 32, "KMS takes a DIGEST of exactly the hash's length"
            signature = self.private.sign(Message, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        else:
            assert 0 < len(Message) <= 4096, "KMS takes at most 4096 bytes RAW"
            signature = self.private.sign(Message, ec.ECDSA(hashes.SHA256()))
        return {"Signature": signature, "KeyId": ARN, "SigningAlgorithm": SigningAlgorithm}

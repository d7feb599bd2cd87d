"""The system's signing keys as an operator handles them: rotate the local key (audited), export a public key.

The key signs for every tenant, so only an admin of every tenant may change what is trusted (MANAGE_TENANT on
"*": the tenant admin's permission, over all of them). Rotation is audited in the all-tenants ("*") chain: who, when, why, the key
that retired and the one that signs from now on. The new key is made first, in memory; the row naming it is
appended; only then are the key files changed, just before the transaction commits. A failure before leaves neither
a row nor a new key; only a failed commit itself could leave a rotation without its row. A KMS key is rotated in KMS
(docs/production.md).
"""

from __future__ import annotations

from sqlalchemy import text

from evolution.errors import IntegrityViolation, InvalidInput
from evolution.integrity.key_rotation import Rotation, apply_rotation, keep_verify_only, prepare_rotation
from evolution.integrity.signing import algorithm_for_public_pem
from evolution.platform.wiring import Services
from evolution.registry.audit import append_audit
from evolution.registry.db import transaction
from evolution.security import ALL_TENANTS, Action, Principal, authorize
from evolution.timeutil import utcnow


def rotate_signing_key(services: Services, principal: Principal, reason: str = "") -> Rotation:
    """A new local ECDSA P-256 signing key; the previous one stays trusted for verification only."""
    authorize(principal, Action.MANAGE_TENANT, ALL_TENANTS)
    if services.settings.signer_backend != "local":
        raise InvalidInput(
            "the signer is AWS KMS: rotate its key in KMS and point EVOLUTION_KMS__KEY_ID (or the alias) at the new "
            "key; keep the old key's public key trusted with `evolution keys trust` (docs/production.md)"
        )
    with transaction(services.factory, ALL_TENANTS) as session:
        if session.get_bind().dialect.name == "postgresql":
            # "*" has no tenants row for append_audit to lock: serialise its chain with an advisory lock.
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext('evolution-audit-all-tenants'))"))
        rotation, private_pem = prepare_rotation(services.settings.keys_dir)
        append_audit(
            session,
            tenant_id=ALL_TENANTS,
            principal=principal,
            action="signing-key.rotated",
            subject_type="signing_key",
            subject_id=rotation.key_id,
            at=utcnow(),
            details={
                "previous_key_id": rotation.previous_key_id,
                "previous_algorithm": rotation.previous_algorithm,
                "algorithm": rotation.algorithm,
                "previous_key": "verify-only",
                "reason": reason,
            },
        )
        session.flush()
        apply_rotation(services.settings.keys_dir, rotation, private_pem)
    return rotation


def trust_public_key(
    services: Services, principal: Principal, public_key_pem: bytes, reason: str = ""
) -> str:
    """Trust a public key for verification only (a retired KMS key, a key moved from another home); audited.
    Returns its key id."""
    authorize(principal, Action.MANAGE_TENANT, ALL_TENANTS)
    try:
        algorithm = algorithm_for_public_pem(public_key_pem)
    except IntegrityViolation as error:
        raise InvalidInput(str(error)) from None
    with transaction(services.factory, ALL_TENANTS) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext('evolution-audit-all-tenants'))"))
        key_id = keep_verify_only(services.settings.keys_dir, public_key_pem)
        append_audit(
            session,
            tenant_id=ALL_TENANTS,
            principal=principal,
            action="signing-key.trusted",
            subject_type="signing_key",
            subject_id=key_id,
            at=utcnow(),
            details={"algorithm": algorithm, "status": "verify-only", "reason": reason},
        )
    return key_id

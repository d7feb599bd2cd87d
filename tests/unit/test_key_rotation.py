"""Key rotation: a home whose Ed25519 key signed before keeps verifying it after `evolution keys rotate` makes a new
ECDSA P-256 signing key (audited in the all-tenants chain); the old key is verify-only, named by id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evolution.errors import IntegrityViolation, PermissionDenied
from evolution.integrity.key_rotation import (
    VERIFY_ONLY_DIR,
    rotate_local_key,
    trusted_keyring,
    verify_only_keys,
)
from evolution.integrity.signing import LocalEd25519Signer, LocalSigner
from evolution.platform.settings import Settings
from evolution.platform.signing_keys import rotate_signing_key
from evolution.platform.wiring import Services, build_services
from evolution.security import ALL_TENANTS, Principal, Role

PAYLOAD = b'{"model":"yield","version":3}'
ADMIN = Principal(user="maria", role=Role.ADMIN, tenants=(ALL_TENANTS,))


@pytest.fixture
def home_with_ed25519_key(tmp_path: Path) -> Iterator[Services]:
    """A home made before ECDSA P-256: its signing key is Ed25519."""
    home = tmp_path / "home"
    LocalEd25519Signer(home / "keys")
    svc = build_services(Settings(home=home))
    yield svc
    svc.close()


def test_old_signatures_verify_after_rotation_and_the_new_key_signs(home_with_ed25519_key: Services) -> None:
    svc = home_with_ed25519_key
    keys_dir = svc.settings.keys_dir
    old = svc.signer
    assert old.algorithm == "ed25519"
    signed_before = old.sign(PAYLOAD)

    rotation = rotate_signing_key(svc, ADMIN, reason="move to P-256")
    assert (rotation.previous_key_id, rotation.previous_algorithm) == (old.key_id, "ed25519")

    new = LocalSigner(keys_dir)
    assert (new.key_id, new.algorithm) == (rotation.key_id, "ecdsa-p256-sha256")
    signed_after = new.sign(PAYLOAD)
    ring = trusted_keyring(new, keys_dir)
    ring.verify(PAYLOAD, signed_before)  # by the retired key, named in the signature
    ring.verify(PAYLOAD, signed_after)
    assert set(verify_only_keys(keys_dir)) == {old.key_id}
    assert old.key_id not in {LocalSigner(keys_dir).key_id}, "the old key signs nothing more"
    assert b"PRIVATE" not in b"".join(p.read_bytes() for p in (keys_dir / VERIFY_ONLY_DIR).iterdir())

    entries = svc.registry.audit_trail(ADMIN, ALL_TENANTS)
    rotated = [e for e in entries if e.action == "signing-key.rotated"]
    assert len(rotated) == 1 and rotated[0].actor == "maria"
    assert rotated[0].details["previous_key_id"] == old.key_id and rotated[0].subject_id == new.key_id
    assert svc.registry.verify_audit(ADMIN, ALL_TENANTS).ok


def test_a_second_rotation_keeps_both_retired_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = LocalSigner(keys)
    a = first.sign(PAYLOAD)
    rotate_local_key(keys)
    b = LocalSigner(keys).sign(PAYLOAD)
    rotate_local_key(keys)
    ring = trusted_keyring(LocalSigner(keys), keys)
    ring.verify(PAYLOAD, a)
    ring.verify(PAYLOAD, b)
    assert len(ring) == 3
    assert (keys / "signing.key").stat().st_mode & 0o777 == 0o600


def test_a_process_running_before_a_rotation_trusts_the_new_key_without_a_restart(tmp_path: Path) -> None:
    """The worker's ring was built before `evolution keys rotate` ran in another process; what a new process signs
    with the new key (a CLI seal, say) must verify in the worker, or the worker quarantines it."""
    keys = tmp_path / "keys"
    running = LocalSigner(keys)
    ring = trusted_keyring(running, keys)
    rotate_local_key(keys)  # by another process
    signed_by_the_new_key = LocalSigner(keys).sign(PAYLOAD)
    ring.verify(PAYLOAD, signed_by_the_new_key)
    ring.verify(PAYLOAD, running.sign(PAYLOAD))  # the old key, verify-only now, still verifies
    assert len(ring) == 2
    forged = signed_by_the_new_key.model_copy(update={"key_id": "ecdsa-p256:0000000000000000"})
    with pytest.raises(IntegrityViolation, match="is not a trusted key"):
        ring.verify(PAYLOAD, forged)


def test_a_verify_only_file_holding_another_key_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    rotation = rotate_local_key(keys)
    retired = keys / VERIFY_ONLY_DIR / (rotation.previous_key_id.replace(":", "-") + ".pem")
    retired.chmod(0o600)
    retired.write_bytes(LocalSigner(tmp_path / "other").public_key_pem())
    with pytest.raises(IntegrityViolation, match="not the one its name says"):
        verify_only_keys(keys)


def test_only_an_admin_of_every_tenant_may_rotate(home_with_ed25519_key: Services) -> None:
    before = home_with_ed25519_key.signer.key_id
    for principal in (
        Principal(user="tom", role=Role.ADMIN, tenants=("acme",)),
        Principal(user="ann", role=Role.MANAGER, tenants=(ALL_TENANTS,)),
    ):
        with pytest.raises(PermissionDenied):
            rotate_signing_key(home_with_ed25519_key, principal)
    assert LocalSigner(home_with_ed25519_key.settings.keys_dir).key_id == before

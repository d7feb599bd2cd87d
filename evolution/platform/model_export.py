"""`evolution model export`: a model version's files under their manifest names, and its OpenSSF signature.

The files are read through the same checks as a load (the manifest's signature, the bundle's, every file's digest
and size) before one byte is written, so an export never hands out what the registry would refuse. The directory
then holds exactly the signed files and ``model.sig``, which ``model_signing verify key`` checks with the signing
key's public key (``evolution keys export-public``): nothing of ours is needed to verify a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from evolution.errors import InvalidInput, NotFound
from evolution.integrity.manifest import SignedManifest, verify_model_files
from evolution.integrity.model_signature import SIGNATURE_FILE, bundle_json
from evolution.lifecycle import ModelState, VersionView
from evolution.platform.wiring import Services
from evolution.security import Principal


@dataclass(frozen=True)
class Export:
    version: VersionView
    directory: Path
    files: list[str]
    key_id: str
    """The key that signed the bundle (its public key: ``evolution keys export-public FILE --key-id KEY_ID``)."""


def find_version(
    services: Services, principal: Principal, tenant: str, model: str, version: str
) -> VersionView:
    """Version ``version`` of the model: a number, or ``champion`` for the one in force."""
    versions = services.registry.list_versions(principal, tenant, model, strict=True)
    if version.lower() == "champion":
        found = [v for v in versions if v.state == ModelState.CHAMPION]
        if not found:
            raise NotFound(f"{tenant}/{model} has no CHAMPION")
        return found[0]
    if not version.isdigit():
        raise InvalidInput(f"version {version!r}: give a version number or 'champion'")
    for view in versions:
        if view.number == int(version):
            return view
    raise NotFound(f"{tenant}/{model} has no version {version}")


def _empty_target(directory: Path) -> Path:
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise InvalidInput(f"{directory} is not a directory")
    if directory.exists() and any(directory.iterdir()):
        raise InvalidInput(f"{directory} is not empty: export into a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def export_model(
    services: Services, principal: Principal, tenant: str, model: str, version: str, directory: Path
) -> Export:
    view = find_version(services, principal, tenant, model, version)
    if not view.manifest:
        raise NotFound(f"{tenant}/{model} v{view.number} has no signed manifest: {view.why_no_manifest()}")
    signed = SignedManifest.model_validate(view.manifest)
    if signed.bundle is None:
        raise NotFound(
            f"{tenant}/{model} v{view.number} has no OpenSSF model signature: it was signed by "
            f"{signed.signature.key_id} ({signed.signature.algorithm}) before versions got one, or by a key "
            "model_signing cannot verify; a version trained from now on has one"
        )
    files = verify_model_files(signed, services.store, tenant, services.keyring)  # checks the bundle too
    target = _empty_target(directory)
    for name, data in files.items():
        _write_new(target / name, data)
    _write_new(target / SIGNATURE_FILE, bundle_json(signed.bundle).encode())
    key_id = signed.bundle["dsseEnvelope"]["signatures"][0]["keyid"]
    return Export(version=view, directory=target, files=sorted(files), key_id=str(key_id))

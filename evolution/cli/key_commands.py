"""`evolution keys`: the system's signing keys — export a public key, rotate the local key, trust a retired one.

Every signature names its key by id. ``rotate`` makes a new ECDSA P-256 signing key and keeps the previous one as
verify-only, so what it signed keeps verifying; it is audited in the all-tenants chain. ``export-public`` writes
the PEM that ``model_signing verify key --public_key`` takes (docs/production.md, "Signing keys").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evolution.cli.context import echo_json, friendly_errors, operator, services
from evolution.errors import InvalidInput

keys_app = typer.Typer(
    help="The signing keys: export a public key (for model_signing), rotate the local key, trust a retired one.",
    no_args_is_help=True,
)


def _write_public(path: Path, pem: bytes) -> None:
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory: give a file name, e.g. {path / 'signing-key.pem'}")
    path.write_bytes(pem)


@keys_app.command("export-public")
@friendly_errors
def export_public(
    file: Annotated[Path, typer.Argument(help="Where to write the public key (PEM, SubjectPublicKeyInfo).")],
    key_id: Annotated[
        str | None,
        typer.Option("--key-id", help="A trusted key's id (default: the key that signs now)."),
    ] = None,
) -> None:
    """Write the signing key's public key as PEM, for `model_signing verify key --public_key FILE`."""
    svc = services()
    try:
        chosen = key_id or svc.signer.key_id
        if chosen not in svc.keyring:
            raise InvalidInput(f"key {chosen!r} is not a trusted key here (see `evolution keys list`)")
        _write_public(file, svc.keyring.public_key_pem(chosen))
        typer.echo(f"wrote the public key {chosen} to {file}")
    finally:
        svc.close()


@keys_app.command("list")
@friendly_errors
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print the keys as JSON.")] = False,
) -> None:
    """The key that signs now and every verify-only key."""
    from evolution.integrity.signing import algorithm_for_public_pem

    svc = services()
    try:
        keys = [
            {
                "key_id": key_id,
                "algorithm": algorithm_for_public_pem(svc.keyring.public_key_pem(key_id)),
                "status": "signing" if key_id == svc.signer.key_id else "verify-only",
            }
            for key_id in svc.keyring
        ]
    finally:
        svc.close()
    if as_json:
        echo_json(keys)
        return
    for key in keys:
        typer.echo(f"{key['key_id']}  {key['algorithm']}  {key['status']}")


@keys_app.command("rotate")
@friendly_errors
def rotate(
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")] = "",
) -> None:
    """Admin of every tenant: a new local ECDSA P-256 signing key; the previous key stays trusted, verify-only.
    Audited. Restart running processes (worker, serving) so they sign with the new key."""
    from evolution.platform.signing_keys import rotate_signing_key

    svc = services()
    try:
        rotation = rotate_signing_key(svc, operator(svc.settings), reason)
        typer.echo(f"signing key: {rotation.key_id} ({rotation.algorithm})")
        typer.echo(f"verify-only: {rotation.previous_key_id} ({rotation.previous_algorithm})")
        typer.echo("restart the worker and serving processes so they sign with the new key")
    finally:
        svc.close()


@keys_app.command("trust")
@friendly_errors
def trust(
    file: Annotated[Path, typer.Argument(help="A public key (PEM) to trust for verification only.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")] = "",
) -> None:
    """Admin of every tenant: trust a public key for verification only (a retired KMS key); audited."""
    from evolution.platform.signing_keys import trust_public_key

    try:
        pem = file.read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read {file}: {error.strerror}") from None
    svc = services()
    try:
        key_id = trust_public_key(svc, operator(svc.settings), pem, reason)
        typer.echo(f"verify-only: {key_id}")
    finally:
        svc.close()


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")

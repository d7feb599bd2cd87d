"""What ``evolution versions --lineage`` and ``evolution verify --reproduce`` print."""

from __future__ import annotations

from typing import Any

import typer

from evolution.cli.context import EXIT_FAILURE, run_async
from evolution.errors import IntegrityViolation, InvalidInput
from evolution.integrity.trainer_identity import TrainerIdentity
from evolution.lifecycle import VersionView
from evolution.platform.reproduction import Lineage, lineage_of, reproduce
from evolution.platform.wiring import Services
from evolution.security import Principal


def print_lineage(services: Services, versions: list[VersionView]) -> None:
    """Per version: the snapshot and its root, the seed, the trainer's identity and the config's digest."""
    for version in versions:
        typer.echo(
            f"{version.model_name} v{version.number}  {version.state.value}  "
            f"model_hash {version.model_hash or '-'}"
        )
        try:
            lineage = lineage_of(services, version)
        except InvalidInput as untrained:
            typer.echo(f"  {untrained}")
            continue
        except IntegrityViolation as broken:
            typer.echo(f"  SIGNATURE OR MANIFEST DOES NOT VERIFY: {broken}")
            continue
        for line in lineage_lines(lineage):
            typer.echo(f"  {line}")


def lineage_json(services: Services, version: VersionView) -> dict[str, Any]:
    """What `versions --lineage --json` prints per version: the same facts as the text, or why there are none."""
    head: dict[str, Any] = {
        "model_name": version.model_name,
        "version": version.number,
        "state": version.state.value,
        "model_hash": version.model_hash,
    }
    try:
        lineage = lineage_of(services, version)
    except InvalidInput as untrained:
        return {**head, "verified": None, "problem": str(untrained)}
    except IntegrityViolation as broken:
        return {**head, "verified": False, "problem": str(broken)}
    manifest = lineage.signed.manifest
    identity = lineage.identity
    return {
        **head,
        "verified": True,
        "snapshot_id": manifest.dataset_snapshot_id,
        "merkle_root": manifest.dataset_merkle_root,
        "seed": manifest.seed,
        "trainer": manifest.trainer,
        "trainer_identity": identity.model_dump(mode="json") if identity is not None else None,
        "config_sha256": lineage.config_digest,
        "manifest_schema": manifest.schema_,
        "signed_by": lineage.signed.signature.key_id,
    }


def lineage_lines(lineage: Lineage) -> list[str]:
    manifest = lineage.signed.manifest
    lines = [
        f"snapshot  {manifest.dataset_snapshot_id}  merkle root {manifest.dataset_merkle_root}",
        f"seed      {manifest.seed}",
        f"trainer   {_trainer(lineage.identity, manifest.trainer)}",
    ]
    identity = lineage.identity
    if identity is not None:
        if identity.image_digest:
            lines.append(f"image     {identity.image_digest}")
        lines.extend(f"code      {code.path}  sha256 {code.sha256}" for code in identity.code_files)
        if identity.contract:
            lines.append(f"contract  {identity.contract}")
    lines.append(f"config    sha256 {lineage.config_digest}")
    lines.append(f"manifest  {manifest.schema_}, signed by {lineage.signed.signature.key_id} (verified)")
    return lines


def _trainer(identity: TrainerIdentity | None, name: str) -> str:
    if identity is None:
        return f"{name} (manifest v1: no trainer identity recorded)"
    return identity.describe()


def run_reproduction(services: Services, principal: Principal, tenant: str, model: str, number: int) -> None:
    """Re-run the version's trainer; exit 0 when every digest matches, 1 naming what differs or stopped it."""
    reproduction = run_async(reproduce(services, principal, tenant, model, number))
    identity = reproduction.lineage.identity
    trainer = identity.describe() if identity else "?"
    # A changed code file (never run) or a trainer that failed: no digests to compare.
    if reproduction.refused:
        typer.echo(f"{model} v{number}: not reproduced ({trainer}):")
        for reason in reproduction.refused:
            typer.echo(f"  {reason}")
        raise typer.Exit(EXIT_FAILURE)
    typer.echo(f"{model} v{number}: re-ran {trainer}")
    for name, (signed, again) in sorted(reproduction.compared.items()):
        same = "same" if signed == again else "DIFFERS"
        typer.echo(f"  {name}: {same}  signed {signed or '(none)'}  reproduced {again or '(none)'}")
    if reproduction.matched:
        typer.echo("reproduced: digests match")
        return
    typer.echo(f"not reproduced: {', '.join(reproduction.differing)} differ")
    raise typer.Exit(EXIT_FAILURE)

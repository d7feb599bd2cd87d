"""`evolution restore` as one service call: restore a backup, acknowledge a restore to an earlier point, verify.

A registry restored to an earlier point is shorter than the audit checkpoints the write-once store kept from after
that point, which ``verify`` rightly reports as truncations. The operator restoring on purpose says so here: for
each tenant whose chain lies behind such checkpoints, a signed, audited restore acknowledgement
(:meth:`~evolution.registry.audit_checkpoints.AuditCheckpointer.acknowledge_restore`) names the backup and the
point restored to. Only checkpoints signed *after* that point are acknowledged this way: one signed before it
covers entries the restored registry should hold, so the chain was already truncated when the backup was taken,
and that is left for ``verify`` to report (and for ``evolution audit acknowledge-restore``, once someone has looked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from evolution.backup.manifest import Part, Progress, no_progress
from evolution.backup.restore import RestoreResult, restore_backup
from evolution.errors import EvolutionError
from evolution.integrity.artifacts import ArtifactStore
from evolution.platform.settings import Settings
from evolution.platform.verification import VerificationReport, verify_all
from evolution.platform.wiring import Services, build_services
from evolution.progress import ProgressMeter
from evolution.registry.audit_checkpoints import Acknowledged
from evolution.security import Principal
from evolution.timeutil import as_utc


@dataclass(frozen=True)
class TenantAcknowledgement:
    """One tenant whose chain lay behind stored checkpoints: acknowledged, or why not."""

    tenant_id: str
    acknowledged: Acknowledged | None = None
    refused: str | None = None


@dataclass
class RestoreOutcome:
    result: RestoreResult
    acknowledgements: list[TenantAcknowledgement]
    report: VerificationReport


def restored_point(result: RestoreResult) -> datetime | None:
    """The latest time whose commits the restored registry holds, as far as the restore can tell."""
    registry = result.backup.registry
    if registry is None or "registry" not in result.parts:
        return None
    if result.postgres is None:  # SQLite: exactly the backup's snapshot
        return as_utc(registry.consistent_at)
    if result.target_time is not None:
        return as_utc(result.target_time)
    if result.postgres.last_transaction_at is not None:
        return as_utc(result.postgres.last_transaction_at)
    return as_utc(registry.consistent_at)


def acknowledge_restored(
    services: Services, principal: Principal, result: RestoreResult
) -> list[TenantAcknowledgement]:
    """Acknowledge the restore for every tenant whose chain lies behind a stored checkpoint; see the module docs."""
    point = restored_point(result)
    if point is None:
        return []
    checkpointer = services.audit_checkpoints
    reason = (
        f"evolution restore of backup {result.backup.backup_id} to {result.recovery_target}: the checkpoints "
        "signed after that point belong to the history the restore gave up"
    )
    outcome = []
    for tenant_id in services.tenants.tenant_ids():
        if not checkpointer.pending_restore(tenant_id).needed:
            continue
        try:
            acknowledged = checkpointer.acknowledge_restore(
                principal,
                tenant_id,
                reason,
                backup_id=result.backup.backup_id,
                restored_to=result.recovery_target,
                signed_after=point,
            )
        except EvolutionError as error:
            outcome.append(TenantAcknowledgement(tenant_id, refused=str(error)))
        else:
            outcome.append(TenantAcknowledgement(tenant_id, acknowledged=acknowledged))
    return outcome


def restore_and_verify(
    settings: Settings,
    source: Path,
    *,
    store: ArtifactStore,
    principal: Principal,
    acknowledge: bool = True,
    parts: Sequence[Part] | None = None,
    to_time: datetime | None = None,
    overwrite: bool = False,
    pg_data_dir: Path | None = None,
    wal_archive: Path | None = None,
    pg_socket_dir: Path | None = None,
    pg_settings: Mapping[str, str] | None = None,
    signer_key_id: str | None = None,
    progress: Progress = no_progress,
    meter: ProgressMeter | None = None,
) -> RestoreOutcome:
    """:func:`~evolution.backup.restore.restore_backup`, then (unless ``acknowledge`` is off) the restore
    acknowledgements, then ``verify`` of the whole restored home. A PostgreSQL server it recovered keeps running."""
    result = restore_backup(
        settings,
        source,
        store=store,
        parts=parts,
        to_time=to_time,
        overwrite=overwrite,
        pg_data_dir=pg_data_dir,
        wal_archive=wal_archive,
        pg_socket_dir=pg_socket_dir,
        pg_settings=pg_settings,
        signer_key_id=signer_key_id,
        progress=progress,
        meter=meter,
    )
    services = build_services(settings)
    try:
        acknowledgements = acknowledge_restored(services, principal, result) if acknowledge else []
        progress("verify: re-checking every signature, Merkle root and audit chain …")
        report = verify_all(services, meter=meter)
    finally:
        services.close()
    return RestoreOutcome(result=result, acknowledgements=acknowledgements, report=report)

"""`evolution verify`: re-check every signature, Merkle root and audit chain, and every stored object, tenant by tenant.

Each result is a :class:`Check`. A failed check fails ``verify``; an *orphan* (a stored object nothing references,
see :mod:`evolution.platform.stored_objects`) is reported on a line of its own and does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from pydantic import BaseModel

from evolution.errors import EvolutionError
from evolution.governance.garbage_collection import gc_history, verify_collected_version
from evolution.governance.retention import COLLECTABLE_STATES
from evolution.platform.stored_objects import check_stored_objects
from evolution.platform.wiring import Services
from evolution.progress import ProgressMeter, metered
from evolution.registry.audit_checkpoints import AuditCheckpointer
from evolution.security import ALL_TENANTS, Principal, Role

AUDITOR = "system:verify"


class Check(BaseModel):
    tenant_id: str
    kind: str
    subject: str
    ok: bool
    detail: str = ""
    orphan: bool = False
    """A stored object nothing references: reported, not a failure (``ok`` stays True)."""


class VerificationReport(BaseModel):
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def orphans(self) -> list[Check]:
        return [c for c in self.checks if c.orphan]


def verify_all(
    services: Services, tenants: Iterable[str] | None = None, *, meter: ProgressMeter | None = None
) -> VerificationReport:
    """``meter``: per tenant, a task over its signed records (snapshots, reports, resets, versions) and one over
    the objects its store holds (the longest part on a large store: each object is read and hashed)."""
    checks: list[Check] = []
    for tenant_id in tenants or services.tenants.tenant_ids():
        checks.extend(verify_tenant(services, tenant_id, meter=meter))
    if tenants is None:
        checks.extend(_all_tenants_chain(services))
    return VerificationReport(checks=checks)


def _all_tenants_chain(services: Services) -> list[Check]:
    """Grants on every tenant ("*") are audited in a chain of their own; walk it when it exists."""
    auditor = Principal(user=AUDITOR, role=Role.SYSTEM, tenants=(ALL_TENANTS,))
    chain = services.registry.verify_audit(auditor, ALL_TENANTS)
    if chain.entries == 0:
        return []
    detail = "; ".join(chain.problems[:5]) or f"head {chain.head_hash[:16]}"
    return [
        Check(
            tenant_id=ALL_TENANTS,
            kind="audit-chain",
            subject=f"{chain.entries} entries",
            ok=chain.ok,
            detail=detail,
        )
    ]


def verify_tenant(services: Services, tenant_id: str, *, meter: ProgressMeter | None = None) -> list[Check]:
    """The audit chain and its checkpoints, every snapshot, drift report, baseline reset and version, then every
    stored object (``meter``: a task over the records, then one over the objects)."""
    auditor = Principal(user=AUDITOR, role=Role.SYSTEM, tenants=(tenant_id,))
    checks: list[Check] = []

    chain = services.registry.verify_audit(auditor, tenant_id)
    checks.append(
        Check(
            tenant_id=tenant_id,
            kind="audit-chain",
            subject=f"{chain.entries} entries",
            ok=chain.ok,
            detail="; ".join(chain.problems[:5]) or f"head {chain.head_hash[:16]}",
        )
    )
    checks.append(_audit_checkpoints(services, tenant_id))
    records = _record_checks(services, tenant_id, auditor)
    with metered(meter, f"verify {tenant_id}: signed records", len(records)) as advance:
        for kind, subject, check in records:
            checks.append(_run(tenant_id, kind, subject, check))
            advance(1)
    checks.extend(_stored_objects(services, tenant_id, auditor, meter))
    return checks


def _record_checks(
    services: Services, tenant_id: str, auditor: Principal
) -> list[tuple[str, str, Callable[[], object]]]:
    """(kind, subject, the check) for every snapshot, drift report, baseline reset and version with a manifest."""
    planned: list[tuple[str, str, Callable[[], object]]] = []
    for snapshot in services.snapshots.list_snapshots(auditor, tenant_id):
        planned.append(
            ("snapshot", snapshot.id, partial(services.snapshots.verify, snapshot, services.keyring))
        )
    for report in services.drift_reports.list_reports(auditor, tenant_id, limit=100_000):
        planned.append(
            ("drift-report", report.id, partial(services.drift_reports.verify, report, services.keyring))
        )
    for model_name, raw in services.tenants.tenant_settings(auditor, tenant_id).baseline_overrides.items():
        champion = raw.get("champion_version_id", "")
        planned.append(
            (
                "baseline-reset",
                f"{model_name} (champion {champion})",
                partial(services.baselines.effective, tenant_id, model_name, champion, services.keyring),
            )
        )
    collected = gc_history(services.factory, tenant_id)
    for version in services.registry.list_versions(auditor, tenant_id):
        if version.manifest is None:
            continue
        label = f"{version.model_name} v{version.number} ({version.state})"
        if collected.digests and version.state in COLLECTABLE_STATES:
            # Files a gc.collected audit row names may be gone; every other file must still verify.
            if version.id in collected.versions:
                label = f"{version.model_name} v{version.number} ({version.state}, artifacts collected)"
            planned.append(
                (
                    "model",
                    label,
                    partial(
                        verify_collected_version, version, services.store, services.keyring, collected.digests
                    ),
                )
            )
            continue
        planned.append(("model", label, partial(services.loader.verify, version)))
    return planned


def _stored_objects(
    services: Services, tenant_id: str, auditor: Principal, meter: ProgressMeter | None = None
) -> list[Check]:
    """One line for the store as a whole, then one per object that failed and one per orphan, each naming it."""
    try:
        found = check_stored_objects(services, tenant_id, auditor, meter=meter)
    except EvolutionError as error:
        return [
            Check(
                tenant_id=tenant_id,
                kind="stored-objects",
                subject="artifact store",
                ok=False,
                detail=str(error),
            )
        ]
    if found.failures:
        detail = f"{len(found.failures)} of {found.objects} failed (each on its own line)"
    else:
        detail = f"{found.digests} by digest, {found.named} named: each hashes to its name and matches what was signed"
    if found.orphans_not_sought:
        detail += f"; orphans not looked for: {found.orphans_not_sought}"
    checks = [
        Check(
            tenant_id=tenant_id,
            kind="stored-objects",
            subject=f"{found.objects} objects",
            ok=not found.failures,
            detail=detail,
        )
    ]
    checks.extend(
        Check(tenant_id=tenant_id, kind="stored-object", subject=f.name, ok=False, detail=f.detail)
        for f in found.failures
    )
    checks.extend(
        Check(
            tenant_id=tenant_id, kind="stored-object", subject=f.name, ok=True, orphan=True, detail=f.detail
        )
        for f in found.orphans
    )
    return checks


def _audit_checkpoints(services: Services, tenant_id: str) -> Check:
    """Every signed checkpoint of the chain holds (a truncated or wholly rewritten chain fails here); when all
    holds, the current head is checkpointed too, so the next run catches what happens from now on."""
    checkpointer = AuditCheckpointer(services.factory, services.store, services.signer, services.keyring)
    try:
        report = checkpointer.verify(tenant_id, write=True)
    except EvolutionError as error:
        return Check(
            tenant_id=tenant_id, kind="audit-checkpoints", subject="checkpoints", ok=False, detail=str(error)
        )
    detail = "; ".join(report.problems[:5])
    if not detail:
        written = f", new checkpoint at {report.written}" if report.written else ""
        superseded = (
            f"; {report.superseded} superseded by {report.acknowledgements} acknowledged restore(s)"
            if report.superseded
            else ""
        )
        detail = f"latest at {report.latest_size} of {report.entries} entries{written}{superseded}"
    return Check(
        tenant_id=tenant_id,
        kind="audit-checkpoints",
        subject=f"{report.checkpoints} checkpoints",
        ok=report.ok,
        detail=detail,
    )


def _run(tenant_id: str, kind: str, subject: str, check: Callable[[], object]) -> Check:
    try:
        check()
    except EvolutionError as error:
        return Check(tenant_id=tenant_id, kind=kind, subject=subject, ok=False, detail=str(error))
    return Check(tenant_id=tenant_id, kind=kind, subject=subject, ok=True)

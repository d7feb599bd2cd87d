"""Garbage collection of model-version artifacts (scheduled daily as ``gc/{tenant}``): the retention policy applied.

:class:`RetentionService` reads the facts, prints nothing and, when asked to execute, deletes through the
:class:`ArtifactStore` port, one version per transaction: under the tenant's lock it re-reads the facts, re-plans
with the same clock (:func:`~evolution.governance.retention.plan_retention`) and deletes only what both plans agree
on, then appends one ``gc.collected`` audit row naming the digests and bytes. A second run finds the digests gone
and deletes nothing. While a version of the tenant is TRAINING nothing is collected: a training stores its files
before the registry knows them, and a byte-identical retrain would share a candidate's digests.

``evolution verify`` accepts a DRAFT/FAILED version whose missing files a ``gc.collected`` row accounts for
(:func:`verify_collected_version`); a file missing without such a row is still an integrity failure.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import EvolutionError, IntegrityViolation, NotFound
from evolution.governance.retention import (
    COLLECTABLE_STATES,
    GC_ACTION,
    KEEP_LAST,
    MIN_AGE,
    PlanEntry,
    RetentionFacts,
    RetentionPlan,
    VersionFacts,
    check_parameters,
    collectable_digests,
    plan_retention,
    version_artifacts,
    version_label,
)
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.manifest import SignedManifest, verify_manifest
from evolution.integrity.signing import KeyRing
from evolution.lifecycle import ModelState, VersionView
from evolution.progress import ProgressMeter, metered
from evolution.registry.audit import append_audit, lock_tenant_chain
from evolution.registry.db import reading, transaction
from evolution.registry.schema import AuditEntry, DatasetSnapshot, DriftReport, ModelVersion, Tenant
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, iso, utcnow

log = logging.getLogger(__name__)


def read_facts(session: Session, tenant_id: str) -> RetentionFacts:
    """One tenant's versions, champion history, references and GC history, as the session sees them."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id!r} does not exist")
    ever_champion = set(
        session.scalars(
            select(AuditEntry.subject_id)
            .where(
                AuditEntry.tenant_id == tenant_id,
                AuditEntry.subject_type == "model_version",
                AuditEntry.to_state == ModelState.CHAMPION.value,
            )
            .distinct()
        )
    )
    versions = []
    for row in session.scalars(select(ModelVersion).where(ModelVersion.tenant_id == tenant_id)):
        artifacts, problem = version_artifacts(row.manifest)
        versions.append(
            VersionFacts(
                id=row.id,
                model_name=row.model_name,
                number=row.number,
                state=ModelState(row.state),
                created_at=as_utc(row.created_at),
                updated_at=as_utc(row.updated_at),
                was_champion=bool(row.was_champion) or row.id in ever_champion,
                artifacts=artifacts,
                manifest_problem=problem,
            )
        )
    referenced: dict[str, str] = {}
    for snapshot_id, digest in session.execute(
        select(DatasetSnapshot.id, DatasetSnapshot.artifact_digest).where(
            DatasetSnapshot.tenant_id == tenant_id
        )
    ):
        referenced.setdefault(digest, f"dataset snapshot {snapshot_id}")
    for report_id, digest in session.execute(
        select(DriftReport.id, DriftReport.report_digest).where(DriftReport.tenant_id == tenant_id)
    ):
        referenced.setdefault(digest, f"drift report {report_id}")
    overrides = (tenant.config or {}).get("baseline_overrides") or {}
    for model_name, override in overrides.items() if isinstance(overrides, dict) else []:
        baseline = override.get("digest") if isinstance(override, dict) else None
        if isinstance(baseline, str):
            referenced.setdefault(baseline, f"the reset baseline of {model_name}")
    return RetentionFacts(
        tenant_id=tenant_id,
        versions=versions,
        referenced=referenced,
        collected=_history(session, tenant_id).digests,
    )


class GcHistory(BaseModel):
    """What the tenant's ``gc.collected`` audit rows say: every digest deleted, and the versions collected."""

    digests: set[str] = Field(default_factory=set)
    versions: set[str] = Field(default_factory=set)


def _history(session: Session, tenant_id: str) -> GcHistory:
    history = GcHistory()
    for subject_id, details in session.execute(
        select(AuditEntry.subject_id, AuditEntry.details).where(
            AuditEntry.tenant_id == tenant_id, AuditEntry.action == GC_ACTION
        )
    ):
        history.versions.add(subject_id)
        listed = (details or {}).get("digests")
        if isinstance(listed, list):
            history.digests.update(d for d in listed if isinstance(d, str))
    return history


def gc_history(factory: sessionmaker[Session], tenant_id: str) -> GcHistory:
    """The tenant's collection history, from its audit trail (for ``evolution verify``)."""
    with reading(factory, tenant_id) as session:
        return _history(session, tenant_id)


# --------------------------------------------------------------------------------------------- the service
class CollectedVersion(BaseModel):
    version_id: str
    model_name: str
    number: int
    state: ModelState
    digests: list[str]
    bytes: int = Field(description="bytes the store actually released for this version")
    audit_seq: int


class GcReport(BaseModel):
    tenant_id: str
    dry_run: bool
    plan: RetentionPlan
    collected: list[CollectedVersion] = Field(default_factory=list)
    left_alone: list[str] = Field(default_factory=list, description="planned, but changed before collection")
    errors: list[str] = Field(default_factory=list)

    @property
    def artifacts_deleted(self) -> int:
        return sum(len(c.digests) for c in self.collected)

    @property
    def bytes_deleted(self) -> int:
        return sum(c.bytes for c in self.collected)


Progress = Callable[[str], None]


class RetentionService:
    """Plans and runs the collection of one tenant's model-version artifacts."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        *,
        keep_last: int = KEEP_LAST,
        min_age: timedelta = MIN_AGE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        check_parameters(keep_last, min_age)
        self._factory = factory
        self._store = store
        self._keep_last = keep_last
        self._min_age = min_age
        self._clock = clock

    def plan(self, principal: Principal, tenant_id: str, model_name: str | None = None) -> RetentionPlan:
        """What a collection would delete now, and what it keeps and why (reads only)."""
        authorize(principal, Action.VIEW, tenant_id)
        as_of = self._clock()
        with reading(self._factory, tenant_id) as session:
            facts = read_facts(session, tenant_id)
        if model_name is not None and not any(v.model_name == model_name for v in facts.versions):
            raise NotFound(f"tenant {tenant_id!r} has no versions of model {model_name!r}")
        wanted = collectable_digests(
            facts, as_of=as_of, model_name=model_name, keep_last=self._keep_last, min_age=self._min_age
        )
        present = {d for d in sorted(wanted) if self._store.exists(tenant_id, d)}
        return self._plan(facts, as_of, present, model_name)

    def run(
        self,
        principal: Principal,
        tenant_id: str,
        model_name: str | None = None,
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
        meter: ProgressMeter | None = None,
    ) -> GcReport:
        """Plan, and unless ``dry_run``, collect what the plan says (see :meth:`execute`)."""
        if not dry_run:
            authorize(principal, Action.TRANSITION, tenant_id)
        plan = self.plan(principal, tenant_id, model_name)
        if dry_run:
            return GcReport(tenant_id=tenant_id, dry_run=True, plan=plan)
        return self.execute(principal, plan, progress=progress, meter=meter)

    def execute(
        self,
        principal: Principal,
        plan: RetentionPlan,
        progress: Progress | None = None,
        meter: ProgressMeter | None = None,
    ) -> GcReport:
        """Delete the plan's entries, version by version, each re-checked under the tenant's lock.

        Deletes only what a fresh plan, made in the same transaction with the same clock, still collects; one
        ``gc.collected`` audit row per version. A store error stops the run after recording what was deleted.
        ``meter``: a task over the plan's artifacts, advanced a version at a time.
        """
        tenant_id = plan.tenant_id
        authorize(principal, Action.TRANSITION, tenant_id)
        report = GcReport(tenant_id=tenant_id, dry_run=False, plan=plan)
        if plan.deferred:
            return report
        by_version: dict[str, list[PlanEntry]] = defaultdict(list)
        for entry in plan.entries:
            by_version[entry.version_id].append(entry)
        with metered(meter, f"gc {tenant_id}", len(plan.entries)) as advance:
            for version_id, entries in by_version.items():
                self._collect_version(principal, plan, version_id, entries, report, progress)
                advance(len(entries))
        return report

    def _collect_version(
        self,
        principal: Principal,
        plan: RetentionPlan,
        version_id: str,
        entries: list[PlanEntry],
        report: GcReport,
        progress: Progress | None,
    ) -> None:
        """One version of the plan collected (or left alone, or failed), as ``report`` records it."""
        tenant_id = plan.tenant_id
        label = version_label(entries[0])
        try:
            collected, note = self._collect(principal, plan, version_id, entries)
        except EvolutionError as error:
            report.errors.append(f"{label}: {error}")
            log.warning("gc of %s/%s failed: %s", tenant_id, label, error, extra={"tenantId": tenant_id})
            return
        if collected is not None:
            report.collected.append(collected)
            log.info(
                "gc collected %s/%s: %d artifacts, %d bytes",
                tenant_id,
                label,
                len(collected.digests),
                collected.bytes,
                extra={"tenantId": tenant_id},
            )
        if note:
            report.left_alone.append(f"{label}: {note}")
        if progress is not None:
            progress(f"{label}: {'collected' if collected else note}")

    # ----------------------------------------------------------------------------------------- internals
    def _plan(
        self, facts: RetentionFacts, as_of: datetime, present: Collection[str], model_name: str | None
    ) -> RetentionPlan:
        return plan_retention(
            facts,
            as_of=as_of,
            present=present,
            model_name=model_name,
            keep_last=self._keep_last,
            min_age=self._min_age,
        )

    def _collect(
        self, principal: Principal, plan: RetentionPlan, version_id: str, planned: list[PlanEntry]
    ) -> tuple[CollectedVersion | None, str | None]:
        tenant_id = plan.tenant_id
        # Never later than now: a plan cannot age versions faster than the clock does.
        as_of = min(as_utc(plan.as_of), self._clock())
        wanted = {e.digest for e in planned}
        failure: Exception | None = None
        with transaction(self._factory, tenant_id) as session:
            lock_tenant_chain(session, tenant_id)  # no transition of this tenant can interleave from here
            facts = read_facts(session, tenant_id)
            present = {d for d in sorted(wanted) if self._store.exists(tenant_id, d)}
            fresh = self._plan(facts, as_of, present, plan.model_name)
            todo = [e for e in fresh.entries if e.version_id == version_id and e.digest in wanted]
            if not todo:
                decision = next((d for d in fresh.versions if d.version_id == version_id), None)
                why = fresh.deferred or ("; ".join(decision.reasons) if decision else "no longer exists")
                return None, f"left alone, it changed since the plan ({why})"
            deleted: list[str] = []
            freed = 0
            for entry in todo:
                try:
                    if self._store.delete(tenant_id, entry.digest):
                        freed += entry.bytes
                except Exception as error:  # record what is already gone, then report the failure
                    failure = error
                    break
                deleted.append(entry.digest)
            collected = None
            if deleted:
                first = todo[0]
                row = append_audit(
                    session,
                    tenant_id=tenant_id,
                    principal=principal,
                    action=GC_ACTION,
                    subject_type="model_version",
                    subject_id=version_id,
                    at=self._clock(),
                    details={
                        "model_name": first.model_name,
                        "number": first.number,
                        "state": first.state.value,
                        "digests": deleted,
                        "bytes": freed,
                        "plan_as_of": iso(plan.as_of),
                    },
                )
                collected = CollectedVersion(
                    version_id=version_id,
                    model_name=first.model_name,
                    number=first.number,
                    state=first.state,
                    digests=deleted,
                    bytes=freed,
                    audit_seq=row.seq,
                )
        if failure is not None:
            raise failure
        return collected, None


# --------------------------------------------------------------------------------------------- verification
def verify_collected_version(
    version: VersionView, store: ArtifactStore, keyring: KeyRing, accounted: Collection[str]
) -> int:
    """Verify a DRAFT/FAILED version some of whose files GC may have deleted; returns how many it deleted.

    The signed manifest must verify as always; each file must be in the store and match its digest and size,
    or be missing with a ``gc.collected`` row (``accounted``) naming its digest. Anything else raises.
    """
    if version.state not in COLLECTABLE_STATES:
        raise IntegrityViolation(f"model version {version.id} is {version.state}: GC never collects it")
    if not version.manifest:
        raise IntegrityViolation(f"model version {version.id} has no signed manifest")
    try:
        signed = SignedManifest.model_validate(version.manifest)
    except ValueError as error:
        raise IntegrityViolation(
            f"model version {version.id}: the signed manifest is malformed: {error}"
        ) from None
    if version.model_hash and signed.digest != version.model_hash:
        raise IntegrityViolation(
            f"model version {version.id}: manifest digest differs from the recorded model hash"
        )
    verify_manifest(signed, keyring)
    if signed.manifest.tenant != version.tenant_id:
        raise IntegrityViolation(
            f"model manifest is for tenant {signed.manifest.tenant!r}, recorded for {version.tenant_id!r}"
        )
    gone = 0
    for entry in signed.manifest.files:
        if not store.exists(version.tenant_id, entry.sha256):
            if entry.sha256 in accounted:
                gone += 1
                continue
            raise IntegrityViolation(
                f"model file {entry.name!r} ({entry.sha256[:16]}…) is missing and no {GC_ACTION} audit row "
                "accounts for it"
            )
        data = store.read_bytes(version.tenant_id, entry.sha256)  # re-hashes: IntegrityViolation if altered
        if len(data) != entry.size:
            raise IntegrityViolation(
                f"model file {entry.name!r} is {len(data)} bytes, the manifest says {entry.size}"
            )
    return gone

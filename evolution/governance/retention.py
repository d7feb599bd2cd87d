"""Retention and garbage collection of model-version artifacts (scheduled daily as ``gc/{tenant}``).

What is kept, per tenant and model: the last :data:`KEEP_LAST` versions by number, every version that is or ever
was CHAMPION (the ``was_champion`` flag or a transition to CHAMPION in the audit trail), every version in any state
but DRAFT and FAILED (live, deprecated or quarantined: a person or the system may still need it), and every version
that changed less than :data:`MIN_AGE` ago. What is left — DRAFT/FAILED versions older than that — are the
candidates; their artifacts are the files their signed manifest lists plus the stored signed manifest itself.

Artifacts are content-addressed, so one digest can belong to several versions and to other records: a candidate's
digest is spared when any kept version (of any model), a dataset snapshot, a drift report or a signed baseline
reset references it. Named objects (audit checkpoints) are never touched: they are not digests.

:func:`plan_retention` is the pure policy: facts in, a :class:`RetentionPlan` out. :class:`RetentionService` reads
the facts, prints nothing and, when asked to execute, deletes through the :class:`ArtifactStore` port, one version
per transaction: under the tenant's lock it re-reads the facts, re-plans with the same clock and deletes only what
both plans agree on, then appends one ``gc.collected`` audit row naming the digests and bytes. A second run finds
the digests gone and deletes nothing. While a version of the tenant is TRAINING nothing is collected: a training
stores its files before the registry knows them, and a byte-identical retrain would share a candidate's digests.

``evolution verify`` accepts a DRAFT/FAILED version whose missing files a ``gc.collected`` row accounts for
(:func:`verify_collected_version`); a file missing without such a row is still an integrity failure.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import EvolutionError, IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import DIGEST_PATTERN, ArtifactStore
from evolution.integrity.manifest import SignedManifest, verify_manifest
from evolution.integrity.signing import KeyRing
from evolution.lifecycle import ModelState, VersionView
from evolution.registry.audit import append_audit, lock_tenant_chain
from evolution.registry.db import reading, transaction
from evolution.registry.schema import AuditEntry, DatasetSnapshot, DriftReport, ModelVersion, Tenant
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, iso, utcnow

log = logging.getLogger(__name__)

KEEP_LAST = 5
"""Versions kept per tenant and model, by number, whatever their state."""
MIN_AGE = timedelta(days=7)
"""A DRAFT/FAILED version's artifacts are kept until it has not changed for this long."""
COLLECTABLE_STATES = frozenset({ModelState.DRAFT, ModelState.FAILED})
GC_ACTION = "gc.collected"
SIGNED_MANIFEST = "signed manifest"

_STATE_REASONS = {
    ModelState.TRAINING: "live (TRAINING)",
    ModelState.VALIDATED: "live (VALIDATED)",
    ModelState.SHADOW: "live (SHADOW)",
    ModelState.CANARY: "live (CANARY)",
    ModelState.CHAMPION: "live (CHAMPION)",
    ModelState.DEPRECATED: "DEPRECATED (a former champion, restorable by rollback)",
    ModelState.QUARANTINED: "QUARANTINED (awaiting review)",
}


# --------------------------------------------------------------------------------------------- facts (inputs)
class Artifact(BaseModel):
    digest: str = Field(pattern=DIGEST_PATTERN.pattern)
    bytes: int = Field(ge=0)
    name: str


class VersionFacts(BaseModel):
    id: str
    model_name: str
    number: int
    state: ModelState
    created_at: datetime
    updated_at: datetime
    was_champion: bool = False
    artifacts: list[Artifact] = Field(default_factory=list)
    manifest_problem: str | None = Field(default=None, description="why its manifest could not be read")

    @property
    def changed_at(self) -> datetime:
        """When the version last changed (for a FAILED version: when it failed); never before it was made."""
        return max(as_utc(self.created_at), as_utc(self.updated_at))


class RetentionFacts(BaseModel):
    """Everything the policy needs about one tenant (every model: digests are shared across models)."""

    tenant_id: str
    versions: list[VersionFacts]
    referenced: dict[str, str] = Field(
        default_factory=dict, description="digest -> the snapshot, drift report or baseline that uses it"
    )
    collected: set[str] = Field(default_factory=set, description="digests listed by gc.collected rows")


# --------------------------------------------------------------------------------------------- the plan
class PlanEntry(BaseModel):
    """One artifact the collection deletes."""

    version_id: str
    model_name: str
    number: int
    state: ModelState
    age_days: float
    digest: str
    name: str
    bytes: int
    reason: str


class SparedArtifact(BaseModel):
    """A candidate's artifact that stays, because something kept references the same digest."""

    version_id: str
    model_name: str
    number: int
    digest: str
    name: str
    bytes: int
    reason: str


class VersionDecision(BaseModel):
    version_id: str
    model_name: str
    number: int
    state: ModelState
    age_days: float
    bytes: int = Field(description="bytes of all its recorded artifacts")
    decision: Literal["keep", "collect", "skip"]
    reasons: list[str]


class PlanTotals(BaseModel):
    versions: int = 0
    versions_kept: int = 0
    versions_collected: int = 0
    versions_skipped: int = 0
    artifacts_deleted: int = 0
    bytes_deleted: int = 0
    bytes_kept: int = Field(default=0, description="unique bytes of the kept versions' artifacts")
    artifacts_spared: int = 0
    bytes_spared: int = 0


class RetentionPlan(BaseModel):
    tenant_id: str
    model_name: str | None
    as_of: datetime
    keep_last: int
    min_age_days: float
    deferred: str | None = Field(default=None, description="why nothing is collected this time, if so")
    versions: list[VersionDecision]
    entries: list[PlanEntry]
    spared: list[SparedArtifact]
    totals: PlanTotals

    def decided(self, decision: str) -> list[VersionDecision]:
        return [v for v in self.versions if v.decision == decision]


def _age_days(as_of: datetime, version: VersionFacts) -> float:
    return round((as_utc(as_of) - version.changed_at).total_seconds() / 86400.0, 3)


def _label(version: VersionFacts | VersionDecision | PlanEntry) -> str:
    return f"{version.model_name} v{version.number}"


def _keep_reasons(
    version: VersionFacts, latest: set[str], as_of: datetime, keep_last: int, min_age: timedelta
) -> list[str]:
    reasons: list[str] = []
    if version.state not in COLLECTABLE_STATES:
        reasons.append(_STATE_REASONS.get(version.state, f"state {version.state}"))
    if version.was_champion:
        reasons.append("was CHAMPION")
    if version.id in latest:
        reasons.append(f"one of the last {keep_last} versions")
    age = as_utc(as_of) - version.changed_at
    if age < min_age:
        reasons.append(
            f"changed {age.total_seconds() / 86400:.1f} days ago (< {min_age.total_seconds() / 86400:g})"
        )
    if version.state in COLLECTABLE_STATES and version.manifest_problem:
        reasons.append(f"manifest unreadable ({version.manifest_problem}): left for `evolution verify`")
    return reasons


def _check_parameters(keep_last: int, min_age: timedelta) -> None:
    if keep_last < 1:
        raise InvalidInput(f"keep_last must be at least 1, not {keep_last}")
    if min_age < timedelta(0):
        raise InvalidInput(f"min_age must not be negative, not {min_age}")


def _eligible(
    facts: RetentionFacts, as_of: datetime, model_name: str | None, keep_last: int, min_age: timedelta
) -> tuple[list[VersionFacts], dict[str, list[str]]]:
    """The versions in scope (by model, number) and, for each, why it is kept (empty: a candidate)."""
    in_scope = sorted(
        (v for v in facts.versions if model_name is None or v.model_name == model_name),
        key=lambda v: (v.model_name, v.number),
    )
    by_model: dict[str, list[VersionFacts]] = defaultdict(list)
    for version in in_scope:
        by_model[version.model_name].append(version)
    latest = {v.id for versions in by_model.values() for v in versions[-keep_last:]}
    reasons = {v.id: _keep_reasons(v, latest, as_of, keep_last, min_age) for v in in_scope}
    return in_scope, reasons


def collectable_digests(
    facts: RetentionFacts,
    *,
    as_of: datetime,
    model_name: str | None = None,
    keep_last: int = KEEP_LAST,
    min_age: timedelta = MIN_AGE,
) -> set[str]:
    """The candidates' digests: the only ones whose presence in the store the plan needs to know."""
    _check_parameters(keep_last, min_age)
    in_scope, reasons = _eligible(facts, as_of, model_name, keep_last, min_age)
    return {a.digest for v in in_scope if not reasons[v.id] for a in v.artifacts}


def plan_retention(
    facts: RetentionFacts,
    *,
    as_of: datetime,
    present: Collection[str],
    model_name: str | None = None,
    keep_last: int = KEEP_LAST,
    min_age: timedelta = MIN_AGE,
) -> RetentionPlan:
    """What to keep and what to delete. ``present``: the candidates' digests the store still holds."""
    _check_parameters(keep_last, min_age)
    in_scope, keep = _eligible(facts, as_of, model_name, keep_last, min_age)
    in_scope_ids = {v.id for v in in_scope}
    candidates = [v for v in in_scope if not keep[v.id]]
    candidate_ids = {v.id for v in candidates}

    # Every digest something kept references, with the first reason found.
    protected: dict[str, str] = {}
    for version in sorted(facts.versions, key=lambda v: (v.model_name, v.number)):
        if version.id in candidate_ids:
            continue
        why = "kept" if version.id in in_scope_ids else "its model is not part of this run"
        for artifact in version.artifacts:
            protected.setdefault(artifact.digest, f"shared with {_label(version)} ({version.state}, {why})")
    for digest, what in facts.referenced.items():
        protected.setdefault(digest, f"referenced by {what}")

    training = [
        v for v in facts.versions if v.state == ModelState.TRAINING and as_utc(as_of) - v.changed_at < min_age
    ]
    deferred = None
    if training:
        busy = ", ".join(_label(v) for v in sorted(training, key=lambda v: (v.model_name, v.number)))
        deferred = (
            f"{busy} TRAINING: a training stores files before the registry lists them, and a candidate may "
            "share their digests; collection waits until no training is in progress"
        )

    decisions: list[VersionDecision] = []
    entries: list[PlanEntry] = []
    spared: list[SparedArtifact] = []
    claimed: set[str] = set()
    for version in in_scope:
        age = _age_days(as_of, version)
        size = sum(a.bytes for a in _unique(version.artifacts))
        base = {
            "version_id": version.id,
            "model_name": version.model_name,
            "number": version.number,
            "state": version.state,
            "age_days": age,
            "bytes": size,
        }
        if keep[version.id]:
            decisions.append(VersionDecision(**base, decision="keep", reasons=keep[version.id]))
            continue
        if deferred:
            decisions.append(VersionDecision(**base, decision="skip", reasons=[f"deferred: {deferred}"]))
            continue
        why = (
            f"{version.state} for {age:.1f} days (>= {min_age.total_seconds() / 86400:g}), "
            f"not among the last {keep_last}, never CHAMPION"
        )
        mine: list[PlanEntry] = []
        notes: list[str] = []
        for artifact in _unique(version.artifacts):
            if artifact.digest in protected:
                spared.append(
                    SparedArtifact(
                        version_id=version.id,
                        model_name=version.model_name,
                        number=version.number,
                        digest=artifact.digest,
                        name=artifact.name,
                        bytes=artifact.bytes,
                        reason=protected[artifact.digest],
                    )
                )
                notes.append(f"{artifact.name}: {protected[artifact.digest]}")
            elif artifact.digest in claimed:
                notes.append(f"{artifact.name}: shared with another version collected in this run")
            elif artifact.digest in present:
                claimed.add(artifact.digest)
                mine.append(
                    PlanEntry(
                        version_id=version.id,
                        model_name=version.model_name,
                        number=version.number,
                        state=version.state,
                        age_days=age,
                        digest=artifact.digest,
                        name=artifact.name,
                        bytes=artifact.bytes,
                        reason=why,
                    )
                )
            elif artifact.digest in facts.collected:
                notes.append(f"{artifact.name}: already collected")
            elif artifact.name != SIGNED_MANIFEST:
                notes.append(
                    f"{artifact.name}: missing, and not collected by GC (`evolution verify` reports it)"
                )
        entries.extend(mine)
        if mine:
            decisions.append(VersionDecision(**base, decision="collect", reasons=[why, *notes]))
        else:
            reasons = notes or ["no recorded artifacts"]
            decisions.append(VersionDecision(**base, decision="skip", reasons=reasons))

    kept_digests = {a.digest: a.bytes for v in in_scope if keep[v.id] for a in v.artifacts}
    spared_unique = {s.digest: s.bytes for s in spared}
    totals = PlanTotals(
        versions=len(decisions),
        versions_kept=sum(d.decision == "keep" for d in decisions),
        versions_collected=sum(d.decision == "collect" for d in decisions),
        versions_skipped=sum(d.decision == "skip" for d in decisions),
        artifacts_deleted=len(entries),
        bytes_deleted=sum(e.bytes for e in entries),
        bytes_kept=sum(kept_digests.values()),
        artifacts_spared=len(spared_unique),
        bytes_spared=sum(spared_unique.values()),
    )
    return RetentionPlan(
        tenant_id=facts.tenant_id,
        model_name=model_name,
        as_of=as_utc(as_of),
        keep_last=keep_last,
        min_age_days=min_age.total_seconds() / 86400.0,
        deferred=deferred,
        versions=decisions,
        entries=entries,
        spared=spared,
        totals=totals,
    )


def _unique(artifacts: Iterable[Artifact]) -> list[Artifact]:
    seen: set[str] = set()
    unique = []
    for artifact in artifacts:
        if artifact.digest not in seen:
            seen.add(artifact.digest)
            unique.append(artifact)
    return unique


# --------------------------------------------------------------------------------------------- reading facts
def version_artifacts(manifest: dict[str, Any] | None) -> tuple[list[Artifact], str | None]:
    """The artifacts a version's signed manifest names: its files, then the stored signed manifest itself.

    Returns ``(artifacts, problem)``. A malformed manifest still yields every file digest it mentions (so that a
    kept version protects them), with the problem named (so that such a version is never collected).
    """
    if not manifest:
        return [], None
    try:
        signed = SignedManifest.model_validate(manifest)
    except ValueError as error:
        return _lenient_artifacts(manifest), str(error).splitlines()[0][:200]
    artifacts = [Artifact(digest=f.sha256, bytes=f.size, name=f.name) for f in signed.manifest.files]
    blob = signed.model_dump_json(by_alias=True).encode()  # exactly what the training stored
    artifacts.append(Artifact(digest=hashlib.sha256(blob).hexdigest(), bytes=len(blob), name=SIGNED_MANIFEST))
    return artifacts, None


def _lenient_artifacts(manifest: dict[str, Any]) -> list[Artifact]:
    inner = manifest.get("manifest")
    files = inner.get("files") if isinstance(inner, dict) else None
    found = []
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, dict):
            continue
        digest, size = entry.get("sha256"), entry.get("size")
        if isinstance(digest, str) and DIGEST_PATTERN.match(digest):
            found.append(
                Artifact(
                    digest=digest,
                    bytes=size if isinstance(size, int) and size >= 0 else 0,
                    name=str(entry.get("name", "?")),
                )
            )
    return found


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
        _check_parameters(keep_last, min_age)
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
    ) -> GcReport:
        """Plan, and unless ``dry_run``, collect what the plan says (see :meth:`execute`)."""
        if not dry_run:
            authorize(principal, Action.TRANSITION, tenant_id)
        plan = self.plan(principal, tenant_id, model_name)
        if dry_run:
            return GcReport(tenant_id=tenant_id, dry_run=True, plan=plan)
        return self.execute(principal, plan, progress=progress)

    def execute(
        self, principal: Principal, plan: RetentionPlan, progress: Progress | None = None
    ) -> GcReport:
        """Delete the plan's entries, version by version, each re-checked under the tenant's lock.

        Deletes only what a fresh plan, made in the same transaction with the same clock, still collects; one
        ``gc.collected`` audit row per version. A store error stops the run after recording what was deleted.
        """
        tenant_id = plan.tenant_id
        authorize(principal, Action.TRANSITION, tenant_id)
        report = GcReport(tenant_id=tenant_id, dry_run=False, plan=plan)
        if plan.deferred:
            return report
        by_version: dict[str, list[PlanEntry]] = defaultdict(list)
        for entry in plan.entries:
            by_version[entry.version_id].append(entry)
        for version_id, entries in by_version.items():
            label = _label(entries[0])
            try:
                collected, note = self._collect(principal, plan, version_id, entries)
            except EvolutionError as error:
                report.errors.append(f"{label}: {error}")
                log.warning("gc of %s/%s failed: %s", tenant_id, label, error, extra={"tenantId": tenant_id})
                continue
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
        return report

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

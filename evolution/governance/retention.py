"""Retention policy for model-version artifacts: which versions keep their files and which may be collected (pure).

What is kept, per tenant and model: the last :data:`KEEP_LAST` versions by number, every version that is or ever
was CHAMPION (the ``was_champion`` flag or a transition to CHAMPION in the audit trail), every version in any state
but DRAFT and FAILED (live, deprecated or quarantined: a person or the system may still need it), and every version
that changed less than :data:`MIN_AGE` ago. What is left — DRAFT/FAILED versions older than that — are the
candidates; their artifacts are the files their signed manifest lists plus the stored signed manifest itself.

Artifacts are content-addressed, so one digest can belong to several versions and to other records: a candidate's
digest is spared when any kept version (of any model), a dataset snapshot, a drift report or a signed baseline
reset references it. Named objects (audit checkpoints) are never touched: they are not digests.

:func:`plan_retention` is the policy: facts in, a :class:`RetentionPlan` out, no I/O. Reading the facts and
deleting is :mod:`evolution.governance.garbage_collection`'s.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from evolution.errors import InvalidInput
from evolution.integrity.artifacts import DIGEST_PATTERN
from evolution.integrity.manifest import SignedManifest
from evolution.lifecycle import ModelState
from evolution.timeutil import as_utc

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


def version_label(version: VersionFacts | VersionDecision | PlanEntry) -> str:
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


def check_parameters(keep_last: int, min_age: timedelta) -> None:
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
    check_parameters(keep_last, min_age)
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
    check_parameters(keep_last, min_age)
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
            protected.setdefault(
                artifact.digest, f"shared with {version_label(version)} ({version.state}, {why})"
            )
    for digest, what in facts.referenced.items():
        protected.setdefault(digest, f"referenced by {what}")

    training = [
        v for v in facts.versions if v.state == ModelState.TRAINING and as_utc(as_of) - v.changed_at < min_age
    ]
    deferred = None
    if training:
        busy = ", ".join(version_label(v) for v in sorted(training, key=lambda v: (v.model_name, v.number)))
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

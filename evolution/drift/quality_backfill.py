"""Quality data for a baseline made before the data-quality checks: computed once from its snapshot, or said lacking.

A baseline frozen before statistics.md 1b has no support bounds or baseline counts for the checks (its features'
``quality`` is None). The first scan that meets it refits each such feature from the snapshot the baseline was
taken from (the champion's training snapshot, or a reset's snapshot) with the baseline's own frozen config, and keeps
the quality data only where the refit reproduces the frozen bins and counts exactly: that proves it is the same data.
The result is signed and recorded once per baseline (by the baseline's digest), audited as
``baseline.quality_computed``; when it cannot be computed (no snapshot recorded, the snapshot gone, nothing matches)
that is recorded and audited once too (``baseline.quality_unavailable``), and the checks report ``not_measured``
with ``baseline_lacks_quality_data``. Later scans read the record; they never recompute.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.data.snapshots import DatasetSnapshotService
from evolution.errors import EvolutionError, IntegrityViolation, NotFound
from evolution.integrity.signing import KeyRing, Signature, Signer
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import BaselineQualityRecord
from evolution.security import Principal
from evolution.stats.binning import fit_feature
from evolution.stats.drift_models import Baseline, FeatureBaseline
from evolution.stats.quality_models import FeatureQuality
from evolution.timeutil import as_utc, iso, utcnow
from evolution.training.candidates import labelled

log = logging.getLogger(__name__)
STATEMENT_SCHEMA = "controlled-evolution/baseline-quality/v1"


def baseline_digest(baseline: Baseline) -> str:
    """SHA-256 of the baseline as frozen (canonical JSON): what a recorded computation is for."""
    return hashlib.sha256(canonical_json(baseline.model_dump(mode="json"))).hexdigest()


def lacks_quality(baseline: Baseline) -> bool:
    return any(f.quality is None for f in baseline.features)


class BaselineQualityService:
    def __init__(
        self,
        factory: sessionmaker[Session],
        snapshots: DatasetSnapshotService,
        signer: Signer,
        keyring: KeyRing,
    ) -> None:
        self._factory = factory
        self._snapshots = snapshots
        self._signer = signer
        self._keyring = keyring

    def complete(
        self, tenant_id: str, model_name: str, baseline: Baseline, snapshot_id: str | None
    ) -> Baseline:
        """``baseline`` with the quality data its features lack, computed once from ``snapshot_id`` (see above)."""
        if not lacks_quality(baseline):
            return baseline
        digest = baseline_digest(baseline)
        with reading(self._factory, tenant_id) as session:
            record = _record(session, tenant_id, digest)
            if record is not None:
                return _filled(baseline, self._verified(record))
        quality, reason = self._compute(tenant_id, baseline, snapshot_id)
        self._record(tenant_id, model_name, digest, snapshot_id, quality, reason)
        with reading(self._factory, tenant_id) as session:
            record = _record(session, tenant_id, digest)
            assert record is not None
            return _filled(baseline, self._verified(record))

    def _compute(
        self, tenant_id: str, baseline: Baseline, snapshot_id: str | None
    ) -> tuple[dict[str, FeatureQuality], str]:
        lacking = [f for f in baseline.features if f.quality is None]
        if snapshot_id is None:
            return {}, "the baseline records no snapshot it was taken from"
        try:
            snapshot = self._snapshots.get(Principal.system(tenant_id), snapshot_id)
            rows = self._snapshots.load_rows(snapshot, self._keyring)
        except NotFound as error:
            return {}, f"its snapshot {snapshot_id} cannot be read: {error}"
        # A trained champion's baseline is of the labelled rows; a reset's of every row.
        candidates = [rows, labelled(rows)]
        found: dict[str, FeatureQuality] = {}
        for feature in lacking:
            for candidate in candidates:
                try:
                    refit = fit_feature(
                        feature.name, [r.get(feature.name) for r in candidate], baseline.config
                    )
                except EvolutionError:
                    continue
                if _same_bins(refit, feature) and refit.quality is not None:
                    found[feature.name] = refit.quality
                    break
        missed = [f.name for f in lacking if f.name not in found]
        reason = (
            f"computed from snapshot {snapshot_id}"
            if not missed
            else f"snapshot {snapshot_id} does not reproduce the frozen bins of {', '.join(missed)}"
        )
        return found, reason

    def _record(
        self,
        tenant_id: str,
        model_name: str,
        digest: str,
        snapshot_id: str | None,
        quality: dict[str, FeatureQuality],
        reason: str,
    ) -> None:
        system = Principal.system(tenant_id, "drift-scan")
        now = utcnow().replace(microsecond=0)
        body = {name: q.model_dump(mode="json") for name, q in sorted(quality.items())}
        quality_digest = hashlib.sha256(canonical_json(body)).hexdigest() if quality else None
        signature = (
            self._signer.sign(
                _statement(tenant_id, model_name, digest, snapshot_id, quality_digest, iso(now))
            )
            if quality_digest
            else None
        )
        status = "computed" if quality else "unavailable"
        try:
            with transaction(self._factory, tenant_id) as session:
                if _record(session, tenant_id, digest) is not None:
                    return
                session.add(
                    BaselineQualityRecord(
                        id=f"bq-{uuid.uuid4().hex[:20]}",
                        tenant_id=tenant_id,
                        model_name=model_name,
                        baseline_digest=digest,
                        snapshot_id=snapshot_id,
                        status=status,
                        quality=body if quality else None,
                        quality_digest=quality_digest,
                        signature=signature.model_dump(mode="json") if signature else None,
                        reason=reason,
                        created_at=now,
                    )
                )
                append_audit(
                    session,
                    tenant_id=tenant_id,
                    principal=system,
                    action=f"baseline.quality_{status}",
                    subject_type="baseline",
                    subject_id=digest,
                    at=now,
                    details={
                        "model_name": model_name,
                        "snapshot_id": snapshot_id,
                        "features": sorted(quality),
                        "reason": reason,
                    },
                )
        except IntegrityError:  # recorded at the same moment elsewhere: that record stands
            return
        log.info("baseline quality of %s: %s", model_name, reason, extra={"tenantId": tenant_id})

    def _verified(self, record: BaselineQualityRecord) -> dict[str, FeatureQuality]:
        if record.status != "computed" or record.quality is None:
            return {}
        body: dict[str, Any] = record.quality
        if (
            hashlib.sha256(canonical_json(body)).hexdigest() != record.quality_digest
            or record.signature is None
        ):
            raise IntegrityViolation(
                f"baseline quality record {record.id}: its data does not match its digest"
            )
        statement = _statement(
            record.tenant_id,
            record.model_name,
            record.baseline_digest,
            record.snapshot_id,
            record.quality_digest,
            iso(as_utc(record.created_at)),
        )
        self._keyring.verify(statement, Signature.model_validate(record.signature))
        try:
            return {name: FeatureQuality.model_validate(q) for name, q in body.items()}
        except ValueError as error:
            raise IntegrityViolation(f"baseline quality record {record.id} is malformed: {error}") from None


def _record(session: Session, tenant_id: str, digest: str) -> BaselineQualityRecord | None:
    return session.scalar(
        select(BaselineQualityRecord).where(
            BaselineQualityRecord.tenant_id == tenant_id, BaselineQualityRecord.baseline_digest == digest
        )
    )


def _same_bins(refit: FeatureBaseline, frozen: FeatureBaseline) -> bool:
    return (
        refit.kind == frozen.kind
        and refit.n == frozen.n
        and refit.counts == frozen.counts
        and refit.edges == frozen.edges
        and refit.categories == frozen.categories
        and refit.category_values == frozen.category_values
    )


def _filled(baseline: Baseline, quality: dict[str, FeatureQuality]) -> Baseline:
    if not quality:
        return baseline
    features = [
        f.model_copy(update={"quality": quality[f.name]}) if f.quality is None and f.name in quality else f
        for f in baseline.features
    ]
    return baseline.model_copy(update={"features": features})


def _statement(
    tenant_id: str,
    model_name: str,
    baseline_digest: str,
    snapshot_id: str | None,
    quality_digest: str | None,
    at: str,
) -> bytes:
    return canonical_json(
        {
            "schema": STATEMENT_SCHEMA,
            "tenant": tenant_id,
            "model_name": model_name,
            "baseline_digest": baseline_digest,
            "snapshot_id": snapshot_id,
            "quality_digest": quality_digest,
            "at": at,
        }
    )

"""DriftReportService: each scan becomes a canonical, signed, immutable JSON report."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.errors import IntegrityViolation
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.signing import KeyRing, Signature, Signer
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import DriftReport
from evolution.security import Action, Principal, authorize
from evolution.stats.drift_models import DriftResult
from evolution.timeutil import as_utc, iso, parse_iso, utcnow

REPORT_SCHEMA = "controlled-evolution/drift-report/v1"


class DriftReportView(BaseModel):
    id: str
    tenant_id: str
    model_name: str
    level: str
    window_start: datetime
    window_end: datetime
    report_digest: str
    signature: Signature
    report: dict[str, Any]

    def created_at_time(self) -> datetime:
        return parse_iso(self.report["created_at"])

    @classmethod
    def of(cls, row: DriftReport) -> DriftReportView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            model_name=row.model_name,
            level=row.level,
            window_start=as_utc(row.window_start),
            window_end=as_utc(row.window_end),
            report_digest=row.report_digest,
            signature=Signature.model_validate(row.signature),
            report=json.loads(row.report),
        )


def data_quality_summary(result: DriftResult) -> dict[str, Any]:
    """The report's ``data_quality`` section: the level and every firing check (reason code, counts, p)."""
    assert result.quality is not None
    return {
        "level": result.quality.level,
        "starts_retraining": False,
        "alerts": [
            {
                "feature": c.feature,
                "reason_code": c.check,
                "k": c.k,
                "m": c.m,
                "p_value": c.p_value,
                "p_adjusted": c.p_adjusted,
                "effect": c.effect,
                "floor": c.floor,
                "description": c.description,
            }
            for c in result.quality.alerts
        ],
    }


class DriftReportService:
    def __init__(self, factory: sessionmaker[Session], store: ArtifactStore, signer: Signer) -> None:
        self._factory = factory
        self._store = store
        self._signer = signer

    def write(
        self,
        principal: Principal,
        *,
        tenant_id: str,
        model_name: str,
        baseline_version_id: str,
        baseline_model_hash: str | None,
        snapshot_id: str,
        window_start: datetime,
        window_end: datetime,
        result: DriftResult,
    ) -> DriftReportView:
        authorize(principal, Action.WRITE_DRIFT_REPORT, tenant_id)
        report_id = f"dr-{uuid.uuid4().hex[:20]}"
        now = utcnow()
        document: dict[str, Any] = {
            "schema": REPORT_SCHEMA,
            "id": report_id,
            "tenant": tenant_id,
            "model_name": model_name,
            "created_at": iso(now),
            "baseline": {"model_version_id": baseline_version_id, "model_hash": baseline_model_hash},
            "window": {"snapshot_id": snapshot_id, "start": iso(window_start), "end": iso(window_end)},
            "method": {
                "psi": "sum((q-p) ln(q/p)), +0.5 smoothing per bin",
                "kl": result.kl_direction,
                "significance": "chi2 on PSI/(1/n+1/m), Benjamini-Hochberg across features",
                "mae": "ratio and Welch z on absolute errors",
            },
            "thresholds": result.config.model_dump(mode="json"),
            "level": result.level,
            "result": result.model_dump(mode="json"),
        }
        if result.quality is not None:
            # The data-quality verdict (statistics.md 1b) beside the drift level it never raises, and each firing
            # check with its reason code, counts and p: signed with the rest of the document.
            document["method"]["quality"] = result.quality.method
            document["data_quality"] = data_quality_summary(result)
        body = canonical_json(document)
        digest = hashlib.sha256(body).hexdigest()
        signature = self._signer.sign(body)
        self._store.put_bytes(tenant_id, body)
        with transaction(self._factory, tenant_id) as session:
            row = DriftReport(
                id=report_id,
                tenant_id=tenant_id,
                model_name=model_name,
                baseline_version_id=baseline_version_id,
                window_start=window_start,
                window_end=window_end,
                level=result.level,
                report=body.decode(),
                report_digest=digest,
                signature=signature.model_dump(mode="json"),
                created_at=now,
            )
            session.add(row)
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="drift.reported",
                subject_type="drift_report",
                subject_id=report_id,
                at=now,
                details={
                    "level": result.level,
                    "snapshot_id": snapshot_id,
                    **({"quality_level": result.quality.level} if result.quality is not None else {}),
                },
            )
            return DriftReportView.of(row)

    def list_reports(self, principal: Principal, tenant_id: str, limit: int = 100) -> list[DriftReportView]:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            rows = session.scalars(
                select(DriftReport)
                .where(DriftReport.tenant_id == tenant_id)
                .order_by(DriftReport.created_at.desc())
                .limit(limit)
            )
            return [DriftReportView.of(r) for r in rows]

    def for_snapshot(
        self, principal: Principal, tenant_id: str, model_name: str, snapshot_id: str, window_end: datetime
    ) -> DriftReportView | None:
        """The newest report on ``model_name`` over snapshot ``snapshot_id`` (which ends at ``window_end``)."""
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            rows = session.scalars(
                select(DriftReport)
                .where(
                    DriftReport.tenant_id == tenant_id,
                    DriftReport.model_name == model_name,
                    DriftReport.window_end == window_end,
                )
                .order_by(DriftReport.created_at.desc())
            )
            for row in rows:
                view = DriftReportView.of(row)
                if view.report["window"]["snapshot_id"] == snapshot_id:
                    return view
        return None

    @staticmethod
    def verify(row: DriftReportView, keyring: KeyRing) -> None:
        body = canonical_json(row.report)
        if hashlib.sha256(body).hexdigest() != row.report_digest:
            raise IntegrityViolation(f"drift report {row.id}: content does not match its digest")
        keyring.verify(body, row.signature)

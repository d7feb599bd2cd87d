"""Joins served predictions to the outcomes that arrive later as learning events (the canary's paired errors)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.registry.db import act_for_tenant, reading, transaction
from evolution.registry.schema import LearningEvent, Prediction
from evolution.security import Action, Principal, authorize


class PredictionRecord(BaseModel):
    id: str
    tenant_id: str
    model_name: str
    request_id: str
    served_role: str
    champion_version_id: str | None
    champion_prediction: float | None
    candidate_version_id: str | None
    candidate_prediction: float | None
    served_prediction: float
    latency_ms: float
    created_at: datetime


class PairedErrors(BaseModel):
    champion_abs_errors: list[float]
    candidate_abs_errors: list[float]
    cursor: int
    pairs: int


class OutcomeJoiner:
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def record_predictions(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_tenant.setdefault(record.tenant_id, []).append(record.model_dump())
        first = next(iter(by_tenant))
        # Opened for the first tenant (its scope is set as the transaction begins: no extra round trip on the
        # request path, which writes one tenant's records); any other tenant's are written acting for it.
        with transaction(self._factory, first) as session:
            for tenant_id, rows in by_tenant.items():
                if tenant_id != first:
                    act_for_tenant(session, tenant_id)
                session.execute(insert(Prediction), rows)

    def paired_errors(
        self,
        principal: Principal,
        tenant_id: str,
        candidate_version_id: str,
        after_event_id: int,
        served_roles: Sequence[str],
        limit: int = 50_000,
    ) -> PairedErrors:
        """|y - ŷ| of champion and candidate on the same requests, for outcomes that arrived after the cursor."""
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            rows = session.execute(
                select(
                    LearningEvent.id,
                    LearningEvent.actual,
                    Prediction.champion_prediction,
                    Prediction.candidate_prediction,
                )
                .join(Prediction, Prediction.id == LearningEvent.prediction_id)
                .where(
                    LearningEvent.tenant_id == tenant_id,
                    LearningEvent.id > after_event_id,
                    LearningEvent.actual.is_not(None),
                    Prediction.tenant_id == tenant_id,
                    Prediction.candidate_version_id == candidate_version_id,
                    Prediction.served_role.in_(list(served_roles)),
                    Prediction.champion_prediction.is_not(None),
                    Prediction.candidate_prediction.is_not(None),
                )
                .order_by(LearningEvent.id)
                .limit(limit)
            ).all()
        cursor = after_event_id
        champion: list[float] = []
        candidate: list[float] = []
        for event_id, actual, champ, cand in rows:
            assert actual is not None and champ is not None and cand is not None  # the query excludes NULLs
            champion.append(abs(actual - champ))
            candidate.append(abs(actual - cand))
            cursor = max(cursor, event_id)
        return PairedErrors(
            champion_abs_errors=champion, candidate_abs_errors=candidate, cursor=cursor, pairs=len(rows)
        )

    def candidate_health(self, tenant_id: str, candidate_version_id: str) -> tuple[int, int]:
        """(requests the candidate scored, of which invalid: NaN, infinite or failed), over its whole rollout."""
        with reading(self._factory, tenant_id) as session:
            scored, invalid = session.execute(
                select(
                    func.count(),
                    func.count().filter(Prediction.candidate_prediction.is_(None)),
                ).where(
                    Prediction.tenant_id == tenant_id, Prediction.candidate_version_id == candidate_version_id
                )
            ).one()
        return int(scored), int(invalid)

    def traffic_counts(self, tenant_id: str, candidate_version_id: str) -> dict[str, Any]:
        with reading(self._factory, tenant_id) as session:
            rows = session.execute(
                select(Prediction.served_role, func.count())
                .where(
                    Prediction.tenant_id == tenant_id, Prediction.candidate_version_id == candidate_version_id
                )
                .group_by(Prediction.served_role)
            ).all()
        return {role: count for role, count in rows}

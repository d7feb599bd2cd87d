"""ModelRegistryService: the only way a model version changes state.

Every transition is checked against the lifecycle table, applied under an optimistic lock (``lock_version``),
idempotent by ``request_id``, and audited in the same transaction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import Conflict, IllegalTransition, InvalidInput, NotFound, StaleVersion
from evolution.lifecycle import (
    ModelState,
    TransitionRequest,
    TransitionResult,
    VersionChanges,
    VersionView,
    check_transition,
)
from evolution.observability import metrics
from evolution.registry.audit import ChainReport, append_audit, load_chain, lock_tenant_chain, verify_chain
from evolution.registry.db import reading
from evolution.registry.idempotency import run_idempotent
from evolution.registry.lineage_outbox import LineageOutbox
from evolution.registry.schema import AuditEntry, ModelVersion, Tenant
from evolution.registry.tenancy import tenant_of_version
from evolution.registry.views import AuditView, version_view
from evolution.security import Action, Principal, authorize
from evolution.timeutil import utcnow

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_model_name(name: str) -> str:
    if not MODEL_NAME_PATTERN.match(name):
        raise InvalidInput(f"model name {name!r}: use 1-100 letters, digits, '.', '-' or '_'")
    return name


class ModelRegistryService:
    def __init__(
        self,
        factory: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
        lineage: LineageOutbox | None = None,
    ) -> None:
        """``lineage``: where a trained version's and a promotion's OpenLineage events are recorded (None: not)."""
        self._factory = factory
        self._clock = clock
        self._lineage = lineage

    def register_version(
        self,
        principal: Principal,
        tenant_id: str,
        model_name: str,
        request_id: str,
        parent_id: str | None = None,
        reason: str = "",
    ) -> VersionView:
        """A new DRAFT version, numbered after the last one of this tenant and model."""
        authorize(principal, Action.REGISTER_VERSION, tenant_id)
        check_model_name(model_name)

        def work(session: Session) -> dict[str, Any]:
            if session.get(Tenant, tenant_id) is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
            lock_tenant_chain(session, tenant_id)  # numbers are assigned under the tenant's lock
            number = (
                session.scalar(
                    select(func.max(ModelVersion.number)).where(
                        ModelVersion.tenant_id == tenant_id, ModelVersion.model_name == model_name
                    )
                )
                or 0
            ) + 1
            now = self._clock()
            row = ModelVersion(
                id=f"mv-{uuid.uuid4().hex[:20]}",
                tenant_id=tenant_id,
                model_name=model_name,
                number=number,
                state=ModelState.DRAFT.value,
                lock_version=1,
                parent_id=parent_id,
                metrics={},
                was_champion=False,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="version.registered",
                subject_type="model_version",
                subject_id=row.id,
                to_state=ModelState.DRAFT.value,
                request_id=request_id,
                at=now,
                details={
                    "model_name": model_name,
                    "number": number,
                    "parent_id": parent_id,
                    "reason": reason,
                },
            )
            return version_view(row).model_dump(mode="json")

        payload = {"model_name": model_name, "parent_id": parent_id, "reason": reason}
        return VersionView.model_validate(
            run_idempotent(
                self._factory,
                tenant_id=tenant_id,
                request_id=request_id,
                operation="register_version",
                payload=payload,
                work=work,
            )
        )

    def transition(self, principal: Principal, request: TransitionRequest) -> TransitionResult:
        """Apply one lifecycle transition. CHAMPION is reached only through :meth:`promote`."""
        tenant_id = self._tenant_of(request.version_id)
        authorize(principal, Action.TRANSITION, tenant_id)
        if request.to_state == ModelState.CHAMPION:
            raise IllegalTransition("CHAMPION is reached only by promote (approval) or force_rollback")
        return self._transition(principal, tenant_id, request, operation="transition")

    def promote(
        self, principal: Principal, version_id: str, expected_version: int, request_id: str, reason: str = ""
    ) -> TransitionResult:
        """CANARY -> CHAMPION after approval; the old CHAMPION -> DEPRECATED in the same transaction."""
        tenant_id = self._tenant_of(version_id)
        authorize(principal, Action.APPROVE, tenant_id)
        request = TransitionRequest(
            version_id=version_id,
            to_state=ModelState.CHAMPION,
            expected_version=expected_version,
            request_id=request_id,
            reason=reason or "approved",
        )
        return self._transition(principal, tenant_id, request, operation="promote")

    def reject(
        self, principal: Principal, version_id: str, expected_version: int, request_id: str, reason: str
    ) -> TransitionResult:
        tenant_id = self._tenant_of(version_id)
        authorize(principal, Action.REJECT, tenant_id)
        request = TransitionRequest(
            version_id=version_id,
            to_state=ModelState.FAILED,
            expected_version=expected_version,
            request_id=request_id,
            reason=reason or "rejected",
            details={"decision": "rejected"},
        )
        return self._transition(principal, tenant_id, request, operation="reject")

    def quarantine(
        self, principal: Principal, version_id: str, request_id: str, reason: str
    ) -> TransitionResult:
        """An integrity failure: to QUARANTINED from whatever live state the version is in."""
        tenant_id = self._tenant_of(version_id)
        authorize(principal, Action.TRANSITION, tenant_id)
        current = self.get_version(principal, version_id)
        request = TransitionRequest(
            version_id=version_id,
            to_state=ModelState.QUARANTINED,
            expected_version=current.lock_version,
            request_id=request_id,
            reason=reason,
            details={"integrity_failure": reason},
        )
        return self._transition(principal, tenant_id, request, operation="quarantine", lock_read_here=True)

    def force_rollback(
        self, principal: Principal, tenant_id: str, model_name: str, request_id: str, reason: str
    ) -> TransitionResult:
        """Admin: the current CHAMPION -> DEPRECATED and the previous champion (DEPRECATED) -> CHAMPION."""
        authorize(principal, Action.FORCE_ROLLBACK, tenant_id)
        if not reason.strip():
            raise InvalidInput("reason: a forced rollback needs a reason for the audit log")
        result = self._restore_previous(
            principal, tenant_id, model_name, request_id, reason, "force_rollback", None
        )
        metrics.ROLLBACKS.labels(tenant_id, "forced").inc()
        return result

    def watch_rollback(
        self,
        principal: Principal,
        tenant_id: str,
        model_name: str,
        watched: tuple[str, str],
        request_id: str,
        reason: str,
    ) -> TransitionResult:
        """The post-promotion watch found harm: restore the previous champion, if ``watched`` (the champion's id and
        the previous champion's) still holds (a champion changed meanwhile is not the watch's to undo: Conflict)."""
        authorize(principal, Action.WATCH_ROLLBACK, tenant_id)
        result = self._restore_previous(
            principal, tenant_id, model_name, request_id, reason, "watch_rollback", watched
        )
        metrics.ROLLBACKS.labels(tenant_id, "watch").inc()
        return result

    def _restore_previous(
        self,
        principal: Principal,
        tenant_id: str,
        model_name: str,
        request_id: str,
        reason: str,
        operation: str,
        expected: tuple[str, str] | None,
    ) -> TransitionResult:
        # The audit says which door it came through: an admin's forced rollback or the watch's.
        door = {
            "force_rollback": ("forced_rollback", "forced rollback: "),
            "watch_rollback": ("watch_rollback", "post-promotion watch: "),
        }
        detail_key, prefix = door[operation]
        details = {detail_key: True}
        audit_reason = prefix + reason

        def work(session: Session) -> dict[str, Any]:
            champion = self._current(session, tenant_id, model_name, ModelState.CHAMPION)
            if champion is None:
                raise NotFound(f"{tenant_id}/{model_name} has no CHAMPION to roll back")
            if expected is not None and champion.id != expected[0]:
                raise Conflict(
                    f"{tenant_id}/{model_name}: v{champion.number} ({champion.id}) is the champion now, not "
                    f"{expected[0]}; nothing to roll back"
                )
            previous = session.scalars(
                select(ModelVersion)
                .where(
                    ModelVersion.tenant_id == tenant_id,
                    ModelVersion.model_name == model_name,
                    ModelVersion.state == ModelState.DEPRECATED.value,
                    ModelVersion.was_champion.is_(True),
                    ModelVersion.number < champion.number,
                )
                .order_by(ModelVersion.number.desc())
                .limit(1)
            ).first()
            if previous is None:
                raise NotFound(f"{tenant_id}/{model_name} has no previous champion to restore")
            if expected is not None and previous.id != expected[1]:
                raise Conflict(
                    f"{tenant_id}/{model_name}: the previous champion is v{previous.number} ({previous.id}), not "
                    f"{expected[1]}; nothing to roll back"
                )
            demoted = self._apply(
                session,
                principal,
                champion,
                ModelState.DEPRECATED,
                champion.lock_version,
                request_id,
                audit_reason,
                None,
                details,
            )
            restored, seq = self._apply_with_seq(
                session,
                principal,
                previous,
                ModelState.CHAMPION,
                previous.lock_version,
                request_id,
                audit_reason,
                None,
                {**details, "replaces": champion.id},
            )
            return TransitionResult(
                version=version_view(restored),
                from_state=ModelState.DEPRECATED,
                audit_seq=seq,
                demoted=version_view(demoted),
            ).model_dump(mode="json")

        result = TransitionResult.model_validate(
            run_idempotent(
                self._factory,
                tenant_id=tenant_id,
                request_id=request_id,
                operation=operation,
                payload={"model_name": model_name, "reason": reason},
                work=work,
            )
        )
        self._lineage_committed(tenant_id)
        return result

    def _lineage_committed(self, tenant_id: str) -> None:
        if self._lineage is not None:
            self._lineage.committed(tenant_id)

    # ----------------------------------------------------------------- queries
    def get_version(self, principal: Principal, version_id: str) -> VersionView:
        tenant_id = self._tenant_of(version_id)
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            row = session.get(ModelVersion, version_id)
            if row is None:
                raise NotFound(f"model version {version_id!r} does not exist")
            return version_view(row)

    def current(
        self, principal: Principal, tenant_id: str, model_name: str, state: ModelState
    ) -> VersionView | None:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            row = self._current(session, tenant_id, model_name, state)
            return version_view(row) if row else None

    def in_states(
        self, principal: Principal, tenant_id: str, model_name: str, states: tuple[ModelState, ...]
    ) -> list[VersionView]:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            rows = session.scalars(
                select(ModelVersion).where(
                    ModelVersion.tenant_id == tenant_id,
                    ModelVersion.model_name == model_name,
                    ModelVersion.state.in_([s.value for s in states]),
                )
            )
            return [version_view(r) for r in rows]

    def list_versions(
        self, principal: Principal, tenant_id: str, model_name: str | None = None, *, strict: bool = False
    ) -> list[VersionView]:
        """The tenant's versions (of ``model_name``). ``strict``: NotFound instead of an empty list for a tenant that
        does not exist or a model with no version, so that a typo is not mistaken for "nothing yet"."""
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            query = select(ModelVersion).where(ModelVersion.tenant_id == tenant_id)
            if model_name:
                query = query.where(ModelVersion.model_name == model_name)
            found = [
                version_view(r)
                for r in session.scalars(query.order_by(ModelVersion.model_name, ModelVersion.number))
            ]
            if strict and not found:
                if session.get(Tenant, tenant_id) is None:
                    raise NotFound(f"tenant {tenant_id!r} does not exist")
                if model_name:
                    raise NotFound(
                        f"tenant {tenant_id!r} has no model {model_name!r} (no version registered)"
                    )
            return found

    def audit_trail(
        self, principal: Principal, tenant_id: str, subject_id: str | None = None
    ) -> list[AuditView]:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            query = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
            if subject_id:
                query = query.where(AuditEntry.subject_id == subject_id)
            return [AuditView.of(r) for r in session.scalars(query.order_by(AuditEntry.seq))]

    def verify_audit(self, principal: Principal, tenant_id: str) -> ChainReport:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            return verify_chain(tenant_id, load_chain(session, tenant_id))

    # ----------------------------------------------------------------- internals
    def _tenant_of(self, version_id: str) -> str:
        tenant_id = tenant_of_version(self._factory, version_id)
        if tenant_id is None:
            raise NotFound(f"model version {version_id!r} does not exist")
        return tenant_id

    @staticmethod
    def _current(session: Session, tenant_id: str, model_name: str, state: ModelState) -> ModelVersion | None:
        return session.scalars(
            select(ModelVersion).where(
                ModelVersion.tenant_id == tenant_id,
                ModelVersion.model_name == model_name,
                ModelVersion.state == state.value,
            )
        ).first()

    def _transition(
        self,
        principal: Principal,
        tenant_id: str,
        request: TransitionRequest,
        operation: str,
        *,
        lock_read_here: bool = False,
    ) -> TransitionResult:
        def work(session: Session) -> dict[str, Any]:
            row = session.get(ModelVersion, request.version_id)
            if row is None:
                raise NotFound(f"model version {request.version_id!r} does not exist")
            source = ModelState(row.state)
            demoted: ModelVersion | None = None
            if request.to_state == ModelState.CHAMPION:
                check_transition(source, ModelState.CHAMPION)
                old = self._current(session, tenant_id, row.model_name, ModelState.CHAMPION)
                if old is not None:
                    demoted = self._apply(
                        session,
                        principal,
                        old,
                        ModelState.DEPRECATED,
                        old.lock_version,
                        request.request_id,
                        f"replaced by {row.id}",
                        None,
                        {"replaced_by": row.id},
                    )
            applied, seq = self._apply_with_seq(
                session,
                principal,
                row,
                request.to_state,
                request.expected_version,
                request.request_id,
                request.reason,
                request.changes,
                request.details,
            )
            return TransitionResult(
                version=version_view(applied),
                from_state=source,
                audit_seq=seq,
                demoted=version_view(demoted) if demoted else None,
            ).model_dump(mode="json")

        # A lock version this service read itself (quarantine) is not part of the request: a retry after the
        # first attempt committed reads a newer one, and must still be recognised as the same request.
        excluded = {"request_id", "expected_version"} if lock_read_here else {"request_id"}
        payload = request.model_dump(mode="json", exclude=excluded)
        result = TransitionResult.model_validate(
            run_idempotent(
                self._factory,
                tenant_id=tenant_id,
                request_id=request.request_id,
                operation=operation,
                payload=payload,
                work=work,
            )
        )
        if request.to_state == ModelState.CHAMPION or (request.changes and request.changes.model_hash):
            self._lineage_committed(tenant_id)  # the transitions that record a lineage event
        return result

    @staticmethod
    def _stale(version_id: str, expected_version: int, source: ModelState) -> StaleVersion:
        return StaleVersion(
            f"model version {version_id}: expected lock version {expected_version} (state {source}), "
            "but it was changed meanwhile; re-read and retry"
        )

    def _apply(self, *args: Any) -> ModelVersion:
        return self._apply_with_seq(*args)[0]

    def _apply_with_seq(
        self,
        session: Session,
        principal: Principal,
        row: ModelVersion,
        target: ModelState,
        expected_version: int,
        request_id: str,
        reason: str,
        changes: VersionChanges | None,
        details: dict[str, Any],
    ) -> tuple[ModelVersion, int]:
        source = ModelState(row.state)
        if row.lock_version != expected_version:
            raise self._stale(row.id, expected_version, source)
        check_transition(source, target)
        now = self._clock()
        values: dict[str, Any] = {
            "state": target.value,
            "lock_version": ModelVersion.lock_version + 1,
            "updated_at": now,
        }
        if target == ModelState.CHAMPION:
            values["was_champion"] = True
        if changes is not None:
            values.update(changes.model_dump(exclude_none=True))
        # Optimistic lock: the UPDATE matches only the version the caller read.
        result = session.execute(
            update(ModelVersion)
            .where(
                ModelVersion.id == row.id,
                ModelVersion.lock_version == expected_version,
                ModelVersion.state == source.value,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise self._stale(row.id, expected_version, source)
        session.refresh(row)
        if self._lineage is not None:
            # In this transaction: the event exists exactly when the transition does.
            if changes is not None and changes.model_hash is not None:
                self._lineage.model_trained(session, row, now)
            if target == ModelState.CHAMPION:
                self._lineage.model_promoted(session, row, source.value, request_id, reason, now)
        entry = append_audit(
            session,
            tenant_id=row.tenant_id,
            principal=principal,
            action="version.transition",
            subject_type="model_version",
            subject_id=row.id,
            from_state=source.value,
            to_state=target.value,
            request_id=request_id,
            at=now,
            details={"reason": reason, "model_name": row.model_name, "number": row.number, **details},
        )
        return row, entry.seq


__all__ = [
    "Conflict",
    "ModelRegistryService",
    "TransitionRequest",
    "TransitionResult",
    "VersionChanges",
]

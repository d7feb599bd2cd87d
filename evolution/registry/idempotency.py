"""request_id idempotency: the same id and payload get the first answer; the same id with another payload is refused.

The key is inserted *before* the work, in the same transaction, so that concurrent requests with one id queue on the
key's unique index and then read the winner's answer instead of racing to do the work twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.errors import Conflict, IdempotencyConflict, InvalidInput
from evolution.registry.db import reading, transaction
from evolution.registry.schema import IdempotencyKey
from evolution.timeutil import utcnow

Work = Callable[[Session], dict[str, Any]]


def payload_hash(operation: str, payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"operation": operation, "payload": payload})).hexdigest()


def _stored_answer(session: Session, tenant_id: str, request_id: str, digest: str) -> dict[str, Any] | None:
    row = session.execute(
        select(IdempotencyKey).where(
            IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.request_id == request_id
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    if row.payload_hash != digest:
        raise IdempotencyConflict(
            f"request_id {request_id!r} was already used for {row.operation} with a different payload"
        )
    return dict(row.response)


def run_idempotent(
    factory: sessionmaker[Session],
    *,
    tenant_id: str,
    request_id: str,
    operation: str,
    payload: dict[str, Any],
    work: Work,
) -> dict[str, Any]:
    if not request_id or len(request_id) > 100:
        raise InvalidInput("request_id: required, at most 100 characters")
    digest = payload_hash(operation, payload)
    last_error: exc.IntegrityError | None = None
    for _ in range(3):
        try:
            with transaction(factory, tenant_id) as session:
                answer = _stored_answer(session, tenant_id, request_id, digest)
                if answer is not None:
                    return answer
                key = IdempotencyKey(
                    tenant_id=tenant_id,
                    request_id=request_id,
                    operation=operation,
                    payload_hash=digest,
                    response={},
                    created_at=utcnow(),
                )
                session.add(key)
                session.flush()
                response = work(session)
                key.response = response
                return response
        except exc.IntegrityError as error:
            with reading(factory, tenant_id) as session:
                answer = _stored_answer(session, tenant_id, request_id, digest)
            if answer is not None:
                return answer
            # Either a concurrent twin rolled back (try again) or the work broke a constraint (it will again).
            last_error = error
    raise Conflict(f"{operation} refused by a database constraint: {last_error and last_error.orig}")

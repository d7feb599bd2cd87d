"""The model lifecycle: one table of legal transitions, the single source of truth, and the version records that move
through it.

At the top of evolution/ because both sides of the workflow boundary speak it: the registry applies it and
:mod:`evolution.contracts` carries its states and records into workflow histories; it imports only errors and
pydantic, so the workflow sandbox can load it without SQLAlchemy.

Every transition not in :data:`TRANSITIONS` is refused with :class:`IllegalTransition`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from evolution.errors import IllegalTransition


class ModelState(StrEnum):
    DRAFT = "DRAFT"
    TRAINING = "TRAINING"
    VALIDATED = "VALIDATED"
    SHADOW = "SHADOW"
    CANARY = "CANARY"
    CHAMPION = "CHAMPION"
    DEPRECATED = "DEPRECATED"
    FAILED = "FAILED"
    QUARANTINED = "QUARANTINED"


S = ModelState

# Why each edge exists:
# - every working state can fail (FAILED is terminal: a rejected, harmful or not-better candidate ends there);
# - every state that holds an artifact can be QUARANTINED when a signature or digest does not verify;
# - CANARY -> CHAMPION is the promotion (the old CHAMPION -> DEPRECATED in the same transaction);
# - DEPRECATED -> CHAMPION is the admin's forced rollback to the previous champion;
# - QUARANTINED is left only by a human review: cleared (DEPRECATED) or condemned (FAILED).
TRANSITIONS: dict[ModelState, frozenset[ModelState]] = {
    S.DRAFT: frozenset({S.TRAINING, S.FAILED}),
    S.TRAINING: frozenset({S.VALIDATED, S.FAILED, S.QUARANTINED}),
    S.VALIDATED: frozenset({S.SHADOW, S.FAILED, S.QUARANTINED}),
    S.SHADOW: frozenset({S.CANARY, S.FAILED, S.QUARANTINED}),
    S.CANARY: frozenset({S.CHAMPION, S.FAILED, S.QUARANTINED}),
    S.CHAMPION: frozenset({S.DEPRECATED, S.QUARANTINED}),
    S.DEPRECATED: frozenset({S.CHAMPION, S.QUARANTINED}),
    S.FAILED: frozenset(),
    S.QUARANTINED: frozenset({S.DEPRECATED, S.FAILED}),
}

TERMINAL_STATES = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
LIVE_STATES = frozenset({S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY, S.CHAMPION, S.DEPRECATED})


def is_legal(source: ModelState, target: ModelState) -> bool:
    return target in TRANSITIONS[source]


def check_transition(source: ModelState | str, target: ModelState | str) -> None:
    src, dst = ModelState(source), ModelState(target)
    if not is_legal(src, dst):
        allowed = ", ".join(sorted(TRANSITIONS[src])) or "none (terminal state)"
        raise IllegalTransition(f"illegal transition {src} -> {dst}; allowed from {src}: {allowed}")


class VersionView(BaseModel):
    """A model version as the registry hands it out (plain pydantic, safe to put in workflow histories)."""

    id: str
    tenant_id: str
    model_name: str
    number: int
    state: ModelState
    lock_version: int
    parent_id: str | None = None
    dataset_snapshot_id: str | None = None
    model_hash: str | None = None
    manifest: dict[str, Any] | None = None
    metrics: dict[str, Any] = {}
    was_champion: bool = False
    created_at: datetime
    updated_at: datetime

    def why_no_manifest(self) -> str:
        """Why this version has no signed manifest: one is recorded when a trained model passes validation."""
        if self.state in (ModelState.DRAFT, ModelState.TRAINING):
            return (
                f"it is {self.state.value} (a manifest is recorded once its model is trained and validated)"
            )
        return (
            f"it ended {self.state.value} before its model was validated and registered (a trained model that "
            "fails its checks or the comparison with the champion keeps none; evolution audit shows why)"
        )


class VersionChanges(BaseModel):
    """Facts recorded together with a transition (e.g. the signed manifest when training ends)."""

    model_hash: str | None = None
    manifest: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    dataset_snapshot_id: str | None = None


class TransitionRequest(BaseModel):
    version_id: str
    to_state: ModelState
    expected_version: int = Field(description="The lock_version the caller read; a stale one is refused.")
    request_id: str
    reason: str = ""
    changes: VersionChanges | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class TransitionResult(BaseModel):
    version: VersionView
    from_state: ModelState
    audit_seq: int
    demoted: VersionView | None = None

"""The model lifecycle: one table of legal transitions, the single source of truth.

At the top of evolution/ because both sides of the workflow boundary speak it: the registry applies it and
:mod:`evolution.contracts` carries its states; it imports only errors, pydantic and timeutil.

Every transition not in :data:`TRANSITIONS` is refused with :class:`IllegalTransition`.
"""

from __future__ import annotations

from enum import StrEnum

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

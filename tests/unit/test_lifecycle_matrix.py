"""The full 9 x 9 transition matrix: every legal edge applies, every other is refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from evolution.errors import IllegalTransition
from evolution.lifecycle import TERMINAL_STATES, TRANSITIONS, ModelState, VersionView, check_transition

S = ModelState
EXPECTED_LEGAL = {
    (S.DRAFT, S.TRAINING),
    (S.DRAFT, S.FAILED),
    (S.TRAINING, S.VALIDATED),
    (S.TRAINING, S.FAILED),
    (S.TRAINING, S.QUARANTINED),
    (S.VALIDATED, S.SHADOW),
    (S.VALIDATED, S.FAILED),
    (S.VALIDATED, S.QUARANTINED),
    (S.SHADOW, S.CANARY),
    (S.SHADOW, S.FAILED),
    (S.SHADOW, S.QUARANTINED),
    (S.CANARY, S.CHAMPION),
    (S.CANARY, S.FAILED),
    (S.CANARY, S.QUARANTINED),
    (S.CHAMPION, S.DEPRECATED),
    (S.CHAMPION, S.QUARANTINED),
    (S.DEPRECATED, S.CHAMPION),
    (S.DEPRECATED, S.QUARANTINED),
    (S.QUARANTINED, S.DEPRECATED),
    (S.QUARANTINED, S.FAILED),
}
ALL_PAIRS = list(itertools.product(list(S), list(S)))


def test_table_covers_all_nine_states() -> None:
    assert set(TRANSITIONS) == set(S)
    assert len(ALL_PAIRS) == 81


def test_table_is_exactly_the_documented_lifecycle() -> None:
    table = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}
    assert table == EXPECTED_LEGAL


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair_is_applied_or_refused(source: ModelState, target: ModelState) -> None:
    if (source, target) in EXPECTED_LEGAL:
        check_transition(source, target)
    else:
        with pytest.raises(IllegalTransition, match=f"{source} -> {target}"):
            check_transition(source, target)


def test_failed_to_champion_is_refused_with_a_clear_message() -> None:
    with pytest.raises(IllegalTransition, match=r"FAILED -> CHAMPION.*terminal"):
        check_transition("FAILED", "CHAMPION")


def test_failed_is_the_only_terminal_state() -> None:
    assert {S.FAILED} == TERMINAL_STATES


def test_a_version_without_a_manifest_says_why_not_that_it_was_never_trained() -> None:
    def view(state: ModelState) -> VersionView:
        now = datetime.now(UTC)
        return VersionView(
            id="v", tenant_id="acme", model_name="yield", number=5, state=state, lock_version=1,
            created_at=now, updated_at=now,
        )  # fmt: skip

    assert (
        view(ModelState.FAILED)
        .why_no_manifest()
        .startswith("it ended FAILED before its model was validated and registered")
    )
    assert view(ModelState.TRAINING).why_no_manifest().startswith("it is TRAINING")

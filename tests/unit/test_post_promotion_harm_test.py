"""The post-promotion watch's statistics and verdicts: §2's harm mirror alone, and when a watch ends."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from evolution.canary.watch import verdict_of
from evolution.lifecycle import ModelState, VersionView
from evolution.registry.schema import PostPromotionWatch
from evolution.stats.canary import decide, guard_config_from_shadow
from evolution.stats.canary_models import GuardState
from evolution.stats.watch import harm_look, observe_watch
from evolution.timeutil import utcnow

RNG = np.random.default_rng(11)


def errors(n: int, champion_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(previous, champion) absolute errors on the same requests, sharing their common part as in spec §4."""
    c = RNG.normal(size=n)
    previous = np.abs(c + 0.5 * RNG.normal(size=n))
    champion = np.abs(c + champion_scale * RNG.normal(size=n))
    return previous, champion


CONFIG = guard_config_from_shadow(np.subtract(*errors(400, 0.5)))


def looks(champion_scale: float, labels: int, every: int = 100) -> list:
    state, out = GuardState(), []
    for _ in range(labels // every):
        previous, champion = errors(every, champion_scale)
        state = observe_watch(state, CONFIG, previous, champion)
        decision = harm_look(state, CONFIG)
        out.append(decision)
        state = decision.state
    return out


def test_a_worse_champion_is_found_harmful_after_the_minimum_labels_with_the_canarys_q() -> None:
    decisions = looks(champion_scale=0.8, labels=2_000)
    first = next(d for d in decisions if d.action == "rollback")
    assert first.n >= CONFIG.min_rollback_n and first.q_rollback < CONFIG.alpha and first.theta_hat < 0
    assert "new champion's MAE is higher" in first.reason
    # The same q as the canary's mirror test computes on the same state.
    state_before = GuardState(d=first.state.d)
    assert decide(state_before, CONFIG).q_rollback == pytest.approx(first.q_rollback, rel=1e-12)
    assert all(d.action == "rollback" for d in decisions[decisions.index(first) :])  # a decided state stays


def test_a_better_champion_never_ends_the_watch_by_promotion_or_by_n_max() -> None:
    decisions = looks(champion_scale=0.3, labels=CONFIG.n_max + 2_000, every=2_000)
    assert {d.action for d in decisions} == {"continue"}
    assert decisions[-1].n > CONFIG.n_max and decisions[-1].q_rollback > 0.5


def row(**changes: object) -> PostPromotionWatch:
    now = utcnow()
    values = {
        "id": "w-1",
        "status": "watching",
        "started_at": now - timedelta(days=20),
        "min_until": now - timedelta(days=6),
        "max_until": now + timedelta(days=40),
        "min_labels": 5_000,
        "labels": 6_000,
        "q_harm": 0.7,
        "guard_state": GuardState().model_dump(mode="json"),
        "reason": "watching",
        **changes,
    }
    return PostPromotionWatch(**values)


def champion(version_id: str = "mv-2") -> VersionView:
    now = utcnow()
    return VersionView(
        id=version_id,
        tenant_id="acme",
        model_name="yield",
        number=2,
        state=ModelState.CHAMPION,
        lock_version=3,
        created_at=now,
        updated_at=now,
    )


HARMED = GuardState(decided="rollback", decided_reason="harm test: q = 0.001").model_dump(mode="json")


@pytest.mark.parametrize(
    ("changes", "current", "verdict"),
    [
        ({}, champion(), "kept"),
        ({"labels": 4_999}, champion(), "continue"),  # the labels come later than the days
        ({"min_until": utcnow() + timedelta(days=1)}, champion(), "continue"),
        ({"labels": 10, "max_until": utcnow() - timedelta(seconds=1)}, champion(), "expired"),
        ({}, champion("mv-3"), "superseded"),
        ({}, None, "superseded"),
        ({"guard_state": HARMED}, champion(), "harm"),
        ({"guard_state": HARMED}, champion("mv-3"), "superseded"),  # not this watch's champion to roll back
        ({"status": "rolled_back", "reason": "harm"}, champion(), "harm"),
    ],
)
def test_a_watch_ends_kept_only_when_both_its_days_and_its_labels_are_reached(
    changes: dict[str, object], current: VersionView | None, verdict: str
) -> None:
    got, reason = verdict_of(row(**changes), current, "mv-2", utcnow())
    assert got == verdict, reason

"""The circuit breaker's streak rule, and the pure quota arithmetic (GPU-hours, charge ids, admin limits)."""

from __future__ import annotations

import math
from typing import get_args

import pytest

from evolution.contracts import Outcome
from evolution.errors import InvalidInput
from evolution.registry.circuit_breaker import (
    BUSINESS_OUTCOMES,
    DEFAULT_FAILURE_THRESHOLD,
    FAILURE_OUTCOMES,
    NOT_A_RUN_OUTCOMES,
    Streak,
    advance,
    effect_of,
    threshold_for,
)
from evolution.registry.quota import check_limit, gpu_hours_of
from evolution.registry.tenant_settings import TenantSettings
from evolution.training.candidates import charge_id_of


def run(outcomes: list[str], threshold: int = DEFAULT_FAILURE_THRESHOLD) -> Streak:
    streak = Streak()
    for outcome in outcomes:
        streak = advance(streak, outcome, threshold)
    return streak


def test_every_workflow_outcome_has_exactly_one_effect() -> None:
    groups = (FAILURE_OUTCOMES, BUSINESS_OUTCOMES, NOT_A_RUN_OUTCOMES)
    assert set(get_args(Outcome)) == set().union(*groups)
    assert sum(len(g) for g in groups) == len(get_args(Outcome))


@pytest.mark.parametrize("failure", sorted(FAILURE_OUTCOMES))
def test_three_consecutive_technical_failures_open_the_breaker(failure: str) -> None:
    assert run([failure, failure]) == Streak(state="closed", consecutive_failures=2)
    assert run([failure, failure, failure]) == Streak(state="open", consecutive_failures=3)


def test_mixed_technical_failures_count_together() -> None:
    assert run(["failed", "quarantined", "failed"]).state == "open"


def test_a_candidate_that_merely_lost_validation_does_not_count_as_a_failure() -> None:
    # A crash or a timeout is "failed"; a sound model worse than the champion is "validation_failed".
    assert run(["failed", "failed", "validation_failed", "failed"]) == Streak(consecutive_failures=1)
    assert run(["validation_failed"] * 5) == Streak()


@pytest.mark.parametrize("business", sorted(BUSINESS_OUTCOMES))
def test_a_business_outcome_resets_the_streak(business: str) -> None:
    assert run(["failed", "failed", business]) == Streak()
    assert run(["failed", "failed", business, "failed", "failed"]).state == "closed"


def test_a_blocked_start_neither_counts_nor_resets() -> None:
    assert run(["failed", "failed", "blocked", "blocked"]) == Streak(state="closed", consecutive_failures=2)
    assert run(["failed", "failed", "blocked", "failed"]).state == "open"


def test_open_stays_open_whatever_happens_next() -> None:
    opened = run(["failed"] * 3)
    for outcome in ("promoted", "failed", "blocked", "rolled_back"):
        assert advance(opened, outcome, 3) == opened


def test_the_threshold_is_the_tenants_setting_or_three() -> None:
    assert threshold_for(TenantSettings()) == DEFAULT_FAILURE_THRESHOLD == 3
    assert threshold_for(TenantSettings(circuit_breaker_threshold=1)) == 1
    assert run(["quarantined"], threshold=1).state == "open"
    assert run(["failed"] * 4, threshold=5).state == "closed"
    with pytest.raises(InvalidInput):
        TenantSettings.parse({"circuit_breaker_threshold": 0})


def test_unknown_outcomes_and_thresholds_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown to the circuit breaker"):
        effect_of("exploded")
    with pytest.raises(InvalidInput, match="at least 1"):
        advance(Streak(), "failed", 0)


def test_gpu_hours_are_wall_time_times_gpus_or_the_cpu_factor() -> None:
    assert gpu_hours_of(1800, gpus=4) == pytest.approx(2.0)
    assert gpu_hours_of(3600, gpus=0, cpu_gpu_hour_factor=0.25) == pytest.approx(0.25)
    assert gpu_hours_of(0, gpus=8) == 0.0


def test_each_training_attempt_has_its_own_charge_id_of_at_most_60_characters() -> None:
    run_id = "retrain/" + "a" * 50 + "/0b5e7d2c-3c4b-4a55-a1f0-0f9c1a2b3c4d/train"
    ids = [charge_id_of(run_id, attempt) for attempt in (1, 2, 3, 12)]
    assert ids[0] == run_id[-60:]
    assert len(set(ids)) == 4 and all(len(i) <= 60 for i in ids)
    assert ids[3].endswith("#12")


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_limits_must_be_finite_and_non_negative(bad: float) -> None:
    with pytest.raises(InvalidInput, match="not a finite, non-negative number"):
        check_limit("GPU-hours quota", bad)
    assert check_limit("GPU-hours quota", 0) == 0.0
    assert check_limit("budget", 1500) == 1500.0

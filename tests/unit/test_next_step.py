"""`evolution status` names the command that moves a finished run on, for each known cause."""

from __future__ import annotations

from evolution.cli.next_step import next_step

RETRAIN = "evolution retrain --tenant acme --model yield"


def test_no_sealed_snapshot_says_seal_one() -> None:
    message = "failed: InsufficientData: tenant 'acme' has no sealed snapshot to train on"
    step = next_step("acme", "yield", message)
    assert step is not None
    assert step.startswith("seal a snapshot: evolution snapshot seal --tenant acme")
    assert step.endswith(RETRAIN)


def test_too_few_labelled_events_says_ingest_then_seal() -> None:
    message = "failed: InsufficientData: snapshot s-1 holds 3 labelled events; training needs 50"
    step = next_step("acme", "yield", message)
    assert step is not None
    assert "evolution ingest FILE --tenant acme" in step and "evolution snapshot seal --tenant acme" in step


def test_exhausted_quota_says_raise_it() -> None:
    message = "blocked: BLOCK_RETRAINING: 1.00 of 1.00 GPU-hours used in 2026-12"
    step = next_step("acme", "yield", message)
    assert step is not None
    assert step.startswith("raise the quota: evolution tenant quota set acme --gpu-hours N")
    assert step.endswith(RETRAIN)


def test_open_circuit_says_reset_the_breaker_even_when_its_last_failure_was_a_missing_snapshot() -> None:
    message = (
        "blocked: CIRCUIT_OPEN: retraining disabled since 2026-12-07T05:00:00 after 3 consecutive failures; "
        "last: InsufficientData: tenant 'acme' has no sealed snapshot to train on"
    )
    step = next_step("acme", "yield", message)
    assert step is not None
    assert "evolution tenant breaker reset acme --reason" in step and "snapshot seal" not in step


def test_data_quality_hold_says_accept_the_held_window() -> None:
    message = "blocked: DATA_QUALITY_HOLD: no admin accepted in time: snapshot s-9 has data-quality alerts"
    step = next_step("acme", "yield", message, held_windows=["s-9"])
    assert step is not None
    assert step.startswith("accept the held window: evolution snapshot accept acme s-9 --reason")
    assert next_step("acme", "yield", message) is not None  # no window known: a placeholder names it
    assert "<snapshot>" in (next_step("acme", "yield", message) or "")


def test_approval_timeout_says_start_again() -> None:
    assert (
        next_step("acme", "yield", "approval_timeout: approval deadline passed") == f"start again: {RETRAIN}"
    )


def test_a_model_unknown_to_the_status_is_a_placeholder() -> None:
    step = next_step("acme", None, "approval_timeout: approval deadline passed")
    assert step == "start again: evolution retrain --tenant acme --model <model>"


def test_no_next_step_for_a_promotion_or_an_unknown_cause() -> None:
    assert next_step("acme", "yield", "promoted: the canary's guard promoted it") is None
    assert next_step("acme", "yield", "failed: SomethingNew: ?") is None


def test_a_trainer_that_failed_points_to_its_definition() -> None:
    step = next_step("acme", "yield", "failed: TrainingFailed: training job failed: exit code 1")
    assert step == (
        "fix the trainer or its definition (evolution model show acme yield), "
        "then evolution retrain --tenant acme --model yield"
    )
    assert next_step("acme", "yield", "blocked: SOMETHING_NEW: ?") is None

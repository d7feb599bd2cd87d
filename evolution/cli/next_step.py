"""What to do after a retraining ended without a new champion: one command line per known cause.

Pure text in, text out, so every cause is tested without a workflow engine. The causes are read from the run's
status message, which the retraining workflow writes as ``OUTCOME: REASON``; a block's reason starts with its code
(CIRCUIT_OPEN, BLOCK_RETRAINING, DATA_QUALITY_HOLD), a failed step's with its error type (InsufficientData).
"""

from __future__ import annotations

from collections.abc import Sequence


def next_step(tenant: str, model: str | None, message: str, held_windows: Sequence[str] = ()) -> str | None:
    """The command that moves a finished run's tenant on, or None when the message names no known cause."""
    model = model or "<model>"
    outcome, _, reason = message.partition(": ")
    retrain = f"evolution retrain --tenant {tenant} --model {model}"
    # Blocks first: a CIRCUIT_OPEN reason quotes the last failure, which may itself be a missing snapshot.
    if outcome == "blocked":
        if reason.startswith("CIRCUIT_OPEN"):
            return (
                f"fix the cause of the failures, then reset the breaker: "
                f'evolution tenant breaker reset {tenant} --reason "…"; then {retrain}'
            )
        if reason.startswith("BLOCK_RETRAINING"):
            return (
                f'raise the quota: evolution tenant quota set {tenant} --gpu-hours N --budget-usd N --reason "…"; '
                f"then {retrain}"
            )
        if reason.startswith("DATA_QUALITY_HOLD"):
            window = held_windows[0] if held_windows else "<snapshot>"
            return f'accept the held window: evolution snapshot accept {tenant} {window} --reason "…"; then {retrain}'
        return None
    if outcome == "approval_timeout":
        return f"start again: {retrain}"
    if reason.startswith("TrainingFailed"):
        # The reason quotes the trainer's last lines when it ran; a definition that does not fit the data stops first.
        return f"fix the trainer or its definition (evolution model show {tenant} {model}), then {retrain}"
    if "no sealed snapshot" in reason:
        return f"seal a snapshot: evolution snapshot seal --tenant {tenant}; then {retrain}"
    if reason.startswith("InsufficientData") and "labelled events" in reason:
        return (
            f"ingest more labelled events (evolution ingest FILE --tenant {tenant} --sign-with SOURCE), "
            f"seal a snapshot (evolution snapshot seal --tenant {tenant}), then {retrain}"
        )
    return None

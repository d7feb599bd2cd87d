"""Typed domain errors.

At the top of evolution/ because every room raises them; it imports nothing of the project.

Activities map every subclass of :class:`EvolutionError` to a non-retryable Temporal ``ApplicationError`` whose
``type`` is the class's ``error_type``; anything else is treated as transient and retried.
"""

from __future__ import annotations


class EvolutionError(Exception):
    """Base of every domain error; ``error_type`` is stable and machine-readable."""

    error_type = "EvolutionError"


class InvalidInput(EvolutionError):
    """Input failed validation; the message names the field and the problem."""

    error_type = "InvalidInput"


class NotFound(EvolutionError):
    error_type = "NotFound"


class IllegalTransition(EvolutionError):
    """A lifecycle transition that the transition table does not allow (e.g. FAILED -> CHAMPION)."""

    error_type = "IllegalTransition"


class StaleVersion(EvolutionError):
    """Optimistic lock: the caller's expected version is not the stored one."""

    error_type = "StaleVersion"


class IdempotencyConflict(EvolutionError):
    """The same request_id was used before with a different payload."""

    error_type = "IdempotencyConflict"


class PermissionDenied(EvolutionError):
    error_type = "PermissionDenied"


class IntegrityViolation(EvolutionError):
    """A signature, digest or Merkle root that does not verify. Never load what raised this."""

    error_type = "IntegrityViolation"


class QuotaExceeded(EvolutionError):
    """GPU-hours or budget exhausted: retraining is blocked (BLOCK_RETRAINING)."""

    error_type = "QuotaExceeded"


class TrainingFailed(EvolutionError):
    error_type = "TrainingFailed"


class InsufficientData(EvolutionError):
    error_type = "InsufficientData"


class Conflict(EvolutionError):
    """A uniqueness rule of the domain would be broken (e.g. a second CHAMPION, overlapping windows)."""

    error_type = "Conflict"


class ModelRefused(InvalidInput):
    """A trainer's model breaks the training contract (``docs/bring-your-own-model.md``); it is never registered.

    The message names the problem (a missing input, a wrong type, non-finite probe predictions…) so that the
    trainer's author can fix it.
    """

    error_type = "ModelRefused"


class ModelFailed(EvolutionError):
    """A loaded, verified model failed to predict: its runtime raised, or its output broke the contract."""

    error_type = "ModelFailed"

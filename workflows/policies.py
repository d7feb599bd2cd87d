"""Named timeouts and retry policies shared by the workflows."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Domain errors are raised as non-retryable ApplicationErrors by the activities; everything else is transient.
TRANSIENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
TRAINING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=3,
)

REGISTRY_TIMEOUT = timedelta(seconds=60)
QUERY_TIMEOUT = timedelta(seconds=60)
SNAPSHOT_TIMEOUT = timedelta(minutes=10)
DRIFT_SCAN_TIMEOUT = timedelta(minutes=15)
SEAL_AND_SCAN_TIMEOUT = SNAPSHOT_TIMEOUT + DRIFT_SCAN_TIMEOUT
VALIDATION_TIMEOUT = timedelta(minutes=15)
LOOK_TIMEOUT = timedelta(minutes=2)
# Every activity heartbeats while it runs (activities/heartbeat.py): a step whose worker died is retried elsewhere
# once this passes without a beat, instead of waiting out its start-to-close timeout (which stays the bound on the
# work itself). The SDK sends a beat every 0.8 x this, so a kill is noticed 6 to 30 s after it.
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
TRAINING_HEARTBEAT = HEARTBEAT_TIMEOUT

INTEGRITY_ERROR = "IntegrityViolation"
QUOTA_ERROR = "QuotaExceeded"

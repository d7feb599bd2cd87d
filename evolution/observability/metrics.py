"""The Prometheus metrics every process exports (names are a contract with deploy/ dashboards and rules).

Label sets are bounded: tenant, model, version, feature, role, outcome, reason and status, never request ids. A
tenant or model named by a request takes its name only once it is known to be real (see
``Predictor.metric_labels``), else :data:`UNKNOWN_LABEL`.

Every metric here is registered in every process that imports this module (the worker, the dashboard, the CLI),
where one that was never set exports nothing but its HELP and TYPE lines; except the availability ratio, a gauge
that would export a constant 1.0 from processes that serve nothing: only the serving app registers it
(:func:`export_inference_availability`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from evolution.contracts import RetrainingResult

TRAINING_DURATION = Histogram(
    "training_duration_seconds",
    "Wall time of a training run, from job start to signed manifest.",
    ["tenant", "model", "outcome"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 48 * 3600),
)
MODEL_MAE = Gauge(
    "model_mae", "Holdout mean absolute error of a model version.", ["tenant", "model", "version"]
)
MODEL_ACCURACY = Gauge(
    "model_accuracy",
    "1 - holdout MAE / mean |actual| of a model version (a regression's share of the target it gets right).",
    ["tenant", "model", "version"],
)
DRIFT_PSI = Gauge(
    "drift_psi", "PSI of a feature in the latest scanned window.", ["tenant", "model", "feature"]
)
DRIFT_DETECTION_LATENCY = Histogram(
    "drift_detection_latency_seconds",
    "From the start of the window whose data drifted to the alert raised on it (SLO: under 4 h).",
    ["tenant"],
    buckets=(60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600),
)
DRIFT_SCANS = Counter("drift_scans_total", "Drift scans by resulting level.", ["tenant", "level"])
RETRAINING_RUNS = Counter("retraining_runs_total", "Finished retrainings by outcome.", ["tenant", "outcome"])
CANARY_LABELS = Gauge(
    "canary_labels_collected", "Matured labels the canary guard has seen so far.", ["tenant", "model"]
)
CANARY_P_VALUE = Gauge(
    "canary_p_value",
    "Always-valid p-value of 'the candidate is better' at the last look.",
    ["tenant", "model"],
)
ROLLOUT_WINDOW = Gauge(
    "rollout_window_seconds",
    "Time the current canary has been running (SLO: under 1 h).",
    ["tenant", "model"],
)
ROLLBACKS = Counter(
    "rollbacks_total", "Candidates rolled back, and forced rollbacks, by reason.", ["tenant", "reason"]
)
CIRCUIT_BREAKER_OPEN = Gauge(
    "circuit_breaker_open",
    "1 while the tenant's retraining circuit breaker is open (retraining disabled until an admin resets it), else 0.",
    ["tenant"],
)
QUOTA_GPU_HOURS = Gauge("quota_gpu_hours_used", "GPU-hours charged this month.", ["tenant"])
QUOTA_GPU_HOURS_LIMIT = Gauge("quota_gpu_hours_limit", "GPU-hours allowed per month.", ["tenant"])
INFERENCE_REQUESTS = Counter(
    "inference_requests_total",
    "Prediction requests by the role that served them.",
    ["tenant", "model", "role", "status"],
)
INFERENCE_LATENCY = Histogram(
    "inference_latency_seconds",
    "Time to answer one prediction request, by serving role.",
    ["tenant", "model", "role"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INFERENCE_AVAILABILITY = Gauge(
    "inference_availability_ratio",
    "Share of prediction requests answered without a server error since the serving process started.",
    registry=None,  # registered by the serving app only: export_inference_availability
)
INFERENCE_AVAILABILITY.set(1.0)  # no request has failed yet
PREDICTIONS_DROPPED = Counter(
    "predictions_dropped_total",
    "Served predictions whose record was never written to the registry, so outcomes cannot join to them: "
    "buffer_full (the registry was down longer than the buffer lasts; the oldest go first) or rejected "
    "(the registry refused the record).",
    ["tenant", "reason"],
)

EXPORTED_METRICS = (
    "training_duration_seconds",
    "model_mae",
    "model_accuracy",
    "drift_psi",
    "drift_detection_latency_seconds",
    "drift_scans_total",
    "retraining_runs_total",
    "canary_labels_collected",
    "canary_p_value",
    "rollout_window_seconds",
    "rollbacks_total",
    "circuit_breaker_open",
    "quota_gpu_hours_used",
    "quota_gpu_hours_limit",
    "inference_requests_total",
    "inference_latency_seconds",
    "inference_availability_ratio",
    "predictions_dropped_total",
)


UNKNOWN_LABEL = "_unknown"
"""The tenant and model label of requests naming a tenant or model not known to be real; no tenant id or model name
can be spelt so (both start with a letter or digit)."""

_exporting = threading.Lock()
_availability_exported = False


def export_inference_availability() -> None:
    """Register the availability ratio for /metrics (once; the serving app calls this when it is created)."""
    global _availability_exported
    with _exporting:
        if not _availability_exported:
            REGISTRY.register(INFERENCE_AVAILABILITY)
            _availability_exported = True


def rollback_reason(reason: str) -> str:
    """A bounded label for why a candidate was rolled back."""
    text = reason.lower()
    if "rollout window" in text:
        return "rollout_window"
    if "guardrail" in text:
        return "guardrail"
    return "harm"


def record_retraining_outcome(result: RetrainingResult) -> None:
    RETRAINING_RUNS.labels(result.tenant_id, result.outcome).inc()
    # The rollout is over, whatever its outcome: an ended canary must not keep the window alert firing.
    ROLLOUT_WINDOW.labels(result.tenant_id, result.model_name).set(0)
    if result.outcome == "rolled_back":
        ROLLBACKS.labels(result.tenant_id, rollback_reason(result.reason)).inc()


_answered = 0.0
_failed = 0.0


def count_inference(tenant_id: str, model_name: str, role: str, status: str, requests: int = 1) -> None:
    """Count prediction requests and keep the availability gauge current (server errors count against it)."""
    global _answered, _failed
    INFERENCE_REQUESTS.labels(tenant_id, model_name, role, status).inc(requests)
    if status == "error":
        _failed += requests
    else:
        _answered += requests
    INFERENCE_AVAILABILITY.set(_answered / (_answered + _failed))


def count_unattributed_failure(requests: int = 1) -> None:
    """A prediction request that failed before it could be attributed to a tenant (e.g. its API token could not be
    checked while the registry was down): it counts against availability but creates no label."""
    global _failed
    _failed += requests
    INFERENCE_AVAILABILITY.set(_answered / (_answered + _failed))

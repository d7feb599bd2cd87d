"""The registry's tables (SQLAlchemy 2). The schema itself is created only by Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite needs INTEGER (not BIGINT) for an autoincrementing primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    gpu_hours_quota: Mapped[float] = mapped_column(Float, default=100.0)
    budget_cap_usd: Mapped[float] = mapped_column(Float, default=500.0)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ModelDefinitionRow(Base):
    """One revision of a tenant's model definition (evolution/registry/model_definitions.py); never changed."""

    __tablename__ = "model_definitions"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    defined_by: Mapped[str] = mapped_column(String(200))
    defined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SourceKey(Base):
    """Public keys of the sources (devices, upstream systems) allowed to sign a tenant's learning events."""

    __tablename__ = "source_keys"

    key_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The highest event sequence accepted from this source (None: it never sent one); see evolution.data.events.
    last_sequence: Mapped[int | None] = mapped_column(BigInteger)


class DatasetSnapshot(Base):
    __tablename__ = "dataset_snapshots"
    __table_args__ = (
        UniqueConstraint("tenant_id", "window_start"),
        Index("ix_dataset_snapshots_tenant_window_end", "tenant_id", "window_end"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    row_count: Mapped[int] = mapped_column(Integer)
    byte_size: Mapped[int] = mapped_column(BigInteger)
    leaf_count: Mapped[int] = mapped_column(Integer)
    merkle_root: Mapped[str] = mapped_column(String(64))
    artifact_digest: Mapped[str] = mapped_column(String(64))
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "model_name", "number"),
        Index("ix_model_versions_tenant_model_state", "tenant_id", "model_name", "state"),
        # The database itself keeps at most one CHAMPION, one CANARY and one SHADOW per tenant and model.
        Index(
            "uq_model_versions_one_champion",
            "tenant_id",
            "model_name",
            unique=True,
            sqlite_where=text("state = 'CHAMPION'"),
            postgresql_where=text("state = 'CHAMPION'"),
        ),
        Index(
            "uq_model_versions_one_canary",
            "tenant_id",
            "model_name",
            unique=True,
            sqlite_where=text("state = 'CANARY'"),
            postgresql_where=text("state = 'CANARY'"),
        ),
        Index(
            "uq_model_versions_one_shadow",
            "tenant_id",
            "model_name",
            unique=True,
            sqlite_where=text("state = 'SHADOW'"),
            postgresql_where=text("state = 'SHADOW'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    model_name: Mapped[str] = mapped_column(String(100))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    lock_version: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[str | None] = mapped_column(String(40))
    dataset_snapshot_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_snapshots.id"))
    model_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    was_champion: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LearningEvent(Base):
    __tablename__ = "learning_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "request_id"),
        Index("ix_learning_events_tenant_event_time", "tenant_id", "event_time"),
        Index("ix_learning_events_tenant_prediction", "tenant_id", "prediction_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    request_id: Mapped[str] = mapped_column(String(100))
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source_key_id: Mapped[str] = mapped_column(String(80))
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    prediction_id: Mapped[str | None] = mapped_column(String(100))
    actual: Mapped[float | None] = mapped_column(Float)
    payload_digest: Mapped[str] = mapped_column(String(64))


class Prediction(Base):
    """Every served prediction, so that arriving outcomes join to it (the canary's paired errors)."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_tenant_model_created", "tenant_id", "model_name", "created_at"),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    model_name: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[str] = mapped_column(String(100))
    served_role: Mapped[str] = mapped_column(String(16))
    champion_version_id: Mapped[str | None] = mapped_column(String(40))
    champion_prediction: Mapped[float | None] = mapped_column(Float)
    candidate_version_id: Mapped[str | None] = mapped_column(String(40), index=True)
    candidate_prediction: Mapped[float | None] = mapped_column(Float)
    served_prediction: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DriftReport(Base):
    __tablename__ = "drift_reports"
    __table_args__ = (
        Index("ix_drift_reports_tenant_model_created", "tenant_id", "model_name", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    model_name: Mapped[str] = mapped_column(String(100))
    baseline_version_id: Mapped[str] = mapped_column(String(40))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    level: Mapped[str] = mapped_column(String(24))
    report: Mapped[str] = mapped_column(Text)  # canonical JSON, exactly the bytes that were signed
    report_digest: Mapped[str] = mapped_column(String(64))
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SnapshotQualityMark(Base):
    """A window's data-quality verdict for retraining (evolution/data/quality_holds.py); never changed.

    ``kind`` 'held': the window's data-quality checks fired, so a retraining started by drift on it waits; 'accepted':
    an admin accepted the window with a reason. A window is held while it has a 'held' row and no 'accepted' one.
    """

    __tablename__ = "snapshot_quality_marks"
    __table_args__ = (
        UniqueConstraint("tenant_id", "snapshot_id", "kind"),
        CheckConstraint("kind IN ('held', 'accepted')", name="kind_known"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("dataset_snapshots.id"))
    kind: Mapped[str] = mapped_column(String(16))
    report_id: Mapped[str | None] = mapped_column(String(40))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PostPromotionWatch(Base):
    """A promoted champion watched against the one it replaced (evolution/canary/watch.py).

    While ``status`` is 'watching', serving scores the previous champion beside the champion on every request
    (role 'watch') and the harm test runs on the paired errors; the row keeps the test: its configuration (the
    canary's, read from the audit log), its state and its cursor, so the workflow carries nothing it could forge. It
    ends 'kept'
    (the period passed without harm), 'rolled_back' (harm: the previous champion restored), 'superseded' (the
    champion changed meanwhile) or 'expired' (the period's longest bound passed without enough labels).
    """

    __tablename__ = "post_promotion_watches"
    __table_args__ = (
        Index("ix_post_promotion_watches_tenant_model_status", "tenant_id", "model_name", "status"),
        CheckConstraint(
            "status IN ('watching', 'kept', 'rolled_back', 'superseded', 'expired')", name="status_known"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    model_name: Mapped[str] = mapped_column(String(100))
    champion_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    previous_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    workflow_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    min_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    max_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    min_labels: Mapped[int] = mapped_column(Integer)
    labels: Mapped[int] = mapped_column(Integer)
    q_harm: Mapped[float] = mapped_column(Float)
    theta_hat: Mapped[float] = mapped_column(Float)
    guard_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    guard_state: Mapped[dict[str, Any]] = mapped_column(JSON)
    cursor: Mapped[int] = mapped_column(BigInteger)
    last_look_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text)


class BaselineQualityRecord(Base):
    """Quality data computed once for a baseline made before the checks (evolution/drift/quality_backfill.py).

    'computed': ``quality`` holds the per-feature data, ``quality_digest`` its canonical SHA-256, and ``signature``
    signs the statement tying that digest to the baseline's; 'unavailable': it could not be computed (``reason``
    says why), and is not retried.
    """

    __tablename__ = "baseline_quality"
    __table_args__ = (UniqueConstraint("tenant_id", "baseline_digest"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    model_name: Mapped[str] = mapped_column(String(100))
    baseline_digest: Mapped[str] = mapped_column(String(64))
    snapshot_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    quality_digest: Mapped[str | None] = mapped_column(String(64))
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("tenant_id", "seq"),
        Index("ix_audit_log_tenant_subject", "tenant_id", "subject_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(100))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    operation: Mapped[str] = mapped_column(String(64))
    payload_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_tenant_received", "tenant_id", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    field: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Notification(Base):
    """The embedded notifier's outbox: each warning or alert, to be delivered by a production notifier."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TrainingRun(Base):
    """One training run, charged against the tenant's monthly GPU-hours and budget."""

    __tablename__ = "training_runs"
    __table_args__ = (Index("ix_training_runs_tenant_started", "tenant_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(60), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    model_version_id: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float] = mapped_column(Float)
    gpu_hours: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))


class CircuitBreakerState(Base):
    """A tenant's retraining circuit breaker: consecutive technical failures, and whether retraining is disabled.

    One row per tenant, created on the first recorded outcome; see evolution.registry.circuit_breaker.
    """

    __tablename__ = "circuit_breakers"
    __table_args__ = (
        CheckConstraint("state IN ('closed', 'open')", name="state_known"),
        CheckConstraint("consecutive_failures >= 0", name="failures_not_negative"),
    )

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(8))
    consecutive_failures: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opened_by_run: Mapped[str | None] = mapped_column(String(100))
    last_run_id: Mapped[str | None] = mapped_column(String(100))
    last_outcome: Mapped[str | None] = mapped_column(String(32))
    last_failure_reason: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class User(Base):
    """A dashboard user. Only an argon2id hash of the password is kept, never the password."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UserRole(Base):
    """The role a user holds on one tenant, or on every tenant (``tenant_id`` = "*").

    ``tenant_id`` has no foreign key because "*" is not a tenant; the service checks real tenants exist.
    The database itself refuses any role other than viewer, manager and admin ("system" is never a person).
    """

    __tablename__ = "user_roles"
    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'manager', 'admin')", name="role_is_human"),
        Index("ix_user_roles_tenant", "tenant_id"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class ApiToken(Base):
    """A bearer token of the HTTP API; it acts with its user's roles. Only its SHA-256 digest is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# Tables whose rows are facts: the database refuses UPDATE and DELETE on them.
IMMUTABLE_TABLES = ("audit_log", "dataset_snapshots", "drift_reports", "learning_events")  # 0001, 0007

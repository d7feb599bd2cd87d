"""One settings object for every process, read from ``EVOLUTION_*`` variables and an optional TOML file.

Every secret setting can also be given as ``EVOLUTION_<NAME>_FILE``, a file to read it from (see
:mod:`evolution.platform.secret_files`).

Nothing reads the environment at import time: entry points call :func:`load_settings` once and pass the result on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from evolution.integrity.kms_config import KmsSignerConfig
from evolution.integrity.s3_config import S3StoreConfig
from evolution.notifications.config import NotificationsConfig
from evolution.notifications.lineage_config import LineageConfig
from evolution.platform.secret_files import EnvWithoutSecretFiles, SecretFilesSource
from evolution.platform.temporal_config import TemporalConnection, TemporalTlsConfig, temporal_connection
from evolution.registry.pg_tls import SslMode, with_tls_defaults
from evolution.serving.body_limit_defaults import DEFAULT_MAX_INGEST_BYTES, DEFAULT_MAX_PREDICT_BYTES, MIB
from evolution.training.kubernetes_config import KubernetesBackendConfig

NO_LIMIT_WORDS = frozenset({"", "none", "null", "unlimited"})
HOME_DIR_NAME = ".evolution"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVOLUTION_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default=Path(HOME_DIR_NAME), description="State directory of the embedded defaults.")
    # The URLs carry the database passwords: secret, so they can come from a file (EVOLUTION_DATABASE_URL_FILE).
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite in the home dir.",
        json_schema_extra={"secret": True},
    )
    database_owner_url: str | None = Field(
        default=None,
        description="PostgreSQL: the URL of the role that owns the schema and runs the migrations; "
        "database_url then names the application's role (a member of evolution_app: no ownership, no "
        "BYPASSRLS), fenced by row-level security. Default: database_url.",
        json_schema_extra={"secret": True},
    )
    # TLS to PostgreSQL (libpq's parameter names); defaults for both URLs, which may state their own.
    database_sslmode: SslMode | None = Field(
        default=None,
        description="PostgreSQL: libpq's sslmode for both URLs; production: verify-full (TLS, the server's "
        "certificate signed by database_sslrootcert and naming the host). None: libpq's default (prefer).",
    )
    database_sslrootcert: str | None = Field(
        default=None,
        description="PostgreSQL: the CA file (PEM) that signed the server's certificate ('system': the system's "
        "trust store).",
    )
    database_sslcert: str | None = Field(
        default=None, description="PostgreSQL: the client certificate (PEM) for certificate authentication."
    )
    database_sslkey: str | None = Field(
        default=None, description="PostgreSQL: the client certificate's private key (PEM, mode 0600)."
    )

    artifact_backend: Literal["filesystem", "s3"] = Field(
        default="filesystem", description="Where artifacts live: the home dir, or S3/MinIO (see s3)."
    )
    s3: S3StoreConfig | None = Field(
        default=None, description="EVOLUTION_S3__ENDPOINT_URL, __BUCKET_PREFIX, ..."
    )
    signer_backend: Literal["local", "kms"] = Field(
        default="local",
        description="Who signs: a local ECDSA P-256 key in the home dir, or AWS KMS (see kms).",
    )
    kms: KmsSignerConfig | None = Field(
        default=None, description="EVOLUTION_KMS__KEY_ID or __ALIAS, __REGION, ..."
    )
    compute_backend: Literal["subprocess", "kubernetes"] = Field(
        default="subprocess", description="Where training runs: a local subprocess, or a Kubernetes Job."
    )
    kubernetes: KubernetesBackendConfig | None = Field(
        default=None, description="EVOLUTION_KUBERNETES__NAMESPACE, __IMAGE, ..."
    )
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig,
        description="The outbox always; e-mail (EVOLUTION_NOTIFICATIONS__SMTP__HOST, ...) and a signed webhook "
        "(EVOLUTION_NOTIFICATIONS__WEBHOOK__URL, ...) when configured, routed by the escalation policy.",
    )
    lineage: LineageConfig = Field(
        default_factory=LineageConfig,
        description="OpenLineage events of snapshots, trainings and promotions, delivered from the outbox: to "
        "$EVOLUTION_HOME/lineage/events.jsonl, or to a lineage server (EVOLUTION_LINEAGE__TRANSPORT=http, "
        "EVOLUTION_LINEAGE__URL, ...).",
    )

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_external: bool = Field(
        default=False, description="True: do not start a dev server, connect only."
    )
    temporal_ui_port: int = 8233
    temporal_tls: TemporalTlsConfig | None = Field(
        default=None,
        description="TLS to Temporal: EVOLUTION_TEMPORAL_TLS__SERVER_CA, __CLIENT_CERT, __CLIENT_KEY_FILE, "
        "__SERVER_NAME (mutual TLS to a self-hosted cluster or Temporal Cloud).",
    )
    temporal_api_key: SecretStr | None = Field(
        default=None,
        description="Temporal Cloud API key (sent as a bearer token, over TLS only); usually "
        "EVOLUTION_TEMPORAL_API_KEY_FILE.",
    )
    temporal_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long a process may take to reach Temporal and be let in before it gives up with the reason.",
    )
    task_queue: str = "evolution"

    serve_host: str = "127.0.0.1"
    serve_port: int = 8088
    # Bounded above too: a JSON body becomes Python objects several times its size before it is validated.
    serve_max_predict_bytes: int = Field(
        default=DEFAULT_MAX_PREDICT_BYTES,
        ge=16 * 1024,
        le=64 * MIB,
        description="Largest request body of a prediction (bytes); larger ones get 413 before they are read.",
    )
    serve_max_ingest_bytes: int = Field(
        default=DEFAULT_MAX_INGEST_BYTES,
        ge=64 * 1024,  # one signed event may be 64 KiB
        le=256 * MIB,
        description="Largest request body of a learning-event upload (bytes); larger ones get 413 unread.",
    )
    dashboard_port: int = 8501
    dashboard_trusted_header: str | None = Field(
        default=None,
        description="Behind an authenticating proxy: the request header naming the signed-in user (e.g. "
        "X-Forwarded-User). Only set this when the proxy is the only way to reach the dashboard.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Interface the worker's and dashboard's Prometheus exporters bind; 0.0.0.0 in a pod.",
    )
    dashboard_host: str = Field(
        default="127.0.0.1",
        description="Interface the dashboard listens on; 0.0.0.0 in a pod (behind a proxy).",
    )
    worker_metrics_port: int = Field(default=9464, description="The worker's Prometheus exporter; 0: none.")
    temporal_metrics_port: int = Field(
        default=9465, description="Temporal SDK metrics of the worker; 0: none."
    )
    dashboard_metrics_port: int = Field(
        default=9466, description="The dashboard's Prometheus exporter; 0: none."
    )

    operator_user: str = Field(default="local-operator", description="Identity the CLI acts as.")
    operator_role: str = Field(
        default="admin", description="Role of the CLI's operator: viewer, manager or admin."
    )
    operator_tenants: list[str] = Field(
        default_factory=lambda: ["*"], description="Tenants the CLI may act for."
    )

    audit_checkpoint_every: int = Field(
        default=100,
        ge=1,
        description="A signed checkpoint (tenant, size, head) of a tenant's audit chain every N entries, written "
        "to the artifact store after the entry commits; verify and `evolution audit checkpoint` write one too.",
    )
    event_max_age_days: float | None = Field(
        default=400.0,
        gt=0,
        description="Learning events older than this are refused as expired (outcomes such as yields arrive a "
        "season after their forecast); None: no limit.",
    )

    gpu_hour_price_usd: float = Field(
        default=2.5,
        ge=0,
        description="What one GPU-hour of training costs, charged against the monthly budget.",
    )
    cpu_gpu_hour_factor: float = Field(
        default=0.25,
        ge=0,
        description="GPU-hours charged per wall-clock hour of a CPU-only training run.",
    )

    training_timeout_s: float = 24 * 3600.0
    training_memory_limit_mb: int | None = 4096
    max_concurrent_trainings: int | None = Field(
        default=4,
        ge=1,
        description="Trainings one worker process runs at once; more wait (heartbeating, not charged) for a "
        "slot. A local job holds its dataset and model in memory. None: no limit (e.g. a Kubernetes cluster "
        "that queues Jobs itself; EVOLUTION_MAX_CONCURRENT_TRAININGS=none).",
    )
    canary_share: float = Field(default=0.1, gt=0.0, lt=1.0)

    tracing: Literal["auto", "console", "otlp", "off"] = Field(
        default="auto",
        description="Where spans go: auto = OTLP if otlp_endpoint is set, else stdout (JSON lines); or off.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector, e.g. http://collector:4318 (/v1/traces is added); None: no OTLP.",
    )

    @field_validator("training_memory_limit_mb", "max_concurrent_trainings", mode="before")
    @classmethod
    def _none_spelled_out(cls, value: Any) -> Any:
        # An environment variable cannot be None: "none" (or empty) says "no limit".
        if isinstance(value, str) and value.strip().lower() in NO_LIMIT_WORDS:
            return None
        return value

    @model_validator(mode="after")
    def _backends_configured(self) -> Settings:
        missing = [
            f"{backend} needs {section}: set EVOLUTION_{section.upper()}__... (see docs/production.md)"
            for backend, section, chosen in (
                ("artifact_backend=s3", "s3", self.artifact_backend == "s3" and self.s3 is None),
                ("signer_backend=kms", "kms", self.signer_backend == "kms" and self.kms is None),
                (
                    "compute_backend=kubernetes",
                    "kubernetes",
                    self.compute_backend == "kubernetes" and self.kubernetes is None,
                ),
            )
            if chosen
        ]
        if missing:
            raise ValueError("; ".join(missing))
        return self

    def temporal_connection(self) -> TemporalConnection:
        """The Temporal address, TLS material and API key, read now (certificate files may have been rotated)."""
        return temporal_connection(
            self.temporal_address,
            self.temporal_namespace,
            self.temporal_tls,
            self.temporal_api_key,
            self.temporal_connect_timeout_s,
        )

    @model_validator(mode="after")
    def _database_client_certificate_whole(self) -> Settings:
        if (self.database_sslcert is None) != (self.database_sslkey is None):
            given, other = (
                ("database_sslcert", "database_sslkey")
                if self.database_sslkey is None
                else ("database_sslkey", "database_sslcert")
            )
            raise ValueError(f"{given} is set without {other}: a client certificate needs both")
        return self

    @property
    def resolved_owner_database_url(self) -> str:
        if not self.database_owner_url:
            return self.resolved_database_url
        return with_tls_defaults(self.database_owner_url, self.database_tls)

    @property
    def resolved_database_url(self) -> str:
        if not self.database_url:
            return f"sqlite:///{(self.home / 'registry.db').resolve()}"
        return with_tls_defaults(self.database_url, self.database_tls)

    @property
    def database_tls(self) -> dict[str, str | None]:
        """The TLS settings as libpq parameters, added to each PostgreSQL URL that does not state them."""
        return {
            "sslmode": self.database_sslmode,
            "sslrootcert": self.database_sslrootcert,
            "sslcert": self.database_sslcert,
            "sslkey": self.database_sslkey,
        }

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def lineage_file(self) -> Path:
        """Where the file transport writes the lineage events."""
        return self.lineage.file or self.home / "lineage" / "events.jsonl"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def temporal_db_path(self) -> Path:
        return self.home / "temporal.db"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A secret's _FILE ranks with its variable (giving both is refused), so above the TOML file.
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            EnvWithoutSecretFiles(settings_cls),
            SecretFilesSource(settings_cls),
        ]
        config_file = os.environ.get("EVOLUTION_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def home_is_configured(settings: Settings) -> bool:
    """Whether the home came from ``EVOLUTION_HOME``, the TOML file or an override, rather than the default."""
    return "home" in settings.model_fields_set


def find_home(start: Path) -> Path | None:
    """The nearest ``.evolution`` directory in ``start`` or any parent (as git finds ``.git``), or None.

    Only looks: whether a missing home may be created is the caller's policy.
    """
    here = start.resolve()
    for folder in (here, *here.parents):
        candidate = folder / HOME_DIR_NAME
        if candidate.is_dir():
            return candidate
    return None


def load_settings(**overrides: Any) -> Settings:
    """Read the settings now (environment, then ``$EVOLUTION_CONFIG`` TOML), with explicit overrides first."""
    return Settings(**overrides)

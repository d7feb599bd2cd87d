"""One settings object for every process, read from ``EVOLUTION_*`` variables and an optional TOML file.

Nothing reads the environment at import time: entry points call :func:`load_settings` once and pass the result on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVOLUTION_", extra="ignore")

    home: Path = Field(default=Path(".evolution"), description="State directory of the embedded defaults.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite in the home dir."
    )

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_external: bool = Field(
        default=False, description="True: do not start a dev server, connect only."
    )
    temporal_ui_port: int = 8233
    task_queue: str = "evolution"

    serve_host: str = "127.0.0.1"
    serve_port: int = 8088
    dashboard_port: int = 8501
    dashboard_trusted_header: str | None = Field(
        default=None,
        description="Behind an authenticating proxy: the request header naming the signed-in user (e.g. "
        "X-Forwarded-User). Only set this when the proxy is the only way to reach the dashboard.",
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

    training_timeout_s: float = 24 * 3600.0
    training_memory_limit_mb: int | None = 4096
    canary_share: float = Field(default=0.1, gt=0.0, lt=1.0)

    tracing: Literal["auto", "console", "otlp", "off"] = Field(
        default="auto",
        description="Where spans go: auto = OTLP if otlp_endpoint is set, else stdout (JSON lines); or off.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector, e.g. http://collector:4318 (/v1/traces is added); None: no OTLP.",
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'registry.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

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
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("EVOLUTION_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings now (environment, then ``$EVOLUTION_CONFIG`` TOML), with explicit overrides first."""
    return Settings(**overrides)

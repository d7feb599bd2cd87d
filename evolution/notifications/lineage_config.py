"""Where OpenLineage events go: a JSON-lines file (the default, under the home) or an HTTP endpoint (Marquez, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from evolution.registry.lineage_events import DEFAULT_NAMESPACE


class LineageConfig(BaseModel):
    """``EVOLUTION_LINEAGE__*``. The outbox always holds every event; this says where it is delivered."""

    model_config = ConfigDict(extra="forbid")

    transport: Literal["file", "http"] = Field(
        default="file", description="file: one JSON event per line; http: POST to url + endpoint."
    )
    file: Path | None = Field(
        default=None,
        description="The events file (file transport); default: $EVOLUTION_HOME/lineage/events.jsonl.",
    )
    url: str | None = Field(
        default=None, description="Base URL of the lineage server (http transport), e.g. http://marquez:5000."
    )
    endpoint: str = Field(
        default="api/v1/lineage", description="Path under url that takes OpenLineage events."
    )
    api_key: SecretStr | None = Field(
        default=None, description="Sent as 'Authorization: Bearer <api_key>' (http transport)."
    )
    timeout_s: float = Field(default=5.0, gt=0, description="Per request.")
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Further attempts within one delivery pass after a 5xx or network error.",
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        min_length=1,
        max_length=200,
        description="OpenLineage namespace of jobs and datasets.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("lineage url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _url_for_http(self) -> LineageConfig:
        if self.transport == "http" and not self.url:
            raise ValueError("lineage transport 'http' needs url (EVOLUTION_LINEAGE__URL)")
        return self

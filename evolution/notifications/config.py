"""Configuration of the notification channels and of the routing/escalation policy (pydantic, no I/O).

Secrets (the SMTP password, the webhook secret) are ``SecretStr``: they print as ``**********``, are never logged,
never rendered into a message and never written to the outbox.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from evolution.notifications.port import Severity

Channel = Literal["email", "webhook"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "alert", "critical")


def _default_severity_channels() -> dict[Severity, list[Channel]]:
    return {
        "info": [],
        "warning": ["webhook"],
        "alert": ["email", "webhook"],
        "critical": ["email", "webhook"],
    }


def _email_only() -> list[Channel]:
    return ["email"]


def _addresses(values: list[str]) -> list[str]:
    cleaned = [v.strip() for v in values]
    for address in cleaned:
        if "@" not in address or any(c in address for c in " \r\n,;<>"):
            raise ValueError(f"not a plain e-mail address: {address!r}")
    return cleaned


class SmtpConfig(BaseModel):
    """An SMTP relay. ``ssl``: implicit TLS (usually port 465); ``starttls``: upgrade a plain connection (587)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(default=587, gt=0, lt=65536)
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = Field(
        default=None,
        description="PEM bundle to verify the server's certificate (private CA); None: system CAs.",
    )
    sender: str = Field(description="The From: address, e.g. evolution@example.com.")
    recipients: dict[Severity, list[str]] = Field(
        default_factory=dict,
        description="Who gets e-mail for each severity (operators); routes in the escalation policy add more.",
    )
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("sender")
    @classmethod
    def _sender_is_an_address(cls, value: str) -> str:
        return _addresses([value])[0]

    @field_validator("recipients")
    @classmethod
    def _recipients_are_addresses(cls, value: dict[Severity, list[str]]) -> dict[Severity, list[str]]:
        return {severity: _addresses(addresses) for severity, addresses in value.items()}

    @model_validator(mode="after")
    def _consistent(self) -> SmtpConfig:
        if self.ssl and self.starttls:
            raise ValueError("smtp: choose ssl (implicit TLS) or starttls, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("smtp: username and password go together")
        if self.password is not None and not (
            self.password.get_secret_value().isascii() and (self.username or "").isascii()
        ):
            raise ValueError(
                "smtp: username and password must be ASCII (smtplib sends AUTH credentials as ASCII)"
            )
        return self


class WebhookConfig(BaseModel):
    """An HTTPS endpoint that receives each notification as signed JSON (see ``evolution.notifications.webhook``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="http(s) URL the JSON is POSTed to. Treated as sensitive: logs show its host only."
    )
    secret: SecretStr = Field(
        description="HMAC-SHA256 key shared with the receiver (at least 16 characters)."
    )
    timeout_s: float = Field(default=5.0, gt=0, description="Per attempt: connect, send and read.")
    retries: int = Field(
        default=3, ge=0, le=10, description="Further attempts after a 5xx/408/429 or a network error."
    )
    backoff_s: float = Field(default=0.5, ge=0, description="First wait between attempts; doubles each time.")
    max_backoff_s: float = Field(default=8.0, ge=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("webhook url must start with http:// or https://")
        return value

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("webhook secret must be at least 16 characters")
        return value


class Route(BaseModel):
    """Messages matching every given filter also go to these channels (and these e-mail addresses).

    Filters are fnmatch patterns (``approval.*``, ``drift.alert``, ``acme-*``); an empty severity list means any.
    Routes only add: the outbox row is always written, and severity defaults are never taken away.
    """

    model_config = ConfigDict(extra="forbid")

    kinds: list[str] = Field(default_factory=lambda: ["*"])
    severities: list[Severity] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=lambda: ["*"])
    channels: list[Channel] = Field(default_factory=_email_only)
    recipients: list[str] = Field(
        default_factory=list,
        description="Extra e-mail addresses (e.g. the tenant's managers); none: the SMTP severity recipients.",
    )

    @field_validator("recipients")
    @classmethod
    def _recipients_are_addresses(cls, value: list[str]) -> list[str]:
        return _addresses(value)


class EscalationRule(BaseModel):
    """A message of ``kind`` with no later resolving message of its tenant after ``after_hours`` is escalated once.

    Resolution is read from the outbox itself: any later row of the same tenant whose kind matches ``resolved_by``
    (the decision, a failure, or a newer request superseding it; retraining runs one at a time per tenant, so at
    most one approval is pending per tenant). The escalation is written to the outbox as
    ``escalation.<kind>`` with ``body.escalation_of = <row id>``: that row is what makes it happen only once.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str = "approval.requested"
    after_hours: float = Field(gt=0)
    stop_after_hours: float | None = Field(
        default=None,
        description="Do not escalate requests older than this (e.g. past the approval deadline).",
    )
    resolved_by: list[str] = Field(
        default_factory=lambda: [
            "candidate.*",
            "canary.*",
            "approval.*",
            "integrity.*",
            "slo.retraining_duration",
        ]
    )
    tenants: list[str] = Field(default_factory=lambda: ["*"])
    severity: Severity = "alert"
    recipients: list[str] = Field(default_factory=list, description="The second recipient list.")
    webhook: bool = True

    @field_validator("recipients")
    @classmethod
    def _recipients_are_addresses(cls, value: list[str]) -> list[str]:
        return _addresses(value)

    @model_validator(mode="after")
    def _window(self) -> EscalationRule:
        if self.stop_after_hours is not None and self.stop_after_hours <= self.after_hours:
            raise ValueError(f"escalation {self.name}: stop_after_hours must be greater than after_hours")
        if not self.recipients and not self.webhook:
            raise ValueError(f"escalation {self.name}: no recipients and no webhook: it would reach nobody")
        return self


class EscalationConfig(BaseModel):
    """Which channels each notification reaches, and what is escalated when nobody acts."""

    model_config = ConfigDict(extra="forbid")

    severity_channels: dict[Severity, list[Channel]] = Field(
        default_factory=_default_severity_channels,
        description="Channels per severity besides the outbox (default: info outbox only, warning webhook, "
        "alert and critical e-mail + webhook).",
    )
    routes: list[Route] = Field(default_factory=list)
    escalations: list[EscalationRule] = Field(default_factory=list)

    @field_validator("escalations")
    @classmethod
    def _unique_names(cls, value: list[EscalationRule]) -> list[EscalationRule]:
        names = [rule.name for rule in value]
        if len(names) != len(set(names)):
            raise ValueError("escalation rule names must be unique")
        return value


class NotificationsConfig(BaseModel):
    """Everything the fan-out notifier needs; without smtp and webhook it is the outbox alone (embedded default)."""

    model_config = ConfigDict(extra="forbid")

    link_base_url: str | None = Field(
        default=None, description="The dashboard's public URL, put into e-mails and webhook payloads."
    )
    smtp: SmtpConfig | None = None
    webhook: WebhookConfig | None = None
    policy: EscalationConfig = Field(default_factory=EscalationConfig)

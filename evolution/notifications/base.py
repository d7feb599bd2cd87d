"""What every channel shares: results, the delivery error, and the text a person reads."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from evolution.errors import EvolutionError
from evolution.notifications.port import NotificationIn
from evolution.timeutil import as_utc

ChannelName = Literal["outbox", "email", "webhook"]


class DeliveryFailed(EvolutionError):
    """A channel could not deliver a notification. ``permanent``: retrying the same message will not help."""

    error_type = "DeliveryFailed"

    def __init__(self, channel: str, detail: str, *, permanent: bool, attempts: int = 1) -> None:
        super().__init__(f"{channel}: {detail}")
        self.channel = channel
        self.detail = detail
        self.permanent = permanent
        self.attempts = attempts


class ChannelResult(BaseModel):
    channel: ChannelName
    ok: bool
    detail: str = ""
    attempts: int = 1
    permanent: bool = False


class DeliveryResult(BaseModel):
    """What happened to one notification on each channel it was routed to (never contains a secret)."""

    tenant_id: str
    kind: str
    severity: str
    outbox_id: int | None = None
    channels: list[ChannelResult] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.channels)

    @property
    def failed(self) -> list[ChannelResult]:
        return [c for c in self.channels if not c.ok]


def redact_url(url: str) -> str:
    """Scheme, host and port only: webhook URLs often carry a token in their path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


# What the reader should do, by kind (first matching prefix wins). Written for an agronomist or a manager.
_GUIDANCE: tuple[tuple[str, str], ...] = (
    (
        "escalation.",
        "Nobody has acted on the notification below within the agreed time. Please make sure it is handled, "
        "or hand it to someone who can.",
    ),
    (
        "approval.requested",
        "A manager should review the candidate in the dashboard (Governance) and approve or reject it before "
        "the approval deadline, e.g. `evolution approve --tenant <tenant> --model <model>`. If nobody decides, "
        "the candidate is dropped and the current model keeps serving.",
    ),
    (
        "candidate.",
        "Nothing to do: this records a decision. The dashboard shows the audit trail.",
    ),
    (
        "canary.",
        "Nothing to do: the current model keeps serving. The dashboard shows why the candidate was not promoted.",
    ),
    (
        "drift.alert",
        "The incoming data no longer looks like the data the model learned from. Forecasts may be less "
        "accurate until a retrained model is approved; check the drift report and whether data sources changed.",
    ),
    (
        "drift.",
        "Early warning that the incoming data is shifting. No action is needed yet; keep an eye on the drift "
        "report.",
    ),
    (
        "retraining.blocked",
        "Retraining did not start. An admin should check the tenant's quota (GPU-hours, budget) or the "
        "circuit breaker, then start it again with `evolution retrain`.",
    ),
    (
        "integrity.",
        "A signature or digest did not verify, so the model was quarantined and is not served. An admin "
        "should investigate (`evolution verify`) before anything else is promoted.",
    ),
    (
        "slo.",
        "A service objective was missed. Operators should check the worker and the schedules; the subject "
        "says which objective.",
    ),
    (
        "quota.",
        "A quota was reached. An admin can review the tenant's limits.",
    ),
)
_DEFAULT_GUIDANCE = "See the dashboard for details."


def guidance(kind: str) -> str:
    for prefix, text in _GUIDANCE:
        if kind == prefix or kind.startswith(prefix if prefix.endswith(".") else prefix + "."):
            return text
    return _DEFAULT_GUIDANCE


def model_of(message: NotificationIn) -> str | None:
    for key in ("model_name", "model"):
        value = message.body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _detail_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def _wrapped(text: str) -> str:
    return textwrap.fill(text, width=76, initial_indent="  ", subsequent_indent="  ", break_long_words=False)


def render_text(
    message: NotificationIn, *, link_base_url: str | None, created_at: datetime | None = None
) -> str:
    """A plain-text account of a notification: who, what happened, what to do, where to look."""
    lines = [
        f"Controlled Evolution — {message.severity.upper()}",
        "",
        f"Tenant:    {message.tenant_id}",
    ]
    model = model_of(message)
    if model:
        lines.append(f"Model:     {model}")
    lines.append(f"Event:     {message.kind}")
    if created_at is not None:
        lines.append(f"Time:      {as_utc(created_at).strftime('%Y-%m-%d %H:%M UTC')}")
    lines += [
        "",
        "What happened",
        _wrapped(message.subject),
        "",
        "What to do",
        _wrapped(guidance(message.kind)),
    ]
    details = [(k, v) for k, v in message.body.items() if k not in ("model_name", "model")]
    if details:
        lines += ["", "Details"]
        lines += [f"  {key}: {_detail_value(value)[:500]}" for key, value in details]
    if link_base_url:
        lines += ["", f"Dashboard: {link_base_url}"]
    lines += [
        "",
        "--",
        f"Sent by Controlled Evolution for tenant {message.tenant_id} ({message.severity} notification).",
    ]
    return "\n".join(lines) + "\n"

"""The notifier port: what a notification is, and the one method every channel implements.

Light on purpose (pydantic and the permission table only): the activities that raise notifications import it, and
the workflows reference those activities' definitions inside Temporal's sandbox.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel

from evolution.security import Action, Principal, authorize

Severity = Literal["info", "warning", "alert", "critical"]


class NotificationIn(BaseModel):
    tenant_id: str
    severity: Severity
    kind: str
    subject: str
    body: dict[str, Any] = {}


class Notifier(Protocol):
    def notify(self, message: NotificationIn) -> None: ...


def notify_as(principal: Principal | None, notifier: Notifier, message: NotificationIn) -> None:
    """Send a notification on a principal's behalf (the orchestrator's activities act as the system)."""
    authorize(principal, Action.NOTIFY, message.tenant_id)
    notifier.notify(message)

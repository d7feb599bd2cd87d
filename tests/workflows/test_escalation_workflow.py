"""The installation's ``notify-escalations`` schedule and the NotificationEscalations workflow it starts, on a real
Temporal dev server: an approval request nobody acted on for longer than the rule allows reaches the second list
(here a signed webhook) once, and the escalation is recorded in the outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import EscalationsIn, EscalationsOut
from evolution.notifications.config import (
    EscalationConfig,
    EscalationRule,
    NotificationsConfig,
    WebhookConfig,
)
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import reading, transaction
from evolution.registry.schema import Notification
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from tests.support.notification_servers import WebhookReceiver, webhook_server
from workers.orchestrator import TemporalOrchestrator
from workers.worker import build_worker
from workflows.escalations import EscalationWorkflow

SECRET = "escalation-test-secret-0123456789"
TENANT = "acme"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_server(SECRET) as server:
        yield server


@pytest.fixture
def escalating_services(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[Services]:
    notifications = NotificationsConfig(
        webhook=WebhookConfig(
            url=receiver.url, secret=SecretStr(SECRET), timeout_s=5, retries=1, backoff_s=0.01
        ),
        policy=EscalationConfig(escalations=[EscalationRule(name="directors", after_hours=4)]),
    )
    services = build_services(Settings(home=tmp_path / "home", notifications=notifications))
    services.tenants.ensure_tenant(Principal(user="root", role=Role.ADMIN, tenants=("*",)), TENANT)
    yield services
    services.close()


@pytest.fixture
async def escalation_worker(
    temporal_env: WorkflowEnvironment, escalating_services: Services, task_queue: str
) -> AsyncIterator[None]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with build_worker(
            temporal_env.client, escalating_services, task_queue, executor, max_cached_workflows=0
        ):
            yield


def pending_approval(services: Services, hours_ago: float) -> None:
    """An approval request as the retraining workflow writes it, dated ``hours_ago`` in the past."""
    with transaction(services.factory, TENANT) as session:
        session.add(
            Notification(
                tenant_id=TENANT,
                severity="info",
                kind="approval.requested",
                subject="Approve yield v2?",
                body={"model_name": "yield"},
                created_at=utcnow() - timedelta(hours=hours_ago),
            )
        )


async def test_the_escalation_schedule_runs_every_ten_minutes_and_skips_overlaps(
    temporal_env: WorkflowEnvironment, orchestrator: TemporalOrchestrator, task_queue: str
) -> None:
    first = await orchestrator.ensure_escalation_schedule()
    again = await orchestrator.ensure_escalation_schedule()
    handle = temporal_env.client.get_schedule_handle(first)
    try:
        assert first == again == "notify-escalations"
        described = await handle.describe()
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(minutes=10)]
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("NotificationEscalations", task_queue)
    finally:
        await handle.delete()


async def test_an_approval_nobody_acted_on_is_escalated_once(
    temporal_env: WorkflowEnvironment,
    escalating_services: Services,
    escalation_worker: None,
    receiver: WebhookReceiver,
    task_queue: str,
) -> None:
    pending_approval(escalating_services, hours_ago=5)

    async def run() -> EscalationsOut:
        return await temporal_env.client.execute_workflow(
            EscalationWorkflow.run,
            EscalationsIn(),
            id=f"notify-escalations/{uuid.uuid4().hex}",
            task_queue=task_queue,
        )

    first, second = await run(), await run()
    assert (first.escalated, first.failed_channels) == (1, 0)
    assert second.escalated == 0  # its escalation row is in the outbox now
    assert [r.verified for r in receiver.delivered] == [True]
    with reading(escalating_services.factory, TENANT) as session:
        kinds = list(session.scalars(select(Notification.kind).order_by(Notification.id)))
    assert kinds == ["approval.requested", "escalation.approval.requested"]

"""Inside an activity, log lines carry the workflow and activity ids (ActivityEnvironment, no server)."""

from __future__ import annotations

import dataclasses
import json
import logging

from temporalio import activity
from temporalio.testing import ActivityEnvironment

from evolution.observability.logs import JsonFormatter
from workers.log_context import ActivityContext


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter("worker"))
        self.addFilter(ActivityContext())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_activity_log_lines_carry_workflow_and_activity_ids() -> None:
    handler = Capture()
    logger = logging.getLogger("evolution.activity-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    @activity.defn(name="scan_drift")
    async def scan() -> None:
        logger.info("scanning", extra={"tenantId": "acme"})

    try:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, workflow_id="drift-scan/acme", activity_type="scan_drift")
        await env.run(scan)
        logger.info("outside any activity")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in handler.lines)
    assert inside["workflowId"] == "drift-scan/acme" and inside["activityId"].startswith("scan_drift/")
    assert inside["tenantId"] == "acme"
    assert "workflowId" not in outside and "activityId" not in outside

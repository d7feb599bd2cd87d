"""Adds the Temporal workflow and activity ids to log records emitted inside an activity."""

from __future__ import annotations

import logging

from temporalio import activity


class ActivityContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if activity.in_activity():
            info = activity.info()
            record.workflowId = info.workflow_id
            record.activityId = f"{info.activity_type}/{info.activity_id}"
        return True

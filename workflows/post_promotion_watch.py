"""The post-promotion watch (``watch/{tenant}/{model}``): started by a promotion that had a canary, it looks every
``look_interval_s`` at the paired errors of the champion and the one it replaced, and ends kept (the period passed
without harm), rolled back (harm: the previous champion restored through the registry), superseded (the champion
changed meanwhile) or expired (the longest period passed without enough labels). Every end is audited and notified.

The harm test (its configuration, state and cursor) lives in the watch's row, not here: a watch started by hand
through the Temporal client names ids and a period, nothing that could decide. The workflow continues as new every
``LOOKS_PER_RUN`` looks so that a watch of weeks keeps a short history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.watch import WatchActivities
    from evolution.canary.watch_models import (
        WatchEndIn,
        WatchInput,
        WatchLookOut,
        WatchResult,
        WatchStartIn,
        WatchStepIn,
    )

from workflows.policies import HEARTBEAT_TIMEOUT, LOOK_TIMEOUT, REGISTRY_TIMEOUT, TRANSIENT_RETRY

LOOKS_PER_RUN = 500


@workflow.defn(name="PostPromotionWatch")
class PostPromotionWatchWorkflow:
    def __init__(self) -> None:
        self._last: WatchLookOut | None = None

    @workflow.query(name="last_look")
    def last_look(self) -> WatchLookOut | None:
        return self._last

    @workflow.run
    async def run(self, inp: WatchInput) -> WatchResult:
        watch_id = inp.watch_id
        if watch_id is None:
            started = await workflow.execute_activity_method(
                WatchActivities.start_watch,
                WatchStartIn(
                    tenant_id=inp.tenant_id,
                    model_name=inp.model_name,
                    champion_version_id=inp.champion_version_id,
                    previous_version_id=inp.previous_version_id,
                    workflow_id=workflow.info().workflow_id,
                    policy=inp.policy,
                ),
                start_to_close_timeout=REGISTRY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=TRANSIENT_RETRY,
            )
            watch_id = started.watch_id
        step = WatchStepIn(tenant_id=inp.tenant_id, watch_id=watch_id)
        for _ in range(LOOKS_PER_RUN):
            await workflow.sleep(timedelta(seconds=inp.policy.look_interval_s))
            look = await workflow.execute_activity_method(
                WatchActivities.watch_look,
                step,
                start_to_close_timeout=LOOK_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=TRANSIENT_RETRY,
            )
            self._last = look
            if look.verdict != "continue":
                ended = await workflow.execute_activity_method(
                    WatchActivities.end_watch,
                    WatchEndIn(
                        tenant_id=inp.tenant_id,
                        watch_id=watch_id,
                        request_id=f"{workflow.info().workflow_id}/{watch_id}/end",
                    ),
                    start_to_close_timeout=REGISTRY_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=TRANSIENT_RETRY,
                )
                return WatchResult(
                    tenant_id=inp.tenant_id,
                    model_name=inp.model_name,
                    watch_id=watch_id,
                    status=ended.status,
                    reason=ended.message,
                    labels=ended.labels,
                    q_harm=ended.q_harm,
                )
        workflow.continue_as_new(inp.model_copy(update={"watch_id": watch_id}))

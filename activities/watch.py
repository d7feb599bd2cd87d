"""The post-promotion watch's steps as activities: start it, look, end it (rolling back on harm)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.canary.watch_models import (
    WatchEndIn,
    WatchEndOut,
    WatchLookOut,
    WatchStartIn,
    WatchStartOut,
    WatchStepIn,
)
from evolution.observability.tracing import span

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.canary.watch import PostPromotionWatches


class WatchActivities:
    def __init__(self, watches: PostPromotionWatches) -> None:
        self._watches = watches

    @activity.defn(name="start_watch")
    @domain_errors_are_final
    @heartbeats
    def start_watch(self, inp: WatchStartIn) -> WatchStartOut:
        return self._watches.start(inp)

    @activity.defn(name="watch_look")
    @domain_errors_are_final
    @heartbeats
    def watch_look(self, inp: WatchStepIn) -> WatchLookOut:
        with span("Serving", tenant=inp.tenant_id, watch_id=inp.watch_id, role="watch"):
            return self._watches.look(inp)

    @activity.defn(name="end_watch")
    @domain_errors_are_final
    @heartbeats
    def end_watch(self, inp: WatchEndIn) -> WatchEndOut:
        return self._watches.end(inp)

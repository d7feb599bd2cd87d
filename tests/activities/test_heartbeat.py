"""Every activity heartbeats while its body runs, and every workflow step asks for a heartbeat within 30 s.

The beats come from beside the body (a side thread for a sync activity, a task for an async one), so a body that
blocks for minutes in a database still shows Temporal a live worker; the progress a body reports is repeated.
ActivityEnvironment, no server: the body waits for the beats it expects (an event, never a sleep).
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.testing import ActivityEnvironment

from activities.approvals import ApprovalActivities
from activities.breaker import BreakerActivities
from activities.canary import CanaryActivities
from activities.drift import DriftActivities
from activities.escalations import EscalationActivities
from activities.gc import GcActivities
from activities.heartbeat import does_heartbeat, heartbeating, heartbeats
from activities.reconciler import ReconcilerActivities
from activities.registry import RegistryActivities
from activities.training import TrainingActivities
from workflows.policies import HEARTBEAT_TIMEOUT, TRAINING_HEARTBEAT

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ACTIVITY_CLASSES = [
    ApprovalActivities,
    BreakerActivities,
    CanaryActivities,
    DriftActivities,
    EscalationActivities,
    GcActivities,
    ReconcilerActivities,
    RegistryActivities,
    TrainingActivities,
]
HANG_GUARD_S = 30.0  # only so that a broken helper fails the test instead of hanging it


class Beats:
    """Heartbeats as ActivityEnvironment delivers them; a waiter is woken when the count reaches its mark."""

    def __init__(self) -> None:
        self.details: list[tuple[Any, ...]] = []
        self._changed = threading.Condition()

    def __call__(self, *details: Any) -> None:
        with self._changed:
            self.details.append(details)
            self._changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.details) >= count, timeout=HANG_GUARD_S)


def environment(beats: Beats) -> ActivityEnvironment:
    env = ActivityEnvironment()
    # A short heartbeat timeout: the helper beats at a fraction of it.
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(milliseconds=200))
    env.on_heartbeat = beats
    return env


def side_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "activity-heartbeat"]


def test_a_sync_body_that_never_heartbeats_is_heartbeated_for_from_a_side_thread() -> None:
    beats = Beats()

    @activity.defn(name="blocking_step")
    @heartbeats
    def blocking_step(wanted: int) -> bool:
        return beats.wait_for(wanted)  # blocks this thread, as a long query would

    assert environment(beats).run(blocking_step, 3) is True
    assert len(beats.details) >= 3
    assert side_threads() == []  # the beats stop with the body


def test_progress_reported_by_the_body_is_repeated_by_the_side_beats() -> None:
    beats = Beats()

    @activity.defn(name="collecting_step")
    def collecting_step() -> bool:
        with heartbeating("planning") as beat:
            if not beats.wait_for(1):
                return False
            beat("collected v3")
            seen = len(beats.details)
            return beats.wait_for(seen + 2)

    assert environment(beats).run(collecting_step) is True
    assert beats.details[0] == ("planning",)
    assert beats.details[-2:] == [("collected v3",), ("collected v3",)]


async def test_an_async_body_is_heartbeated_for_from_a_task() -> None:
    beats = Beats()

    @activity.defn(name="awaiting_step")
    @heartbeats
    async def awaiting_step(wanted: int) -> bool:
        return await asyncio.to_thread(beats.wait_for, wanted)

    assert await environment(beats).run(awaiting_step, 3) is True
    assert len(beats.details) >= 3


def test_outside_an_activity_the_body_simply_runs() -> None:
    @heartbeats
    def plain(x: int) -> int:
        return x + 1

    assert plain(1) == 2


def test_every_activity_heartbeats() -> None:
    activities = {
        f"{cls.__name__}.{name}": member
        for cls in ACTIVITY_CLASSES
        for name, member in vars(cls).items()
        if hasattr(member, "__temporal_activity_definition")
    }
    assert len(activities) >= 20, sorted(activities)
    silent = sorted(name for name, fn in activities.items() if not does_heartbeat(fn))
    assert silent == []


def test_every_workflow_step_has_a_heartbeat_timeout_of_at_most_30_s() -> None:
    assert timedelta(0) < HEARTBEAT_TIMEOUT <= timedelta(seconds=30)
    assert TRAINING_HEARTBEAT == HEARTBEAT_TIMEOUT
    calls = []
    for path in sorted(WORKFLOWS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith(("execute_activity", "start_activity"))
            ):
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((f"{path.name}:{node.lineno}", keywords.get("heartbeat_timeout")))
    assert len(calls) >= 8, calls
    missing = [where for where, timeout in calls if timeout is None]
    assert missing == []
    # The named constants only (capped further by the tests' step_timeout_s), so the bound above covers them.
    assert {t for _, t in calls} <= {
        "HEARTBEAT_TIMEOUT",
        "_capped(HEARTBEAT_TIMEOUT, inp.step_timeout_s)",
        "self._step_timeout(HEARTBEAT_TIMEOUT)",
        "self._step_timeout(TRAINING_HEARTBEAT)",
    }, calls

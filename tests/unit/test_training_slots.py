"""A worker runs at most N trainings at once; the others wait their turn, heartbeating, and a cancelled wait frees
nothing it did not hold."""

from __future__ import annotations

import asyncio

import pytest

from evolution.errors import InvalidInput
from evolution.training.slots import TrainingSlots


async def test_no_more_than_the_limit_run_at_once_and_waiters_heartbeat_in_turn() -> None:
    slots = TrainingSlots(2, heartbeat_interval_s=0.02)
    running: list[int] = []
    peak = 0
    started: list[int] = []
    beats: dict[int, list[str]] = {i: [] for i in range(6)}

    async def training(i: int) -> None:
        nonlocal peak
        async with slots.hold(f"training {i}", beats[i].append):
            started.append(i)
            running.append(i)
            peak = max(peak, len(running))
            await asyncio.sleep(0.1)
            running.remove(i)

    tasks = []
    for i in range(6):  # in arrival order, one event-loop turn apart
        tasks.append(asyncio.ensure_future(training(i)))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)

    assert peak == 2
    assert started == list(range(6))  # first come, first served
    assert beats[0] == beats[1] == []  # they never waited
    assert all(beats[i] for i in range(2, 6))
    assert "training 5 waits for a training slot (2 running in this worker)" in beats[5]
    assert (slots.running, slots.waiting) == (0, 0)


async def test_a_cancelled_wait_takes_no_slot_and_loses_none() -> None:
    slots = TrainingSlots(1, heartbeat_interval_s=0.02)
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.hold("first"):
            await release.wait()

    async def waiter() -> None:
        async with slots.hold("second"):
            raise AssertionError("a cancelled waiter must not run")

    first = asyncio.ensure_future(holder())
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(waiter())
    await asyncio.sleep(0.05)
    assert (slots.running, slots.waiting) == (1, 1)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    release.set()
    await first

    async def third() -> str:
        async with slots.hold("third"):
            return "ran"

    assert await asyncio.wait_for(third(), timeout=1) == "ran"  # the one slot is free again
    assert (slots.running, slots.waiting) == (0, 0)


async def test_an_error_in_the_body_frees_the_slot() -> None:
    slots = TrainingSlots(1)
    with pytest.raises(RuntimeError):
        async with slots.hold("failing"):
            raise RuntimeError("the job broke")
    async with slots.hold("next"):
        assert slots.running == 1


async def test_no_limit_never_waits() -> None:
    slots = TrainingSlots(None)
    entered = 0

    async def training() -> None:
        nonlocal entered
        async with slots.hold("any"):
            entered += 1
            await asyncio.sleep(0.05)

    tasks = [asyncio.ensure_future(training()) for _ in range(20)]
    await asyncio.sleep(0.02)
    assert entered == 20 and slots.waiting == 0
    await asyncio.gather(*tasks)


def test_a_limit_below_one_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="max concurrent trainings must be at least 1"):
        TrainingSlots(0)

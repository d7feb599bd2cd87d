"""Every recorded workflow history still replays against today's code.

A change to a workflow that would break the executions already running fails here; guard it with
``workflow.patched`` (a named constant beside the workflow) and keep the history recorded before the change.
"""

from __future__ import annotations

import pytest

from tests.support.histories import HISTORIES, recorded_history, replay

RECORDED = sorted(path.stem for path in HISTORIES.glob("*.json"))


def test_histories_are_recorded() -> None:
    assert RECORDED, f"no recorded histories in {HISTORIES}"


@pytest.mark.parametrize("name", RECORDED)
async def test_recorded_history_replays(name: str) -> None:
    await replay(recorded_history(name))

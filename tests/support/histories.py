"""Recorded workflow histories: where they are kept, replaying one, and refreshing them after a deliberate change.

Every history under ``tests/workflows/histories/`` is replayed by ``tests/workflows/test_replay.py``. A test that has
just finished a run calls :func:`replay_and_keep`; with ``EVOLUTION_RECORD_HISTORIES=1`` it also replaces the
recorded file (do that only for a change guarded by ``workflow.patched``, and keep the old history too).
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.worker import WORKFLOWS

HISTORIES = Path(__file__).resolve().parents[1] / "workflows" / "histories"


def recorded_history(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())


async def replay(history: WorkflowHistory) -> None:
    """Replay against today's workflow code: a nondeterminism error means a change needed ``workflow.patched``."""
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(history)


async def replay_and_keep(history: WorkflowHistory, name: str) -> None:
    await replay(history)
    if os.environ.get("EVOLUTION_RECORD_HISTORIES"):
        (HISTORIES / f"{name}.json").write_text(history.to_json())

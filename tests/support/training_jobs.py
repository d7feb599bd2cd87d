"""Training jobs and stand-in 'interpreters' shared by the compute backend tests (local and Kubernetes)."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from evolution.demo.synthetic import CATEGORICAL, FEATURES, TARGET, generate_rows
from evolution.training.compute import TrainingJob, write_dataset
from evolution.training.trainer import TrainingConfig

START = datetime(2024, 1, 1, tzinfo=UTC)
CONFIG = TrainingConfig(features=FEATURES, categorical=sorted(CATEGORICAL), target=TARGET, max_iter=60)

# A job that starts a grandchild in its process group, records both pids, then hangs.
HANGING_JOB = 'sleep 300 &\necho "$$ $!" > "{pids}"\nwait'


def make_job(tmp_path: Path, dataset: Path, **overrides: object) -> TrainingJob:
    fields: dict[str, object] = {
        "job_id": "job-1",
        "tenant": "acme",
        "model_name": "yield",
        "dataset_path": str(dataset),
        "config": CONFIG,
        "seed": 13,
        "output_dir": str(tmp_path / "out"),
        "timeout_s": 60.0,
    }
    return TrainingJob.model_validate(fields | overrides)


def training_dataset(path: Path, rows: int = 1500) -> Path:
    return write_dataset(generate_rows(rows, seed=17, start=START), path)


def dataset_without_target(path: Path) -> Path:
    rows = [{k: v for k, v in r.items() if k != TARGET} for r in generate_rows(300, seed=1, start=START)]
    return write_dataset(rows, path)


def fake_python(tmp_path: Path, body: str) -> str:
    """An 'interpreter' that ignores its arguments and runs ``body`` in /bin/sh."""
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def alive(pid: int) -> bool:
    """Running and not a zombie (a killed orphan may wait for a reaper that is slow in containers)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


async def wait_for_pids(path: Path, count: int, timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(p) for p in path.read_text().split()]
            if len(pids) >= count:
                return pids
        await asyncio.sleep(0.05)
    raise AssertionError(f"the job did not write {count} pids to {path}")


async def all_dead(pids: list[int], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        await asyncio.sleep(0.05)
    return False


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether ``condition`` became true within ``timeout_s`` (polled every 50 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True

"""`evolution retrain` waits for its run on the real services (the shared demo state's): its exit code is the outcome,
with the reason and the next step; Ctrl-C stops the waiting, not the run. (A wait that ends promoted, exit 0, is the
README's `retrain` line in tests/e2e/test_docs_commands.py; the rendering is tests/unit/test_retrain_wait.py.)"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import EVOLUTION, DemoStack, as_from_a_terminal, seed_tenant_with_cli
from tests.e2e.conftest import cli as run


def test_a_run_that_fails_exits_1_with_its_reason_and_the_next_step(demo_stack: DemoStack) -> None:
    env = demo_stack.env
    assert run(env, "tenant", "create", "nodata").returncode == 0
    waited = run(env, "retrain", "-t", "nodata", "-m", "yield", timeout=180)
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "started retrain/nodata" in waited.stdout
    assert "finished" in waited.stdout and "failed: InsufficientData" in waited.stdout
    first, *rest = waited.stderr.splitlines()
    assert first.startswith("error: retraining of nodata/yield ended failed: InsufficientData"), waited.stderr
    assert "no sealed snapshot" in first
    assert rest == [
        "next: seal a snapshot: evolution snapshot seal --tenant nodata; "
        "then evolution retrain --tenant nodata --model yield"
    ]


@pytest.mark.timeout(900)
def test_ctrl_c_stops_waiting_but_not_the_run(demo_stack: DemoStack) -> None:
    env = demo_stack.env
    seed_tenant_with_cli(env, demo_stack.folder, tenant="patient")
    waiting = subprocess.Popen(
        as_from_a_terminal([EVOLUTION, "retrain", "-t", "patient", "-m", "yield"]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stdout is not None
        first = waiting.stdout.readline()  # printed once the run is started
        assert first.startswith("started retrain/patient"), first
        waiting.send_signal(signal.SIGINT)
        out, err = waiting.communicate(timeout=60)
    finally:
        if (
            waiting.poll() is None
        ):  # a wait that ignored Ctrl-C would otherwise poll a stopped server for ever
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 130, out + err
    assert "stopped waiting; the retraining goes on. follow it: evolution status --tenant patient" in err
    assert "Traceback" not in err

    # The run went on: it trains and waits for approval as if nobody had stopped looking.
    deadline = (
        time.monotonic() + 450
    )  # a CLI call takes seconds on a loaded machine: bound the time, not the calls
    while time.monotonic() < deadline:
        status = run(env, "status", "-t", "patient").stdout
        if "waiting for approval" in status:
            break
        time.sleep(1)
    assert "waiting for approval" in status, status
    rejected = run(env, "reject", "-t", "patient", "-m", "yield", "--reason", "the test is done with it")
    assert rejected.returncode == 0, rejected.stderr

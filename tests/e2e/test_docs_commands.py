"""Every `evolution` command line of README.md and docs/*.md runs as written (tests/support/doc_commands.py extracts
them), in reading order, against the shared demo state with its services running: the demo's tenant acme-agro, and
the README's own tenant acme, which the README's lines create, feed, train and approve.

What cannot run here, or runs otherwise, is listed below line by line with the reason; a documented line that is
in no list and fails, or a list entry no document has any more, fails the test."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from evolution.data.sources import load_source_key, records_to_events
from evolution.demo.synthetic import TARGET, DriftSpec, generate_rows
from evolution.platform.settings import Settings
from evolution.timeutil import utcnow
from tests.e2e.conftest import EVOLUTION, DemoStack, private_env
from tests.support.doc_commands import DocLine, concrete, extract

ROOT = Path(__file__).resolve().parents[2]

# Upper-case words of a synopsis and what the test puts in their place.
PLACEHOLDERS = {
    "DEST": "backups",
    "SRC": "backups",
    "T": "acme",
    "SNAPSHOT_ID": "@latest-snapshot@",
    "DIR": "exported-champion",
    "KEY": "signing-key",
}

# Lines as written that the test does not run, and why.
NOT_RUN = {
    "evolution demo [--fast] [--keep-running] [--byo]": "the demo made the state every line here runs against "
    "(tests/e2e/conftest.py demo_stack); --byo is tests/e2e/test_byo_lifecycle.py",
    "evolution demo --byo --fast": "a second whole demo; tests/e2e/test_byo_lifecycle.py runs it",
    "EVOLUTION_LINEAGE__TRANSPORT=http EVOLUTION_LINEAGE__URL=http://localhost:5000 evolution demo --fast": "a "
    "second whole demo, against a lineage server; tests/integration/test_lineage_events.py delivers over HTTP",
    "evolution up": "runs until Ctrl-C, and the demo's services already hold its ports; tests/e2e/test_up.py",
    "EVOLUTION_BACKUP_PG_URL=postgresql+psycopg://backup:…@db:5432/evolution evolution backup create /backups "
    "--what registry,artifacts --wal-archive /srv/wal": "PostgreSQL base backup to production paths; "
    "tests/integration/test_postgres_pitr_drill.py",
    "evolution restore /backups --to-time 2026-11-26T09:41:00Z --pg-data-dir /var/lib/postgresql/15/recovered "
    "[--wal-archive /srv/wal] [--pg-socket-dir /var/run/postgresql] [--no-archiving]": "PostgreSQL "
    "point-in-time recovery into production paths; tests/integration/test_postgres_pitr_drill.py",
    "evolution backup create /mnt/secrets/evolution-keys --what keys": "a production path (a secret store); the "
    "same command on a folder of the test runs from backup-and-restore.md's synopsis",
    "evolution backup create /backups --what registry,artifacts": "a production path; the same command on a "
    "folder of the test runs from backup-and-restore.md's synopsis",
    "evolution restore /mnt/secrets/evolution-keys --what keys": "a production path; "
    "tests/integration/test_backup_restore.py restores keys apart",
    "evolution restore /backups": "a production path; the same command on a folder of the test runs from "
    "backup-and-restore.md's synopsis",
    "evolution model define acme-agro yield --feature … --target yield_t_ha --image "
    "registry.example.com/acme/yield-trainer@sha256:<64 hex> --command python --arg /app/train.py --cpu 2 "
    "--memory 4Gi --timeout 3h": "needs an image digest and Kubernetes; tests/e2e/test_model_cli.py defines "
    "image trainers",
}

# Concrete commands that run and must fail as the docs say they do at that point of the reading order.
REFUSED = {
    'evolution snapshot accept acme @latest-snapshot@ --reason "docs test"': (
        2,
        "not held",
        "only a window held by the data-quality checks can be accepted; the README's events are clean",
    ),
    "evolution reject --tenant acme --model yield": (
        2,
        "is waiting for approval",
        "the approve before it promoted the only candidate",
    ),
    'evolution approve --tenant acme --model yield --reason "docs test" --ticket-only': (
        2,
        "is waiting for approval",
        "nothing waits any more; tests/e2e/test_cli_lifecycle.py sends a ticket to a waiting run",
    ),
    'evolution reject --tenant acme --model yield --reason "docs test" --ticket-only': (
        2,
        "is waiting for approval",
        "nothing waits any more",
    ),
    "EVOLUTION_OPERATOR_USER=maria evolution approve -t acme -m yield --ticket-only": (
        2,
        "is waiting for approval",
        "nothing waits any more; tests/e2e/test_cli_lifecycle.py runs this with a waiting run",
    ),
    'evolution audit acknowledge-restore --tenant acme --reason "docs test"': (
        2,
        "nothing to acknowledge",
        "refused, as documented, when no restore to an earlier point left checkpoints beyond the chain",
    ),
    'evolution audit acknowledge-restore --tenant acme --reason "INC-42: restored 20261126T0930 to 09:41 after the '
    'bad migration" --backup 20261126T093012.118Z-4f01aa --restored-to 2026-11-26T09:41:00Z': (
        2,
        "nothing to acknowledge",
        "the same: no restore to an earlier point happened here",
    ),
    'evolution rollback --tenant acme --model yield --reason "docs test"': (
        2,
        "has no previous champion to restore",
        "acme has had one champion at that point; tests/integration/test_registry_service.py rolls back between two",
    ),
}

# Concrete commands that wait for what later lines do: started in the background, then left to finish.
IN_BACKGROUND = {
    "evolution retrain --tenant acme --model yield": (
        "waiting for approval",
        "promoted",
        "waits for its outcome: the approve two lines later promotes the candidate, and it exits 0",
    ),
}

# Concrete commands that ask on a terminal: run on a pseudo-terminal, answered.
TWICE = [("Password:", "docs password 1"), ("Repeat for confirmation:", "docs password 1")]
PROMPTS = {
    "evolution users add maria --role manager --tenant acme": TWICE,
    "evolution users add lena --role manager --tenant acme-agro": TWICE,
    "evolution users add ana --role viewer --tenant acme-agro": TWICE,
}

# Concrete commands run with another home: restoring over the running demo's home would pull it from under its
# services, so the restore goes into a second, empty home (and verifies it there).
OTHER_HOME = {"evolution restore backups"}


@dataclass
class Outcome:
    command: str
    code: int
    stdout: str
    stderr: str


def shell(command: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> Outcome:
    done = subprocess.run(
        ["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return Outcome(command, done.returncode, done.stdout, done.stderr)


def on_terminal(command: str, env: dict[str, str], cwd: Path, answers: list[tuple[str, str]]) -> Outcome:
    """Run with a pseudo-terminal as stdin (and no controlling terminal, so getpass reads it); type each answer
    once its prompt is out (getpass flushes what was typed before it asked)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        ["bash", "-c", command],
        env=env,
        cwd=cwd,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(follower)
    assert process.stderr is not None and process.stdout is not None
    seen = {process.stdout: b"", process.stderr: b""}
    try:
        for prompt, answer in answers:
            deadline = time.monotonic() + 120
            while (
                prompt.encode() not in b"".join(seen.values())
                and process.poll() is None
                and time.monotonic() < deadline
            ):
                ready, _, _ = select.select(list(seen), [], [], 0.5)
                for stream in ready:
                    seen[stream] += os.read(stream.fileno(), 4096)
            time.sleep(0.2)  # the prompt is written just before the terminal is set to not echo
            os.write(leader, (answer + "\n").encode())
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(leader)
    return Outcome(
        command,
        process.returncode,
        (seen[process.stdout] + stdout).decode(),
        (seen[process.stderr] + stderr).decode(),
    )


def signed_events(stack_env: dict[str, str], tenant: str, path: Path) -> None:
    """events.jsonl: 600 signed, labelled events of the README's source `sensors` (its key exists by then)."""
    keys = Settings(home=Path(stack_env["EVOLUTION_HOME"])).keys_dir
    key_id, private_pem = load_source_key(keys, tenant, "sensors")
    records = generate_rows(600, seed=17, start=utcnow() - timedelta(days=30), period_s=3600)
    events = records_to_events(records, tenant, key_id, private_pem, target=TARGET, request_prefix="docs")
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def drift_files(folder: Path) -> None:
    """base.csv and current.parquet for `drift compare`: the same columns, the window drifted."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    start = utcnow() - timedelta(days=10)
    base = generate_rows(400, seed=1, start=start)
    current = generate_rows(400, seed=2, start=start, drift=DriftSpec(at=start))
    columns = ["rain_mm", "temp_mean_c", "crop"]
    pacsv.write_csv(pa.table({c: [r[c] for r in base] for c in columns}), folder / "base.csv")
    pq.write_table(pa.table({c: [r[c] for r in current] for c in columns}), folder / "current.parquet")


def test_every_documented_line_is_run_listed_or_refused_as_documented() -> None:
    """Fast bookkeeping: the lists name only lines the docs have, and each line expands to runnable commands."""
    lines = extract(ROOT)
    assert len(lines) > 30, "the extraction found too few command lines"
    written = {line.text for line in lines}
    assert not set(NOT_RUN) - written, f"listed but no longer documented: {set(NOT_RUN) - written}"
    commands: list[str] = []
    for line in lines:
        if line.text in NOT_RUN:
            continue
        expanded = concrete(line.text, PLACEHOLDERS)
        assert expanded, f"{line}: a placeholder without a value, and not in NOT_RUN"
        commands += expanded
    for table in (REFUSED, IN_BACKGROUND, PROMPTS):
        stale = set(table) - set(commands)
        assert not stale, f"listed but no documented line expands to it: {stale}"
    assert set(commands) >= OTHER_HOME


@pytest.mark.slow
@pytest.mark.timeout(1500)  # about 45 commands; run alone, the test also waits for the demo state to be made
def test_every_documented_command_line_runs_as_written(demo_stack: DemoStack) -> None:
    work = demo_stack.folder / "docs-work"
    work.mkdir()
    # As from a clone: `.venv/bin/evolution` as the README writes it, and the examples a definition names.
    (work / ".venv").symlink_to(Path(EVOLUTION).parents[1])
    (work / "examples").symlink_to(ROOT / "examples")
    drift_files(work)
    env = {**demo_stack.env, "PATH": f"{Path(EVOLUTION).parent}{os.pathsep}{os.environ['PATH']}"}
    prepare: dict[str, Callable[[], None]] = {
        "evolution ingest events.jsonl --tenant acme": lambda: signed_events(
            env, "acme", work / "events.jsonl"
        )
    }
    background: list[tuple[DocLine, str, str, subprocess.Popen[str]]] = []
    failures: list[str] = []
    ran = 0
    started = time.monotonic()
    for line in extract(ROOT):
        if line.text in NOT_RUN:
            continue
        for command in concrete(line.text, PLACEHOLDERS) or []:
            if "@latest-snapshot@" in command:
                listed = shell("evolution snapshot list --tenant acme --json", env, work)
                command = command.replace("@latest-snapshot@", json.loads(listed.stdout)[-1]["id"])
                key = command.replace(json.loads(listed.stdout)[-1]["id"], "@latest-snapshot@")
            else:
                key = command
            if key in prepare:
                prepare[key]()
            ran += 1
            if key in IN_BACKGROUND:
                until, ends_with, _ = IN_BACKGROUND[key]
                background.append((line, command, ends_with, _start_waiting(command, env, work, until)))
                continue
            if key in PROMPTS:
                outcome = on_terminal(command, env, work, PROMPTS[key])
            elif key in OTHER_HOME:
                other = private_env(work / f"restored-{ran}")
                outcome = shell(command, {**other, "PATH": env["PATH"]}, work)
            else:
                outcome = shell(command, env, work)
            problem = _judge(key, outcome)
            if problem:
                failures.append(f"{line}\n  ran: {command}\n  {problem}")
    for line, command, ends_with, process in background:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
        if process.returncode != 0 or ends_with not in stdout:
            failures.append(
                f"{line}\n  ran in the background: {command}\n  exit {process.returncode}: "
                f"{stdout[-1500:]} {stderr[-1500:]}"
            )
    print(f"\n{ran} documented commands ran in {time.monotonic() - started:.1f} s")
    assert not failures, "\n\n".join(failures)


def _start_waiting(command: str, env: dict[str, str], cwd: Path, until: str) -> subprocess.Popen[str]:
    """Start ``command`` and return once its output says ``until`` (it goes on in the background)."""
    process = subprocess.Popen(
        ["bash", "-c", command], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if until in line:
                return process
    process.kill()
    raise AssertionError(
        f"{command} never said {until!r}: {''.join(seen)[-3000:]} {process.stderr.read()[-2000:] if process.stderr else ''}"
    )


def _judge(key: str, outcome: Outcome) -> str | None:
    """None when the command did what the docs say; else what went wrong."""
    said = f"exit {outcome.code}\n  stdout: {outcome.stdout[-1500:]}\n  stderr: {outcome.stderr[-1500:]}"
    if "Traceback" in outcome.stderr:
        return f"a traceback: {said}"
    if key in REFUSED:
        code, text, _ = REFUSED[key]
        if outcome.code != code or text not in outcome.stderr:
            return f"expected exit {code} saying {text!r}: {said}"
        if not re.match(r"^error: ", outcome.stderr):
            return f"a refusal not in the `error: …` style: {said}"
        return None
    if outcome.code != 0:
        return said
    return None

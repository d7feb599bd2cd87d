"""Everyday CLI commands: tenants, sources, ingestion with a summary, snapshots, errors that name the problem."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

from evolution.demo.synthetic import generate_rows
from evolution.timeutil import utcnow
from tests.e2e.conftest import EVOLUTION
from tests.e2e.conftest import cli as run


def test_ingest_prints_accepted_duplicate_rejected_and_names_the_field(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert run(cli_env, "tenant", "create", "acme").returncode == 0
    added = run(cli_env, "source", "add", "sensors", "--tenant", "acme")
    assert added.returncode == 0 and "mode 0600" in added.stdout

    records = generate_rows(40, seed=3, start=utcnow() - timedelta(hours=41))
    plain = tmp_path / "records.jsonl"
    plain.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    first = run(cli_env, "ingest", str(plain), "--tenant", "acme", "--sign-with", "sensors")
    assert first.returncode == 0, first.stderr
    assert "accepted 40  duplicate 0  rejected 0" in first.stdout
    again = run(cli_env, "ingest", str(plain), "--tenant", "acme", "--sign-with", "sensors")
    assert "accepted 0  duplicate 40  rejected 0" in again.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tenant": "acme", "request_id": "x"}\nnot json\n')
    rejected = run(cli_env, "ingest", str(bad), "--tenant", "acme")
    assert "accepted 0  duplicate 0  rejected 2" in rejected.stdout
    assert "event_time" in rejected.stderr and "malformed JSON" in rejected.stderr

    sealed = run(cli_env, "snapshot", "seal", "--tenant", "acme")
    assert sealed.returncode == 0 and "40 events" in sealed.stdout


def test_unknown_tenant_and_missing_file_are_clear_errors(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = run(cli_env, "ingest", str(tmp_path / "nope.jsonl"), "--tenant", "acme")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    unknown = run(cli_env, "versions", "--tenant", "ghost")
    assert unknown.returncode != 0 and "error: tenant 'ghost' does not exist" in unknown.stderr, unknown
    assert "Traceback" not in unknown.stderr
    bad_tenant = run(cli_env, "tenant", "create", "Bad Name")
    assert bad_tenant.returncode == 2 and "tenant id" in bad_tenant.stderr


def test_a_reader_that_goes_away_ends_a_command_quietly(cli_env: dict[str, str]) -> None:
    assert run(cli_env, "tenant", "create", "acme").returncode == 0
    listing = subprocess.Popen(
        [EVOLUTION, "audit", "-t", "acme"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # as `| head` does once it has its lines
    stderr = listing.stderr.read().decode()
    assert listing.wait(timeout=120) == 1  # click's own ending for a closed stdout, as for every command
    assert stderr == ""  # not "cannot reach a service: [Errno 32] Broken pipe"


def test_schedule_refuses_a_slip_of_an_interval_or_an_unknown_tenant_before_reaching_temporal(
    cli_env: dict[str, str],
) -> None:
    assert run(cli_env, "tenant", "create", "acme").returncode == 0
    for minutes in ("0", "-5", "0.5", "nan", "inf", "1e12"):
        refused = run(cli_env, "schedule", "-t", "acme", "-m", "yield", f"--every-minutes={minutes}")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(
            f"error: --every-minutes {float(minutes):g}: give 1 to 10080 minutes"
        )
        assert "Traceback" not in refused.stderr
    unknown = run(cli_env, "schedule", "-t", "nosuch", "-m", "yield")
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: tenant 'nosuch' does not exist")

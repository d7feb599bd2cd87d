"""Progress on long work (issue 17, item 3), in process: the CLI's meter draws rich bars only on a terminal and never
with --json (`drift compare` piped, and with --json on a pseudo-terminal, writes no bar and no escape code); the work
reports tasks whose advances add up to their totals (the ingest reader by bytes, the drift comparison by bytes or
rows and by feature). A bar drawn by the real command on a terminal: tests/e2e/test_progress_bars.py."""

from __future__ import annotations

import gzip
import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from rich.console import Console

from evolution.cli.progress import RichMeter, progress_meter
from evolution.cli.stats_commands import compare, read_columns
from evolution.data.input_files import event_lines, open_input
from evolution.progress import metered
from evolution.stats.drift import build_baseline, scan
from tests.support.progress import RecordingMeter

ROWS = 3000


def test_on_a_terminal_the_meter_draws_a_bar_per_task_and_leaves_it_full() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system="standard")
    with progress_meter(console=console) as meter:
        assert isinstance(meter, RichMeter)
        with meter.task("ingest events.jsonl", 2_000_000, "bytes") as advance:
            advance(1_500_000)
            advance(500_000)
        with meter.task("seal acme", 3) as advance:
            advance(3)
    drawn = out.getvalue()
    assert "\x1b[" in drawn  # drawn live, with escape codes
    assert "ingest events.jsonl" in drawn and "seal acme" in drawn
    assert "━" in drawn
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn).split("\r")[-1]  # the last frame, as text
    assert "2.0 MB / 2.0 MB" in final and "3 / 3" in final, final


def test_piped_or_with_json_there_is_no_meter_at_all() -> None:
    # Under pytest stderr is captured: not a terminal.
    with progress_meter() as meter:
        assert meter is None
    with progress_meter(as_json=True) as meter:
        assert meter is None
    # A console that is not a terminal (a file, a pipe) gets nothing drawn either.
    with progress_meter(console=Console(file=io.StringIO())) as meter:
        assert meter is None
    with metered(None, "nothing", 10) as advance:
        advance(10)  # a no-op when there is no meter


def test_importing_the_cli_loads_no_progress_bar_library() -> None:
    code = "import json, sys\nimport evolution.cli.main\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert not {"rich.progress", "rich.live", "evolution.cli.progress"} & loaded


def test_the_ingest_reader_advances_by_every_byte_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"n": i, "pad": "x" * (i % 50)}) + "\n" for i in range(ROWS)))
    meter = RecordingMeter()
    with (
        metered(meter, "ingest", path.stat().st_size, "bytes") as advance,
        open_input(path, advance) as handle,
    ):
        assert sum(1 for _ in event_lines(handle)) == ROWS
    assert meter.unbalanced() == [] and meter.tasks[0].total == path.stat().st_size


def _frame() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "rain_mm": rng.normal(50, 10, ROWS),
        "soil": np.array(rng.choice(["clay", "loam", "sand"], ROWS), dtype=object),
    }


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_reading_a_drift_file_advances_to_its_size_and_reads_the_same_columns(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"window{suffix}"
    table = pa.table(_frame())
    if suffix == ".parquet":
        pq.write_table(table, path, row_group_size=700)
    else:
        text = "rain_mm,soil\n" + "".join(f"{r},{s}\n" for r, s in zip(*_frame().values(), strict=True))
        path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    meter = RecordingMeter()
    metered_columns = read_columns(path, None, meter)
    plain = read_columns(path, None)
    assert meter.unbalanced() == [], meter.tasks
    (task,) = meter.tasks
    assert task.total == (ROWS if suffix == ".parquet" else path.stat().st_size)
    assert task.unit == ("items" if suffix == ".parquet" else "bytes")
    assert metered_columns.keys() == plain.keys()
    for name in plain:
        assert list(metered_columns[name]) == list(plain[name])


def test_the_drift_comparison_advances_feature_by_feature() -> None:
    meter = RecordingMeter()
    frame = _frame()
    baseline = build_baseline(frame, meter=meter)
    scan(baseline, frame, meter=meter)
    assert [(t.description, t.total) for t in meter.tasks] == [
        ("fit the baseline", 2),
        ("compare the window", 2),
    ]
    assert meter.unbalanced() == []


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("windows")
    frame = _frame()
    paths = []
    for name, shift in (("baseline.csv", 0.0), ("current.csv", 8.0)):
        rows = zip(frame["rain_mm"] + shift, frame["soil"], strict=True)
        path = root / name
        path.write_text("rain_mm,soil\n" + "".join(f"{r:.3f},{s}\n" for r, s in rows))
        paths.append(path)
    return paths[0], paths[1]


def test_piped_drift_compare_writes_its_result_without_a_bar_or_an_escape_code(
    windows: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    compare(*windows)  # stdout and stderr are pytest's pipes
    out, err = capsys.readouterr()
    assert "rain_mm" in out
    assert "━" not in out + err and "\x1b" not in out + err


def test_drift_compare_with_json_draws_no_bar_even_on_a_terminal(
    windows: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, child_side = pty.openpty()
    terminal = os.fdopen(child_side, "w")
    monkeypatch.setattr(sys, "stderr", terminal)
    assert sys.stderr.isatty()
    try:
        compare(*windows, as_json=True)
        terminal.flush()
        os.set_blocking(controller, False)
        try:
            drawn = os.read(controller, 65536)
        except BlockingIOError:
            drawn = b""
    finally:
        terminal.close()
        os.close(controller)
    out = capsys.readouterr().out
    assert drawn == b""
    assert json.loads(out)["level"] in ("ok", "warn", "alert") and "\x1b" not in out


@pytest.mark.parametrize("metered_read", [False, True])
def test_a_drift_file_whose_header_is_not_utf8_is_refused_by_name(
    tmp_path: Path, metered_read: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(b"rain_mm,garbage\xff\n1.0,2\n")
    with pytest.raises(typer.Exit) as refused:
        read_columns(path, None, RecordingMeter() if metered_read else None)
    assert refused.value.exit_code == 2
    assert "broken.csv: its header is not UTF-8 text" in capsys.readouterr().err

"""`evolution ingest` never crashes and never loses a good record, whatever file it is given (issue 14, item 4).

Each case of the battery mixes good lines with one kind of bad input (not UTF-8, not JSON, a bad time, a non-numeric
target, a wrong type, a BOM, CRLF, quoted CSV fields holding commas and newlines, a wrong delimiter, an empty file,
a 10 MB line, a directory, a binary file) and checks what a user sees and what is kept: the exit code, the summary
adding up (records read = accepted + duplicate + rejected), each bad record a dead letter whose reason names its line
and field, the good records stored (sealed into a snapshot and read back through the services), no traceback.

The cases run through typer's runner in this process (a process start costs seconds on a busy machine); two runs go
through the console script as a user types it. The hypothesis test feeds mutated and random files to the same command
and asserts the same accounting, against counts of its own.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from evolution.cli.main import app
from evolution.data.event_schema import MAX_EVENT_BYTES, sign_event
from evolution.data.input_files import SNIFF_BYTES, WIDE_BOMS, event_lines, open_input
from evolution.data.sources import load_source_key
from evolution.errors import InsufficientData
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import reading
from evolution.registry.schema import LearningEvent
from evolution.security import Principal, Role
from evolution.serving.app import create_app
from evolution.timeutil import iso, utcnow
from tests.e2e.conftest import cli
from tests.support.http_server import serving

TENANT = "acme"
SYSTEM = Principal.system(TENANT)
SUMMARY = re.compile(r"records read (\d+)  accepted (\d+)  duplicate (\d+)  rejected (\d+)")


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def summary(self) -> tuple[int, int, int, int]:
        found = SUMMARY.search(self.stdout)
        assert found, (self.stdout, self.stderr)
        read, accepted, duplicate, rejected = (int(n) for n in found.groups())
        return read, accepted, duplicate, rejected


def run_in_process(env: dict[str, str], *args: str) -> Run:
    result = CliRunner().invoke(app, list(args), env=env)
    # Anything but a clean exit would be a crash the user sees as a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    run = Run(result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in run.stdout + run.stderr, run
    return run


def run_as_user(env: dict[str, str], *args: str) -> Run:
    done = cli(env, *args)
    run = Run(done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in run.stdout + run.stderr, run
    return run


@dataclass
class Home:
    """A state dir with tenant acme and its source "sensors", made through the CLI, and files to ingest."""

    env: dict[str, str]
    files: Path
    key_id: str
    private_pem: bytes
    now: datetime = field(default_factory=utcnow)

    def event(self, request_id: str, i: int = 0, **fields: Any) -> dict[str, Any]:
        """A signed learning event, as a source sends it (``fields`` override before signing)."""
        body = {
            "tenant": TENANT,
            "request_id": request_id,
            "event_time": iso(self.now - timedelta(hours=3) + timedelta(seconds=i)),
            "features": {"rain_mm": 10.0 + i, "crop": "maize", "note": "crème brûlée"},
            "actual": 7.5,
            **fields,
        }
        return sign_event(body, self.private_pem, self.key_id)

    def record(self, request_id: str, i: int = 0, **fields: Any) -> dict[str, Any]:
        """A plain record, as a CSV export or a JSON Lines file holds it (signed on ingest with --sign-with)."""
        return {
            "request_id": request_id,
            "event_time": iso(self.now - timedelta(hours=3) + timedelta(seconds=i)),
            "rain_mm": 10.0 + i,
            "crop": "maize",
            "yield_t_ha": 7.5,
            **fields,
        }

    def write(self, name: str, content: bytes) -> Path:
        path = self.files / name
        path.write_bytes(content)
        return path

    def services(self) -> Services:
        return build_services(Settings(home=Path(self.env["EVOLUTION_HOME"])))

    def stored_request_ids(self) -> set[str]:
        """Every stored event, as the platform reads them: sealed into a signed snapshot and read back verified."""
        services = self.services()
        try:
            snapshot, _ = services.snapshots.seal_for_scan(SYSTEM, TENANT, utcnow(), min_rows=0)
            return {row["request_id"] for row in services.snapshots.load_rows(snapshot, services.keyring)}
        except InsufficientData:
            return set()
        finally:
            services.close()

    def dead_letters(self, source: Path) -> list[tuple[str | None, str]]:
        services = self.services()
        try:
            return [
                (d.field, d.reason)
                for d in services.events.dead_letters(SYSTEM, TENANT, source=str(source), limit=100_000)
            ]
        finally:
            services.close()

    def event_count(self) -> int:
        services = self.services()
        try:
            with reading(services.factory, TENANT) as session:
                return int(session.scalar(sa.select(sa.func.count()).select_from(LearningEvent)) or 0)
        finally:
            services.close()


def make_home(env: dict[str, str], files: Path) -> Home:
    files.mkdir(parents=True, exist_ok=True)
    assert run_in_process(env, "tenant", "create", TENANT).exit_code == 0
    assert run_in_process(env, "source", "add", "sensors", "--tenant", TENANT).exit_code == 0
    keys_dir = Settings(home=Path(env["EVOLUTION_HOME"])).keys_dir
    key_id, private_pem = load_source_key(keys_dir, TENANT, "sensors")
    return Home(env, files, key_id, private_pem)


@pytest.fixture
def home(cli_env: dict[str, str], tmp_path: Path) -> Home:
    return make_home(cli_env, tmp_path / "files")


def jsonl(*items: dict[str, Any] | bytes | str, ending: bytes = b"\n") -> bytes:
    """JSON Lines as a file holds them: objects as UTF-8 JSON, bytes and text as they are."""
    lines = [
        item
        if isinstance(item, bytes)
        else item.encode()
        if isinstance(item, str)
        else json.dumps(item, ensure_ascii=False).encode()
        for item in items
    ]
    return b"".join(line + ending for line in lines)


def csv_text(rows: list[dict[str, Any]], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@dataclass(frozen=True)
class Expected:
    exit_code: int
    stored: frozenset[str] = frozenset()
    duplicate: int = 0
    # Each reject: where its reason starts ("line 3"), the field it names, and words of its reason.
    rejects: tuple[tuple[str, str | None, str], ...] = ()
    error: str = ""  # for exit 2: words of the one-line error


@dataclass(frozen=True)
class Case:
    path: Path
    args: tuple[str, ...]
    expected: Expected


SIGN = ("--sign-with", "sensors")


def not_utf8_line(h: Home) -> Case:
    latin = json.dumps({**h.event("latin", 1), "features": {"note": "café"}}, ensure_ascii=False)
    content = jsonl(h.event("good-1", 0), latin.encode("latin-1"), h.event("good-2", 2))
    rejects = (("line 2", "features.note", "not UTF-8 (byte 0xe9 at position"),)
    return Case(h.write("latin.jsonl", content), (), Expected(1, frozenset({"good-1", "good-2"}), 0, rejects))


def not_json(h: Home) -> Case:
    content = jsonl(h.event("good-1"), "garbage {", b"[" * 5000, "9" * 5000, h.event("good-2", 2))
    rejects = (
        ("line 2", None, "malformed JSON"),
        ("line 3", None, "nested too deeply"),
        ("line 4", None, "malformed JSON"),
    )
    return Case(
        h.write("garbage.jsonl", content), (), Expected(1, frozenset({"good-1", "good-2"}), 0, rejects)
    )


def bad_time(h: Home) -> Case:
    content = jsonl(
        h.event("good-1"),
        {**h.event("yesterday", 1), "event_time": "yesterday"},
        {**h.event("naive", 2), "event_time": "2026-01-01T00:00:00"},
        h.event("future", 3, event_time=iso(utcnow() + timedelta(days=2))),
    )
    rejects = (
        ("line 2", "event_time", "valid datetime"),
        ("line 3", "event_time", "timezone"),
        ("line 4", "event_time", "in the future"),
    )
    return Case(h.write("times.jsonl", content), (), Expected(1, frozenset({"good-1"}), 0, rejects))


def non_numeric_target(h: Home) -> Case:
    rows = [h.record("r-1", 1), h.record("r-2", 2, yield_t_ha="high"), h.record("r-3", 3)]
    rejects = (("line 3 (record 2)", "yield_t_ha", "valid number"),)
    return Case(
        h.write("target.csv", csv_text(rows)), SIGN, Expected(1, frozenset({"r-1", "r-3"}), 0, rejects)
    )


def wrong_type(h: Home) -> Case:
    content = jsonl(
        h.record("r-1"),
        h.record("r-2", 2, rain_mm={"mm": 3}),
        h.record("r-3", 3, sequence="seven"),
        [1, 2, 3],  # type: ignore[arg-type]
        h.record("r-4", 4),
    )
    rejects = (
        ("line 2", "rain_mm", "must be a number, a string, true, false or null, not an object"),
        ("line 3", "sequence", "not a whole number"),
        ("line 4", None, "must be a JSON object"),
    )
    return Case(h.write("types.jsonl", content), SIGN, Expected(1, frozenset({"r-1", "r-4"}), 0, rejects))


def byte_order_mark(h: Home) -> Case:
    content = codecs.BOM_UTF8 + jsonl(h.event("bom-1"), h.event("bom-2", 1))
    return Case(h.write("bom.jsonl", content), (), Expected(0, frozenset({"bom-1", "bom-2"})))


def crlf(h: Home) -> Case:
    content = jsonl(h.event("crlf-1"), "", h.event("crlf-2", 1), ending=b"\r\n")
    return Case(h.write("crlf.jsonl", content), (), Expected(0, frozenset({"crlf-1", "crlf-2"})))


def quoted_csv(h: Home) -> Case:
    rows = [
        h.record("q-1", 1, field_note="wet, then dry"),
        h.record("q-2", 2, field_note='two lines,\r\nand "quotes"'),
        h.record("q-3", 3, field_note=""),
    ]
    content = codecs.BOM_UTF8 + csv_text(rows)
    return Case(h.write("quoted.csv", content), SIGN, Expected(0, frozenset({"q-1", "q-2", "q-3"})))


def csv_bad_records(h: Home) -> Case:
    header_and_good = csv_text([h.record("c-1", 1)])
    content = (
        header_and_good
        + f"c-2,{iso(h.now)},11.0,maize\r\n".encode()  # a field short
        + f"c-3,{iso(h.now)},11.0,caf\xe9,7.5\r\n".encode("latin-1")
        + b"c-4," + b"x" * (MAX_EVENT_BYTES + 10) + b"\r\n"
        + csv_text([h.record("c-5", 5)]).split(b"\r\n", 1)[1]
    )  # fmt: skip
    rejects = (
        ("line 3 (record 2)", None, "4 fields where the header has 5 columns"),
        ("line 4 (record 3)", "crop", "not UTF-8 (byte 0xe9"),
        ("line 5 (record 4)", None, "larger than the 65536-byte limit"),
    )
    return Case(h.write("records.csv", content), SIGN, Expected(1, frozenset({"c-1", "c-5"}), 0, rejects))


def wrong_delimiter(h: Home) -> Case:
    content = csv_text([h.record("s-1"), h.record("s-2", 2)], delimiter=";")
    return Case(h.write("semicolons.csv", content), SIGN, Expected(2, error="pass --delimiter ';'"))


def right_delimiter_given(h: Home) -> Case:
    content = csv_text([h.record("s-1"), h.record("s-2", 2)], delimiter=";")
    return Case(
        h.write("semicolons.csv", content),
        (*SIGN, "--delimiter", ";"),
        Expected(0, frozenset({"s-1", "s-2"})),
    )


def empty_file(h: Home) -> Case:
    return Case(h.write("empty.jsonl", b""), (), Expected(0))


def empty_csv(h: Home) -> Case:
    return Case(h.write("empty.csv", b""), SIGN, Expected(0))


def ten_megabyte_line(h: Home) -> Case:
    huge = b'{"request_id": "huge", "padding": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    content = jsonl(h.event("good-1"), huge, h.event("good-2", 2))
    rejects = (("line 2", None, f"the line is {len(huge)} bytes, larger than the 65536-byte limit"),)
    return Case(h.write("huge.jsonl", content), (), Expected(1, frozenset({"good-1", "good-2"}), 0, rejects))


def directory(h: Home) -> Case:
    path = h.files / "a-directory.jsonl"
    path.mkdir()
    return Case(path, (), Expected(2, error="is a directory"))


def binary_file(h: Home) -> Case:
    content = jsonl(h.event("good-1")) + bytes(range(256)) * 4
    return Case(h.write("binary.jsonl", content), (), Expected(2, error="is not a text file (a NUL byte"))


def stray_nul_in_a_text_file(h: Home) -> Case:
    content = jsonl(h.event("good-1"), b"\x89PNG\x00garbage", h.event("good-2", 2))
    rejects = (("line 2", None, "not UTF-8 (byte 0x89 at position 0)"),)
    return Case(
        h.write("stray-nul.jsonl", content), (), Expected(1, frozenset({"good-1", "good-2"}), 0, rejects)
    )


def utf16_file(h: Home) -> Case:
    content = jsonl(h.event("good-1")).decode().encode("utf-16")
    return Case(h.write("wide.jsonl", content), (), Expected(2, error="is UTF-16 text; save it as UTF-8"))


def duplicates_and_reused_ids(h: Home) -> Case:
    first = h.event("dup-1")
    content = jsonl(first, first, h.event("dup-1", 5, actual=1.0), h.event("dup-2", 2))
    rejects = (("line 3", "request_id", "already accepted with other content"),)
    return Case(h.write("dups.jsonl", content), (), Expected(1, frozenset({"dup-1", "dup-2"}), 1, rejects))


CASES: dict[str, Callable[[Home], Case]] = {
    f.__name__: f
    for f in (
        not_utf8_line,
        not_json,
        bad_time,
        non_numeric_target,
        wrong_type,
        byte_order_mark,
        crlf,
        quoted_csv,
        csv_bad_records,
        wrong_delimiter,
        right_delimiter_given,
        empty_file,
        empty_csv,
        ten_megabyte_line,
        directory,
        binary_file,
        stray_nul_in_a_text_file,
        utf16_file,
        duplicates_and_reused_ids,
    )
}


def check(home: Home, case: Case, run: Run) -> None:
    expected = case.expected
    assert run.exit_code == expected.exit_code, run
    if expected.exit_code == 2:
        assert run.stderr.startswith("error: ") and expected.error in run.stderr, run
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert home.stored_request_ids() == set() and home.dead_letters(case.path) == []
        return
    read, accepted, duplicate, rejected = run.summary()
    assert accepted + duplicate + rejected == read, run
    assert (accepted, duplicate, rejected) == (
        len(expected.stored),
        expected.duplicate,
        len(expected.rejects),
    )
    letters = home.dead_letters(case.path)
    assert len(letters) == rejected
    for (where, field_named, words), (dead_field, reason) in zip(expected.rejects, letters, strict=True):
        assert reason.startswith(f"{where}: "), reason
        assert dead_field == field_named, (dead_field, reason)
        assert words in reason, reason
        assert reason in run.stderr, "each reject is printed as it is kept"
    assert home.stored_request_ids() == expected.stored


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_input_is_a_dead_letter_naming_line_and_field_and_the_good_records_are_stored(
    home: Home, name: str
) -> None:
    case = CASES[name](home)
    run = run_in_process(home.env, "ingest", str(case.path), "--tenant", TENANT, *case.args)
    check(home, case, run)


def test_the_real_cli_stores_the_good_lines_around_latin1_garbage_bom_and_crlf(home: Home) -> None:
    latin = json.dumps({**home.event("latin", 1), "features": {"note": "café"}}, ensure_ascii=False)
    content = (
        codecs.BOM_UTF8
        + jsonl(home.event("good-1"))
        + latin.encode("latin-1") + b"\n"
        + b"\x89PNG garbage \xff\xfe\n"
        + jsonl(home.event("good-2", 2), ending=b"\r\n")
        + jsonl(home.event("good-3", 3)).rstrip(b"\n")  # the last line has no line end
    )  # fmt: skip
    again = home.write("mixed-again.jsonl", content)
    path = home.write("mixed.jsonl", content)
    rejects = (("line 2", "features.note", "not UTF-8 (byte 0xe9"), ("line 3", None, "not UTF-8 (byte 0x89"))
    case = Case(path, (), Expected(1, frozenset({"good-1", "good-2", "good-3"}), 0, rejects))

    first = run_as_user(home.env, "ingest", str(path), "--tenant", TENANT)
    assert first.summary() == (5, 3, 0, 2)
    second = run_as_user(home.env, "ingest", str(again), "--tenant", TENANT, "--json")
    assert second.exit_code == 1
    summary = json.loads(second.stdout)
    counts = (summary["records_read"], summary["accepted"], summary["duplicate"], summary["rejected"])
    assert counts == (5, 0, 3, 2), summary
    assert [r["line"] for r in summary["rejects"]] == [2, 3]
    check(home, case, first)


def test_the_real_cli_refuses_a_directory_and_a_binary_file_with_exit_2_and_one_line(home: Home) -> None:
    for make in (directory, binary_file):
        case = make(home)
        run = run_as_user(home.env, "ingest", str(case.path), "--tenant", TENANT)
        check(home, case, run)


def test_plain_records_sent_as_signed_events_are_each_rejected_with_a_hint_to_sign_them(home: Home) -> None:
    path = home.write("plain.jsonl", jsonl(home.record("p-1"), home.record("p-2", 2)))
    run = run_in_process(home.env, "ingest", str(path), "--tenant", TENANT)
    assert (run.exit_code, run.summary()) == (1, (2, 0, 0, 2)), run
    assert "line 1: tenant: Field required" in run.stderr
    assert "pass --sign-with SOURCE to sign them" in run.stderr
    assert [f for f, _ in home.dead_letters(path)] == ["tenant", "tenant"]


def test_a_ten_megabyte_line_is_rejected_without_being_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as out:
        out.write(b'{"padding": "')
        for _ in range(10):
            out.write(b"x" * (1024 * 1024))
        out.write(b'"}\n{"after": 1}\n')
    tracemalloc.start()
    try:
        with open_input(path) as handle:
            records = list(event_lines(handle))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.where for r in records] == ["line 1", "line 2"]
    assert records[0].problem is not None and "larger than the 65536-byte limit" in records[0].problem.reason
    assert records[1].raw == '{"after": 1}'
    assert peak < 1024 * 1024, f"peak {peak} bytes while reading a 10 MiB line"


def test_the_http_route_rejects_each_malformed_element_of_a_batch_and_stores_the_others(home: Home) -> None:
    services = home.services()
    root = Principal.for_tenant("root", Role.ADMIN, "*")
    services.users.add_user(root, "gateway", "a long enough password", Role.ADMIN, [TENANT])
    token = services.tokens.create_token(root, "gateway", "battery").token.get_secret_value()
    app_under_test = create_app(services.predictor(), services.events, services.token_authenticator())
    batch = [
        home.event("h-1"),
        5,
        "not an event",
        None,
        [home.event("h-9")],
        {**home.event("h-2", 2), "event_time": "yesterday"},
        {**home.event("h-3", 3), "features": {"rain_mm": {"mm": 1}}},
        json.loads("[" * 900 + "]" * 900),
        home.event("h-1"),
        home.event("h-4", 4),
    ]
    try:
        with serving(app_under_test) as url:
            url = f"{url}/v1/tenants/{TENANT}/events"
            headers = {"Authorization": f"Bearer {token}"}
            answer = httpx.post(url, json={"events": batch}, headers=headers, timeout=30)
            raw = {**headers, "Content-Type": "application/json"}
            not_json = httpx.post(url, content=b'{"events": [\xe9', headers=raw, timeout=30)
    finally:
        services.close()
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    counts = (summary["records_read"], summary["accepted"], summary["duplicate"], summary["rejected"])
    assert counts == (10, 2, 1, 7), summary
    assert [(r["line"], r["field"]) for r in summary["rejects"]] == [
        (2, None),
        (3, None),
        (4, None),
        (5, None),
        (6, "event_time"),
        (7, "features.rain_mm"),
        (8, None),
    ]
    assert summary["rejects"][0]["reason"] == "event 2: an event must be a JSON object"
    # A body that is not JSON at all is the client's error, answered as declared: not a 500.
    assert not_json.status_code == 400 and not_json.json()["error"] == "http", not_json.text
    letters = home.dead_letters(Path("http"))
    assert [reason for _, reason in letters] == [r["reason"] for r in summary["rejects"]]
    assert home.stored_request_ids() == {"h-1", "h-4"}


# ------------------------------------------------------------------------------------------------- hypothesis
# 60 files take about 20 s; raise it to hunt (e.g. EVOLUTION_FUZZ_INGEST_FILES=1000).
FUZZ_FILES = int(os.environ.get("EVOLUTION_FUZZ_INGEST_FILES", "60"))
LINE_MUTATIONS = ("flip", "truncate", "garbage", "latin-1", "utf-16", "blank", "oversized", "deep", "repeat")


@st.composite
def ingest_files(draw: st.DrawFn, home: Home) -> tuple[str, bytes]:
    """A file to ingest: valid lines of one of the three formats, then mutated (or random bytes altogether)."""
    kind = draw(st.sampled_from(["events", "records", "csv"]))
    if draw(st.integers(0, 9)) == 0:
        return kind, draw(st.binary(max_size=3000))
    seed = draw(st.integers(0, 40))  # a small range: the same lines come back, as duplicates
    count = draw(st.integers(0, 6))
    if kind == "events":
        lines = [
            json.dumps(home.event(f"hy-{seed}-{i}", i), ensure_ascii=False).encode() for i in range(count)
        ]
    elif kind == "records":
        lines = [json.dumps(home.record(f"hr-{seed}-{i}", i, note="é, ☕")).encode() for i in range(count)]
    else:
        rows = [home.record(f"hc-{seed}-{i}", i, note="a, b\nc é") for i in range(max(count, 1))]
        lines = csv_text(rows).split(b"\r\n")[: count + 1]
    for _ in range(draw(st.integers(0, 4))):
        mutation = draw(st.sampled_from(LINE_MUTATIONS))
        at = draw(st.integers(0, len(lines)))
        line = lines[at] if at < len(lines) else b""
        if mutation == "flip" and line:
            position = draw(st.integers(0, len(line) - 1))
            line = line[:position] + bytes([draw(st.integers(0, 255))]) + line[position + 1 :]
        elif mutation == "truncate":
            line = line[: draw(st.integers(0, len(line)))]
        elif mutation == "garbage":
            lines.insert(at, draw(st.binary(max_size=80)).replace(b"\n", b""))
            continue
        elif mutation == "latin-1":
            line = line.decode("utf-8", "replace").encode("latin-1", "replace")
        elif mutation == "utf-16":
            line = line.decode("utf-8", "replace").encode("utf-16-le")
        elif mutation == "blank":
            lines.insert(at, draw(st.sampled_from([b"", b"   ", b"\t", b"\r"])))
            continue
        elif mutation == "oversized":
            lines.insert(at, b'{"x": "' + b"y" * (MAX_EVENT_BYTES + 100) + b'"}')
            continue
        elif mutation == "deep":
            lines.insert(at, b"[" * 3000)
            continue
        elif mutation == "repeat":
            lines.insert(at, line)
            continue
        if at < len(lines):
            lines[at] = line.replace(b"\n", b"")
    endings = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    content = b"".join(line + end for line, end in zip(lines, endings, strict=True))
    if draw(st.booleans()):
        content = content.rstrip(b"\r\n")  # no line end after the last line
    if draw(st.booleans()):
        content = codecs.BOM_UTF8 + content
    return kind, content


def refused_as_a_whole(content: bytes) -> bool:
    """What the reader refuses before reading a line: UTF-16/32 text, or a binary file (NUL bytes in the head,
    where fewer than half of the non-blank lines are NUL-free UTF-8: a stray NUL only spoils its own line)."""
    head = content[:SNIFF_BYTES]
    if any(head.startswith(bom) for bom, _ in WIDE_BOMS):
        return True
    if b"\x00" not in head:
        return False
    lines = head.split(b"\n")
    if len(content) > SNIFF_BYTES and len(lines) > 1:
        lines.pop()  # cut short by the head's end
    lines = [line for line in lines if line.strip()]
    return 2 * sum(b"\x00" not in line and is_utf8(line) for line in lines) < len(lines)


def is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def non_blank_lines(content: bytes) -> int:
    if content.startswith(codecs.BOM_UTF8):
        content = content[len(codecs.BOM_UTF8) :]
    return sum(1 for line in content.split(b"\n") if line.strip() or len(line) > MAX_EVENT_BYTES)


def test_mutated_and_random_files_are_each_fully_accounted_for_and_never_crash(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    home = make_home(cli_env, tmp_path / "files")
    counters: dict[str, int] = {"examples": 0, "refused": 0, "rejected": 0, "accepted": 0, "duplicate": 0}

    @settings(
        max_examples=FUZZ_FILES,
        deadline=None,
        derandomize=True,  # the same files on every run
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(file=ingest_files(home))
    def feed(file: tuple[str, bytes]) -> None:
        kind, content = file
        suffix = ".csv" if kind == "csv" else ".jsonl"
        path = home.write(f"{kind}-{uuid.uuid4().hex[:10]}{suffix}", content)
        args = ("--sign-with", "sensors") if kind != "events" else ()
        events_before = home.event_count()
        run = run_in_process(home.env, "ingest", str(path), "--tenant", TENANT, "--json", *args)
        counters["examples"] += 1
        assert run.exit_code in (0, 1, 2), run
        if run.exit_code == 2:
            counters["refused"] += 1
            assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1, run
            assert home.event_count() == events_before and home.dead_letters(path) == []
            if kind != "csv":  # a CSV may also be refused for its header
                assert refused_as_a_whole(content), run
            return
        assert not refused_as_a_whole(content), run
        summary = json.loads(run.stdout)
        read, accepted = summary["records_read"], summary["accepted"]
        duplicate, rejected = summary["duplicate"], summary["rejected"]
        assert accepted + duplicate + rejected == read, summary
        assert run.exit_code == (1 if rejected else 0), summary
        if kind != "csv":  # one record a non-blank line (a CSV record may span lines)
            assert read == non_blank_lines(content), summary
        assert len(home.dead_letters(path)) == rejected, "every reject is kept"
        assert home.event_count() == events_before + accepted, "every accepted record is stored"
        assert all(r["reason"].startswith(("line ", "lines ")) for r in summary["rejects"]), summary
        for key in ("accepted", "duplicate", "rejected"):
            counters[key] += summary[key]

    feed()
    # The generator reached every outcome, so the assertions above were tried on each.
    assert counters["examples"] == FUZZ_FILES
    print(f"ingest fuzz: {counters}")
    assert min(counters["refused"], counters["rejected"], counters["accepted"], counters["duplicate"]) > 0, (
        counters
    )

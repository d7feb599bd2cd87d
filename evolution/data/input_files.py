"""Reading an ingest file: JSON Lines line by line, CSV record by record, so that one bad line never stops the others.

Each line is read on its own and at most :data:`MAX_EVENT_BYTES` (and its line end) of it is held: a line that is not
UTF-8, too long, not JSON or (in CSV) not the header's shape becomes one rejected record whose reason names the line,
and the next line is read as usual. A UTF-8 byte order mark and CRLF line ends are accepted; blank lines are not
records.

What makes the whole file unreadable is refused up front, before anything reaches the registry, with
:class:`~evolution.errors.InvalidInput`: no such file, a directory, a binary file (NUL bytes in its first
:data:`SNIFF_BYTES`, and under half of the lines there UTF-8 text: a stray NUL in a text file only spoils its line),
UTF-16 or UTF-32 text, a CSV header that is not separated by the delimiter.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from evolution.data.event_schema import MAX_EVENT_BYTES, InputRecord, RejectedEvent, parse_json
from evolution.errors import InvalidInput
from evolution.progress import Advance, MeteredFile

SNIFF_BYTES = 8192
NUL = b"\x00"
READ_CHUNK = 64 * 1024
# A line of the largest size an event may have, and its CRLF.
LINE_LIMIT = MAX_EVENT_BYTES + 2
# UTF-32 LE first: its byte order mark begins with UTF-16 LE's.
WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe", ",": "comma"}
# CSV columns kept as text: ids and times are not numbers even when they look like one.
TEXT_COLUMNS = ("event_time", "request_id", "prediction_id", "sequence")


@dataclass(frozen=True)
class Line:
    """One physical line: its bytes without the line end (only the first MAX_EVENT_BYTES of a longer line)."""

    number: int
    data: bytes
    size: int
    ending: bytes

    @property
    def oversized(self) -> bool:
        return self.size > MAX_EVENT_BYTES

    @property
    def blank(self) -> bool:
        return not self.oversized and not self.data.strip()

    @cached_property
    def decoded(self) -> tuple[str, UnicodeDecodeError | None]:
        """The line as text; undecodable bytes kept as surrogates (to find the field they are in) with the error."""
        try:
            return self.data.decode("utf-8"), None
        except UnicodeDecodeError as error:
            return self.data.decode("utf-8", "surrogateescape"), error

    def shown(self) -> str:
        """The line as a dead letter keeps it: bytes that are not UTF-8 written as \\xNN."""
        return self.data.decode("utf-8", "backslashreplace")

    def too_large(self) -> RejectedEvent:
        return RejectedEvent(
            None, f"the line is {self.size} bytes, larger than the {MAX_EVENT_BYTES}-byte limit of an event"
        )


def open_input(path: Path, advance: Advance | None = None) -> IO[bytes]:
    """The file opened for reading bytes, once it looks like text; InvalidInput naming the problem if it does not.

    ``advance``: called with the bytes read from disk as they are read (a progress task of the file's size).
    """
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    if path.is_dir():
        raise InvalidInput(f"{path}: is a directory, not a file: give the JSON Lines or CSV file to ingest")
    try:
        # A buffer larger than the head, so that one peek sees it, and whether the file goes on, unconsumed.
        raw = io.FileIO(path, "r") if advance is None else MeteredFile(path, advance)
        handle = io.BufferedReader(raw, buffer_size=2 * SNIFF_BYTES)
        start = handle.peek(SNIFF_BYTES + 1)
    except OSError as error:
        raise InvalidInput(f"{path}: cannot be read ({error.strerror or error})") from None
    head = start[:SNIFF_BYTES]
    for bom, encoding in WIDE_BOMS:
        if head.startswith(bom):
            handle.close()
            raise InvalidInput(
                f"{path}: is {encoding} text; save it as UTF-8 (e.g. iconv -f {encoding} -t UTF-8 {path.name})"
            )
    if looks_binary(head, whole=len(start) <= SNIFF_BYTES):
        handle.close()
        nul = head.find(NUL)
        raise InvalidInput(
            f"{path}: is not a text file (a NUL byte at position {nul}, and most of its first "
            "lines are not UTF-8 text): give a UTF-8 JSON Lines or CSV file"
        )
    return handle


def looks_binary(head: bytes, *, whole: bool) -> bool:
    """A binary file, as opposed to a text file with a bad line: NUL bytes, and under half its lines UTF-8 text.

    ``head`` is the file's start (``whole``: all of it); its last line may be cut short, so it is left out.
    """
    if NUL not in head:
        return False
    lines = head.split(b"\n")
    if not whole and len(lines) > 1:
        lines.pop()
    lines = [line for line in lines if line.strip()]
    text = sum(1 for line in lines if NUL not in line and _utf8(line))
    return 2 * text < len(lines)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_lines(handle: IO[bytes]) -> Iterator[Line]:
    """Every line of the file, holding at most LINE_LIMIT bytes of one; a UTF-8 byte order mark is dropped."""
    for number in itertools.count(1):
        try:
            head = handle.readline(LINE_LIMIT)
            if not head:
                return
            size, tail, before = len(head), head, b""
            if len(head) == LINE_LIMIT and not head.endswith(b"\n"):
                # An oversized line: the rest of it is counted, never held.
                while tail and not tail.endswith(b"\n"):
                    before, tail = tail, handle.readline(READ_CHUNK)
                    size += len(tail)
        except OSError as error:
            raise InvalidInput(
                f"reading stopped at line {number} ({error.strerror or error}); the lines before it may have "
                "been ingested: ingest the file again once it reads (duplicates count once)"
            ) from None
        crlf = tail.endswith(b"\r\n") or (tail == b"\n" and before.endswith(b"\r"))
        ending = b"\r\n" if crlf else b"\n" if tail.endswith(b"\n") else b""
        data = head[: len(head) - len(ending)] if tail is head else head.removesuffix(b"\r")
        if number == 1 and data.startswith(codecs.BOM_UTF8):
            data, size = data[len(codecs.BOM_UTF8) :], size - len(codecs.BOM_UTF8)
        yield Line(number, data[:MAX_EVENT_BYTES], size - len(ending), ending)


def event_lines(handle: IO[bytes]) -> Iterator[InputRecord]:
    """JSON Lines of signed events: each line's text, for the ingestor to parse and check, or why it has none."""
    for line in read_lines(handle):
        if line.blank:
            continue
        where = f"line {line.number}"
        problem = _unreadable(line)
        if problem is not None:
            yield InputRecord(where, line.number, raw=line.shown(), problem=problem)
        else:
            yield InputRecord(where, line.number, raw=line.decoded[0])


def record_lines(handle: IO[bytes]) -> Iterator[InputRecord]:
    """JSON Lines of plain records (to be signed): each line parsed, or why it cannot be."""
    for line in read_lines(handle):
        if line.blank:
            continue
        where = f"line {line.number}"
        problem = _unreadable(line)
        if problem is None:
            text = line.decoded[0]
            try:
                yield InputRecord(where, line.number, obj=parse_json(text), raw=text)
            except RejectedEvent as refused:
                yield InputRecord(where, line.number, raw=text, problem=refused)
        else:
            yield InputRecord(where, line.number, raw=line.shown(), problem=problem)


def _unreadable(line: Line) -> RejectedEvent | None:
    if line.oversized:
        return line.too_large()
    text, error = line.decoded
    if error is None:
        return None
    try:
        field = _field_holding_undecodable(parse_json(text))
    except RejectedEvent:
        field = None
    return _not_utf8(field, line, error)


def _not_utf8(
    field: str | None, line: Line, error: UnicodeDecodeError, *, of_line: bool = False
) -> RejectedEvent:
    position = f"position {error.start}" + (f" of line {line.number}" if of_line else "")
    problem = f"not UTF-8 (byte 0x{line.data[error.start]:02x} at {position})"
    return RejectedEvent(field, f"{field}: {problem}" if field else problem)


def _field_holding_undecodable(value: Any, path: str = "") -> str | None:
    """The dotted path of the first key or string holding bytes that were not UTF-8 (decoded as surrogates)."""
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if _has_surrogates(str(key)):
                return inner
            found = _field_holding_undecodable(item, inner)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _field_holding_undecodable(item, path)
            if found:
                return found
    elif isinstance(value, str) and _has_surrogates(value):
        return path or None
    return None


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class CsvRecords:
    """The records of a CSV file with a header row, one at a time (a quoted field may hold commas and newlines).

    The header is read when this is made, so a file that cannot be read as CSV is refused before anything is
    ingested; ``required`` names the columns every record needs.
    """

    def __init__(
        self, handle: IO[bytes], name: str, *, delimiter: str = ",", required: tuple[str, ...] = ()
    ) -> None:
        if len(delimiter) != 1:
            raise InvalidInput(f"--delimiter {delimiter!r}: give one character, e.g. ';' or a tab")
        self._name = name
        self._delimiter = delimiter
        self._lines = read_lines(handle)
        self._consumed: list[Line] = []  # the lines the record being parsed was made of
        self._reader = csv.reader(self._texts(), delimiter=delimiter)
        self.header: list[str] = []
        self._header(required)

    def _texts(self) -> Iterator[str]:
        for line in self._lines:
            self._consumed.append(line)
            text = "" if line.oversized else line.decoded[0]
            # csv needs the line end to carry a quoted field on to the next line.
            yield text + (line.ending.decode() or "\n")

    def _next_row(self) -> tuple[list[str] | None, csv.Error | None]:
        self._consumed = []
        try:
            return next(self._reader), None
        except StopIteration:
            return None, None
        except csv.Error as error:
            return [], error

    def _header(self, required: tuple[str, ...]) -> None:
        while True:
            row, error = self._next_row()
            if row is None:
                return  # an empty file: no header, no records
            if error is None and not any(cell.strip() for cell in row):
                continue
            break
        first = self._consumed[0].number if self._consumed else 1
        where = f"{self._name}: line {first}: the header"
        for line in self._consumed:
            if line.oversized or line.decoded[1] is not None or error is not None:
                raise InvalidInput(f"{where} cannot be read: {error or _unreadable(line)}")
        names = [cell.strip() for cell in row]
        if len(names) == 1:
            found = Counter(c for c in names[0] if c in OTHER_DELIMITERS and c != self._delimiter)
            if found:
                other = found.most_common(1)[0][0]
                shown = "'\\t'" if other == "\t" else repr(other)
                raise InvalidInput(
                    f"{where} is one column, {names[0][:60]!r}: the file looks {OTHER_DELIMITERS[other]}-separated, "
                    f"not {OTHER_DELIMITERS.get(self._delimiter, repr(self._delimiter))}-separated; "
                    f"pass --delimiter {shown}"
                )
        if "" in names:
            raise InvalidInput(f"{where}: column {names.index('') + 1} has no name")
        repeated = sorted(n for n, count in Counter(names).items() if count > 1)
        if repeated:
            raise InvalidInput(f"{where}: column {repeated[0]!r} appears more than once")
        missing = [r for r in required if r not in names]
        if missing:
            raise InvalidInput(
                f"{where} has no {missing[0]!r} column (its columns: {', '.join(map(repr, names))[:200]})"
            )
        self.header = names

    def __iter__(self) -> Iterator[InputRecord]:
        if not self.header:
            return
        number = 0
        while True:
            row, error = self._next_row()
            if row is None:
                return
            lines = self._consumed
            if (
                error is None
                and not any(cell.strip() for cell in row)
                and not any(line.oversized for line in lines)
            ):
                continue  # a blank line (or one of empty fields) is not a record
            number += 1
            first, last = (lines[0].number, lines[-1].number) if lines else (0, 0)
            span = f"line {first}" if first == last else f"lines {first}-{last}"
            where = f"{span} (record {number})"
            raw = "".join(line.shown() + line.ending.decode() for line in lines).rstrip("\r\n")
            problem = self._problem(row, error, lines)
            if problem is not None:
                yield InputRecord(where, first, raw=raw, problem=problem)
            else:
                values = {name: _csv_value(name, cell) for name, cell in zip(self.header, row, strict=True)}
                yield InputRecord(where, first, obj=values, raw=raw)

    def _problem(self, row: list[str], error: csv.Error | None, lines: list[Line]) -> RejectedEvent | None:
        if error is not None:
            return RejectedEvent(None, f"not valid CSV: {error}")
        for line in lines:
            if line.oversized:
                return line.too_large()
            decode_error = line.decoded[1]
            if decode_error is not None:
                column = next(
                    (name for name, cell in zip(self.header, row, strict=False) if _has_surrogates(cell)),
                    None,
                )
                return _not_utf8(column, line, decode_error, of_line=len(lines) > 1)
        size = sum(line.size + len(line.ending) for line in lines)
        if size > MAX_EVENT_BYTES:
            return RejectedEvent(
                None, f"the record is {size} bytes, larger than the {MAX_EVENT_BYTES}-byte limit of an event"
            )
        if len(row) != len(self.header):
            return RejectedEvent(
                None,
                f"{len(row)} fields where the header has {len(self.header)} columns (a value holding "
                f"{self._delimiter!r} must be quoted)",
            )
        return None


def _csv_value(column: str, text: str) -> Any:
    """CSV holds text: an empty cell is missing, a number is a number (but ids and times stay text)."""
    if text == "":
        return None
    if column in TEXT_COLUMNS:
        return text
    try:
        return float(text)
    except ValueError:
        return text

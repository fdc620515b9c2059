"""Streaming rows of import files out of a byte stream with bounded memory, one reader per file format.

The file rules are MoEngage's for S3 imports. CSV: UTF-8 only, comma delimiter, double-quote quoting, the
first row is the header (no duplicate or empty names), cells up to 128 KB, ``\\n`` line endings. NDJSON:
one object per line, flattened two levels into dot-notation columns. File-level problems raise
:class:`FileFormatError`; row-level ones are yielded as data.

What a hostile file can make a reader hold or do is bounded (:class:`ReadLimits`): a line is read with a
maximum length, so a header or a line of tens of MB never enters memory whole (a CSV line over it fails the
file, since CSV rows cannot be re-synchronised; an NDJSON line over it fails that row alone), and an NDJSON
object nested deeper than the limit is refused before the JSON parser recurses into it.

Readers are looked up by format in :data:`READERS` (:func:`reader_for`); a new format is one more entry.
"""

from __future__ import annotations

import csv
import io
import json
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from inflow.producers.s3_import.exceptions import FileFormatError

CELL_LIMIT = 131_072  # MoEngage accepts cells of up to 128 KB
MAX_LINE = CELL_LIMIT * 100  # default longest line: 100 cells of 128 KB
MAX_JSON_DEPTH = 64  # default deepest nesting of an NDJSON object (MoEngage flattens only two levels)
EMPTY_ROW = "empty row"
csv.field_size_limit(CELL_LIMIT)
ZERO_ROWS = "Found zero data rows in the file"
NOT_UTF8 = (
    "File is in an unsupported format or contains invalid characters. Please save it as UTF-8 and re-upload"
)
CELL_TOO_LARGE = "Column value found larger than the max size-limit (check opening/closing quotes in a row)"
FIELD_LIMIT = "Field larger than field limit"  # MoEngage's message for a cell over 128 KB
MAX_COLUMNS = 100  # MoEngage: 100 columns for users, 100 per event
CRLF = "Only \\n line endings are supported: the file uses Windows \\r\\n line endings"


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How much of a file a reader takes in at once: the longest line (characters) and the deepest JSON."""

    max_line: int = MAX_LINE
    max_json_depth: int = MAX_JSON_DEPTH


DEFAULT_LIMITS = ReadLimits()


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: 1-based number (header excluded), its cells, or why it cannot be read."""

    number: int
    cells: Sequence[Any] | None
    error: str | None = None


class CountingReader(io.RawIOBase):
    """Raw stream over any ``read(n)`` source, counting bytes for progress bars and run records."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.bytes_read += n
        return n


class ReadAhead(io.RawIOBase):
    """Reads the source in a thread, ``depth`` chunks ahead, so network waits overlap with parsing.

    Memory is bounded by ``depth * chunk`` bytes; an error of the source is raised to the reader.
    """

    def __init__(self, source: Any, chunk: int = 1 << 20, depth: int = 8) -> None:
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._buffer = b""
        self._done = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source, chunk), daemon=True)
        self._thread.start()

    def _fill(self, source: Any, chunk: int) -> None:
        try:
            while not self._closed.is_set():
                data = source.read(chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._buffer and not self._done:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            self._buffer = item
            self._done = not item
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        self._closed.set()
        super().close()


def text_stream(binary: IO[bytes] | io.RawIOBase) -> io.TextIOWrapper:
    """Strict UTF-8 text over a binary stream; ``newline=''`` keeps ``\\r`` visible to the CSV rules."""
    buffered: Any = binary if isinstance(binary, io.BufferedIOBase) else io.BufferedReader(binary, 1 << 20)  # type: ignore[type-var,arg-type]
    return io.TextIOWrapper(buffered, encoding="utf-8", errors="strict", newline="")


def decode_error(exc: UnicodeDecodeError) -> FileFormatError:
    return FileFormatError(f"{NOT_UTF8} ({exc})")


def check_header(header: Sequence[str]) -> None:
    """No missing and no duplicate (case-sensitive) column names."""
    if not header or all(h == "" for h in header):
        raise FileFormatError("No data found: the header row is empty")
    empty = [str(i + 1) for i, h in enumerate(header) if h.strip() == ""]
    if empty:
        raise FileFormatError(f"Column name missing in the header (column {', '.join(empty)})")
    seen: set[str] = set()
    dupes = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
    if dupes:
        raise FileFormatError(f"Duplicate column names in the header: {', '.join(dupes)}")


def cell_too_large(where: str) -> str:
    return f"{FIELD_LIMIT} ({CELL_LIMIT} characters, 128 KB): {where}. {CELL_TOO_LARGE}"


def data_columns(header: Sequence[str]) -> int:
    """Columns of a file as MoEngage counts them: an NDJSON object flattened into ``a.b`` columns counts
    its leaves, not the object itself."""
    parents = {h.split(".", 1)[0] for h in header if "." in h}
    return sum(1 for h in header if h not in parents)


def check_columns(header: Sequence[str], limit: int = MAX_COLUMNS) -> None:
    n = data_columns(header)
    if n > limit:
        raise FileFormatError(f"The file has {n} columns: at most {limit} columns are supported per file")


def line_too_long(limit: int, where: str) -> FileFormatError:
    return FileFormatError(f"Line too long: {where} is longer than {limit} characters")


def read_csv(text: io.TextIOWrapper, limits: ReadLimits = DEFAULT_LIMITS) -> tuple[list[str], Iterator[Row]]:
    """Header and a lazy iterator of rows; raises at once when the header or first row is unusable."""
    try:
        first = text.readline(limits.max_line + 1)
    except UnicodeDecodeError as exc:
        raise decode_error(exc) from exc
    if len(first) > limits.max_line:
        raise line_too_long(limits.max_line, "the header row")
    if first.endswith("\r\n"):
        raise FileFormatError(CRLF)
    if first.startswith("\ufeff"):
        first = first[1:]
    try:
        header = next(csv.reader([first]), [])
    except csv.Error as exc:
        raise FileFormatError(f"Cannot read the header row: {exc}") from exc
    check_header(header)
    return header, _csv_rows(text, len(header), limits.max_line)


def _bounded_lines(text: io.TextIOWrapper, limit: int, number: list[int]) -> Iterator[str]:
    """The lines of ``text``, each read with a maximum length; a longer one fails the file."""
    readline = text.readline
    while line := readline(limit + 1):
        if len(line) > limit:
            raise line_too_long(limit, f"a line of data row {number[0] + 1}")
        yield line


def _csv_rows(text: io.TextIOWrapper, width: int, max_line: int = MAX_LINE) -> Iterator[Row]:
    counter = [0]  # the row number, for the message of a too-long line
    reader = csv.reader(_bounded_lines(text, max_line, counter), strict=True)
    number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except UnicodeDecodeError as exc:
            raise decode_error(exc) from exc
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise FileFormatError(cell_too_large(f"data row {number + 1}")) from exc
            raise FileFormatError(f"Cannot parse the CSV at data row {number + 1}: {exc}") from exc
        number += 1
        counter[0] = number
        if not cells or (len(cells) == 1 and cells[0] == ""):
            yield Row(number, None, EMPTY_ROW)
        elif len(cells) != width:
            yield Row(number, None, f"row has {len(cells)} columns, the header has {width}")
        else:
            yield Row(number, cells)
    if number == 0:
        raise FileFormatError(ZERO_ROWS)


def flatten(obj: dict[str, Any]) -> dict[str, Any]:
    """Two levels of dot-notation (``user.first_name``); whole objects stay mappable by their own key."""
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        flat[key] = value
        if isinstance(value, dict):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = inner
    return flat


def read_ndjson(
    text: io.TextIOWrapper, columns: Sequence[str], limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[list[str], Iterator[Row]]:
    """Rows as cells in the order of ``columns`` (default: the header, i.e. the first object's keys)."""
    lines = _ndjson_objects(text, limits)
    first = next(lines, None)
    if first is None:
        raise FileFormatError(ZERO_ROWS)
    header = list(first[1].keys()) if first[1] is not None else list(columns)
    wanted = list(columns) or header  # preview: the first object's keys

    def rows() -> Iterator[Row]:
        for number, flat, error in _chain(first, lines):
            if flat is None:
                yield Row(number, None, error)
            else:
                yield Row(number, [flat.get(c, "") for c in wanted])

    return header, rows()


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_too_deep(line: str, limit: int) -> bool:
    """True when the JSON text nests arrays and objects deeper than ``limit``, found without parsing it.

    Counting brackets is enough for nearly every line; only a line with more brackets than the limit is
    scanned, with its strings removed first (a bracket inside a string does not nest).
    """
    if line.count("[") + line.count("{") <= limit:
        return False
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", line)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _skip_rest_of_line(text: io.TextIOWrapper, chunk: int) -> None:
    """Read past the end of an over-long line in bounded pieces, keeping nothing."""
    while True:
        piece = text.readline(chunk)
        if not piece or piece.endswith("\n"):
            return


def _ndjson_objects(
    text: io.TextIOWrapper, limits: ReadLimits = DEFAULT_LIMITS
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    number = 0
    max_line, max_depth = limits.max_line, limits.max_json_depth
    while True:
        try:
            line = text.readline(max_line + 1)
            if len(line) > max_line and not line.endswith("\n"):
                _skip_rest_of_line(text, max_line)
        except UnicodeDecodeError as exc:
            raise decode_error(exc) from exc
        if not line:
            return
        number += 1
        if len(line) > max_line:  # only this row is bad: the next line starts the next object
            yield number, None, f"{CELL_TOO_LARGE}: the line is longer than {max_line} characters"
            continue
        if not line.strip():
            yield number, None, EMPTY_ROW
            continue
        if json_too_deep(line, max_depth):
            yield number, None, f"not a JSON object: nested deeper than {max_depth} levels"
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: never reached after the depth check
            yield number, None, f"not a JSON object: {exc}"
            continue
        if not isinstance(obj, dict):
            yield number, None, "not a JSON object"
            continue
        flat = flatten(obj)
        if len(line) > CELL_LIMIT and any(
            isinstance(v, str) and len(v) > CELL_LIMIT for v in flat.values()
        ):  # a line shorter than the limit cannot hold a longer value: the common case costs nothing
            big = next(k for k, v in flat.items() if isinstance(v, str) and len(v) > CELL_LIMIT)
            yield number, None, cell_too_large(f"column {big!r}")
            continue
        yield number, flat, None


# --- one reader per file format ---------------------------------------------------------------------------
@dataclass
class Table:
    """What a reader found in a file: its column names, the name of each cell of a row, the rows (lazy),
    and the file's columns that no mapping reads (reported to the user, never imported)."""

    header: list[str]
    columns: list[str]
    rows: Iterator[Row]
    unmapped: list[str]


class FileReader(Protocol):
    """Reads one file format. ``mapped`` names the columns the import maps (empty for a preview); the
    reader raises :class:`FileFormatError` at once when the file as a whole is unusable."""

    def __call__(
        self, text: io.TextIOWrapper, mapped: Sequence[str], limits: ReadLimits = DEFAULT_LIMITS
    ) -> Table: ...


def csv_table(text: io.TextIOWrapper, mapped: Sequence[str], limits: ReadLimits = DEFAULT_LIMITS) -> Table:
    """CSV: each row has one cell per header column; a header column no mapping names is unmapped."""
    header, rows = read_csv(text, limits)
    wanted = set(mapped)
    return Table(header, header, rows, [h for h in header if h not in wanted])


def _covered(key: str, columns: Sequence[str]) -> bool:
    """An NDJSON key is mapped itself, through its parent object, or through one of its children."""
    parent = key.split(".", 1)[0]
    return key in columns or parent in columns or any(c.startswith(key + ".") for c in columns)


def ndjson_table(text: io.TextIOWrapper, mapped: Sequence[str], limits: ReadLimits = DEFAULT_LIMITS) -> Table:
    """NDJSON: each row has one cell per mapped column (per key of the first object for a preview)."""
    header, rows = read_ndjson(text, mapped, limits)
    columns = list(mapped) or header
    return Table(header, columns, rows, [h for h in header if not _covered(h, mapped)])


READERS: dict[str, FileReader] = {
    "csv": csv_table,
    "ndjson": ndjson_table,
}


def reader_for(file_format: str) -> FileReader:
    """The reader of ``file_format`` (a :class:`~inflow.producers.s3_import.definition.FileFormat` or its
    name); an unknown format raises :class:`FileFormatError` naming the known ones."""
    reader = READERS.get(str(file_format))
    if reader is None:
        known = ", ".join(sorted(READERS))
        raise FileFormatError(f"no reader for file format {str(file_format)!r}; known formats: {known}")
    return reader

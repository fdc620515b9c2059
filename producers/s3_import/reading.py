"""Streaming rows of import files out of a byte stream with bounded memory, one reader per file format.

The file rules are MoEngage's for S3 imports. CSV: UTF-8 only, comma delimiter, double-quote quoting, the
first row is the header (no duplicate or empty names), cells up to 128 KB, ``\\n`` line endings. NDJSON:
one object per line, flattened two levels into dot-notation columns. File-level problems raise
:class:`FileFormatError`; row-level ones are yielded as data.

Readers are looked up by format in :data:`READERS` (:func:`reader_for`); a new format is one more entry.
"""

from __future__ import annotations

import csv
import io
import json
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from inflow.producers.s3_import.exceptions import FileFormatError

CELL_LIMIT = 131_072  # MoEngage accepts cells of up to 128 KB
MAX_LINE = CELL_LIMIT * 100  # an NDJSON line holds at most 100 columns of 128 KB
EMPTY_ROW = "empty row"
csv.field_size_limit(CELL_LIMIT)
ZERO_ROWS = "Found zero data rows in the file"
NOT_UTF8 = (
    "File is in an unsupported format or contains invalid characters. Please save it as UTF-8 and re-upload"
)
CELL_TOO_LARGE = "Column value found larger than the max size-limit (check opening/closing quotes in a row)"
CRLF = "Only \\n line endings are supported: the file uses Windows \\r\\n line endings"


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


def read_csv(text: io.TextIOWrapper) -> tuple[list[str], Iterator[Row]]:
    """Header and a lazy iterator of rows; raises at once when the header or first row is unusable."""
    try:
        first = text.readline()
    except UnicodeDecodeError as exc:
        raise decode_error(exc) from exc
    if first.endswith("\r\n"):
        raise FileFormatError(CRLF)
    if first.startswith("\ufeff"):
        first = first[1:]
    try:
        header = next(csv.reader([first]), [])
    except csv.Error as exc:
        raise FileFormatError(f"Cannot read the header row: {exc}") from exc
    check_header(header)
    return header, _csv_rows(text, len(header))


def _csv_rows(text: io.TextIOWrapper, width: int) -> Iterator[Row]:
    reader = csv.reader(text, strict=True)
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
                raise FileFormatError(f"{CELL_TOO_LARGE}: data row {number + 1}") from exc
            raise FileFormatError(f"Cannot parse the CSV at data row {number + 1}: {exc}") from exc
        number += 1
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


def read_ndjson(text: io.TextIOWrapper, columns: Sequence[str]) -> tuple[list[str], Iterator[Row]]:
    """Rows as cells in the order of ``columns`` (default: the header, i.e. the first object's keys)."""
    lines = _ndjson_objects(text)
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


def _ndjson_objects(text: io.TextIOWrapper) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    number = 0
    while True:
        try:
            line = text.readline(MAX_LINE + 1)
        except UnicodeDecodeError as exc:
            raise decode_error(exc) from exc
        if not line:
            return
        if len(line) > MAX_LINE:
            raise FileFormatError(f"{CELL_TOO_LARGE}: data row {number + 1}")
        if not line.strip():
            number += 1
            yield number, None, EMPTY_ROW
            continue
        number += 1
        try:
            obj = json.loads(line)
        except ValueError as exc:
            yield number, None, f"not a JSON object: {exc}"
            continue
        if not isinstance(obj, dict):
            yield number, None, "not a JSON object"
            continue
        yield number, flatten(obj), None


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

    def __call__(self, text: io.TextIOWrapper, mapped: Sequence[str]) -> Table: ...


def csv_table(text: io.TextIOWrapper, mapped: Sequence[str]) -> Table:
    """CSV: each row has one cell per header column; a header column no mapping names is unmapped."""
    header, rows = read_csv(text)
    wanted = set(mapped)
    return Table(header, header, rows, [h for h in header if h not in wanted])


def _covered(key: str, columns: Sequence[str]) -> bool:
    """An NDJSON key is mapped itself, through its parent object, or through one of its children."""
    parent = key.split(".", 1)[0]
    return key in columns or parent in columns or any(c.startswith(key + ".") for c in columns)


def ndjson_table(text: io.TextIOWrapper, mapped: Sequence[str]) -> Table:
    """NDJSON: each row has one cell per mapped column (per key of the first object for a preview)."""
    header, rows = read_ndjson(text, mapped)
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

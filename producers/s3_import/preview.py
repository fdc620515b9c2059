"""Preview (MoEngage's "Fetch file" button): the top 5 rows of the most recent matching file, with each
column's name and a sample value from the first data row, or exactly MoEngage's fetch errors.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

from inflow.producers.s3_import.definition import ImportDefinition
from inflow.producers.s3_import.exceptions import FetchError, FileFormatError
from inflow.producers.s3_import.pgp import IS_ENCRYPTED, DecryptStream, Keyring, looks_encrypted
from inflow.producers.s3_import.reading import ZERO_ROWS, CountingReader, reader_for, text_stream
from inflow.producers.s3_import.storage import CHECK_FOLDER, Folder

PREVIEW_ROWS = 5


@dataclass
class Preview:
    file_name: str
    columns: list[str]
    samples: dict[str, Any]
    rows: list[list[Any]] = field(default_factory=list)


def preview(d: ImportDefinition, default_endpoint: str | None = None) -> Preview:
    """Read only as much of the most recent file as five rows need."""
    folder = Folder(d, default_endpoint)
    files = folder.list_files()
    if not files:
        raise FetchError(CHECK_FOLDER)
    latest = files[-1]
    body = folder.open(latest)
    try:
        if d.encrypted:
            with Keyring(d.pgp) as keyring:
                stream = DecryptStream(keyring, CountingReader(body))
                try:
                    return _top_rows(d, latest.name, stream.stdout)
                finally:
                    stream.close()
        buffered = io.BufferedReader(CountingReader(body), 1 << 16)
        if looks_encrypted(buffered.peek(64)[:64]):
            raise FileFormatError(IS_ENCRYPTED)
        return _top_rows(d, latest.name, buffered)
    finally:
        with contextlib.suppress(Exception):
            body.close()


def _top_rows(d: ImportDefinition, name: str, binary: Any) -> Preview:
    table = reader_for(d.file_format)(text_stream(binary), [])  # no mapping: every column of the file
    header = table.header
    top: list[list[Any]] = []
    for row in table.rows:
        if row.cells is not None:
            top.append(list(row.cells))
        if len(top) >= PREVIEW_ROWS:
            break
    if not top:
        raise FileFormatError(ZERO_ROWS)
    return Preview(name, header, dict(zip(header, top[0], strict=False)), top)

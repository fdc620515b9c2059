"""Which object names an import reads: its prefix, one of the five date formats, and an extension.

MoEngage's S3 file naming: ``<import type>_<date time format>.<ext>``; with PGP ``.csv.asc`` /
``.csv.pgp`` and the same for ``.json``. Only objects directly in the folder count; sub-folders are never
read.
"""

from __future__ import annotations

import re
from enum import StrEnum

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MM = r"(?:0[1-9]|1[0-2])"
_DD = r"(?:0[1-9]|[12][0-9]|3[01])"
_YYYY = r"[0-9]{4}"
_HH = r"(?:[01][0-9]|2[0-3])"
_MIN = r"[0-5][0-9]"


class DateFormat(StrEnum):
    """The five file-name date-time suffixes MoEngage accepts (the day the import executes)."""

    MM_YYYY = "mm_yyyy"
    DDMMYYYY = "ddmmyyyy"
    YYYYMMDD = "yyyymmdd"
    MON_YYYY = "mon_yyyy"
    YYYYMMDD_HHMM = "yyyymmdd_hhmm"


DATE_PATTERNS: dict[DateFormat, str] = {
    DateFormat.MM_YYYY: f"{_MM}_{_YYYY}",
    DateFormat.DDMMYYYY: f"{_DD}{_MM}{_YYYY}",
    DateFormat.YYYYMMDD: f"{_YYYY}{_MM}{_DD}",
    DateFormat.MON_YYYY: f"(?:{'|'.join(MONTHS)})_{_YYYY}",
    DateFormat.YYYYMMDD_HHMM: f"{_YYYY}{_MM}{_DD}_{_HH}{_MIN}",
}

REGISTERED_PREFIX = "registered_user_data"
ANONYMOUS_PREFIX = "anonymous_user_data"
CUSTOM_PREFIX = re.compile(r"^[A-Za-z0-9_ ]{1,100}$")
EVENT_PREFIX = re.compile(r"^[^/]{1,100}$")


def event_prefix(event_name: str) -> str:
    """File names of an event begin with its event name, spaces turned into ``_`` (as in MoEngage)."""
    return event_name.replace(" ", "_")


def name_pattern(prefix: str, date_format: DateFormat, file_format: str, encrypted: bool) -> re.Pattern[str]:
    """Regex of a whole object name (no folder) for an import."""
    ext = "json" if file_format == "ndjson" else "csv"
    suffix = rf"\.{ext}\.(?:asc|pgp)" if encrypted else rf"\.{ext}"
    return re.compile(rf"^{re.escape(prefix)}_{DATE_PATTERNS[date_format]}{suffix}$")


def object_name(key: str, folder: str) -> str | None:
    """The file name of ``key`` if it lies directly in ``folder`` (never in a sub-folder), else None."""
    head = folder + "/"
    if not key.startswith(head):
        return None
    rest = key[len(head) :]
    return rest if rest and "/" not in rest else None


def shown(name: str) -> str:
    """``name`` safe for one log line, a run history row, an e-mail header or an S3 key: control and other
    unprintable characters (a trailing newline, a carriage return, ...) are written as escapes."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in name)

"""The 19 ``datetime_format`` values MoEngage accepts in mappings, each compiled once into a fast parser.

Values without a ``TZD`` are wall-clock times in the zone given by the caller (UTC, or the app timezone
for "Event Time (App Timezone)"). ``.s`` is a fraction of a second of any length (kept to microseconds).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import cache

from inflow.producers.s3_import.exceptions import RowError

DATETIME_FORMATS: tuple[str, ...] = (
    "YYYY-MM-DD",
    "YYYY/MM/DD",
    "DD/MM/YYYY",
    "DD-MM-YYYY",
    "DD-MM-YYYY hh:mm:ss",
    "DD/MM/YYYY hh:mm:ss",
    "YYYY-MM-DD hh:mm:ss",
    "YYYY/MM/DD hh:mm:ss",
    "DD-MM-YYYYThh:mm:ss.s",
    "DD/MM/YYYYThh:mm:ss.s",
    "DD-MM-YYYYThh:mm:ssTZD",
    "DD/MM/YYYYThh:mm:ssTZD",
    "YYYY-MM-DD hh:mm:ss.s",
    "YYYY/MM/DD hh:mm:ss.s",
    "YYYY-MM-DDThh:mm:ssTZD",
    "YYYY/MM/DDThh:mm:ssTZD",
    "YYYY-MM-DDThh:mm:ss.sTZD",
    "YYYY/MM/DDThh:mm:ss.sTZD",
    "YYYY-MM-DD hh:mm:ss.sTZD",
)

_TOKENS = (
    ("YYYY", r"(?P<y>\d{4})"),
    ("MM", r"(?P<mo>\d{2})"),
    ("DD", r"(?P<d>\d{2})"),
    ("hh", r"(?P<h>\d{2})"),
    ("mm", r"(?P<mi>\d{2})"),
    ("ss", r"(?P<s>\d{2})"),
    (".s", r"\.(?P<f>\d{1,9})"),
    ("TZD", r"(?P<tz>Z|[+-]\d{2}:\d{2})"),
)

DatetimeParser = Callable[[str, tzinfo], datetime]


def format_regex(fmt: str) -> re.Pattern[str]:
    """Translate a MoEngage datetime format into an anchored regex with named groups."""
    out, i = [], 0
    while i < len(fmt):
        for token, pattern in _TOKENS:
            if fmt.startswith(token, i):
                out.append(pattern)
                i += len(token)
                break
        else:
            out.append(re.escape(fmt[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def _offset(tz: str) -> tzinfo:
    if tz == "Z":
        return UTC
    sign = -1 if tz[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))


@cache
def parser_for(fmt: str) -> DatetimeParser:
    """A parser for one of the 19 formats; any other format is a configuration error (ValueError)."""
    if fmt not in DATETIME_FORMATS:
        raise ValueError(f"unsupported datetime_format {fmt!r}; supported: {', '.join(DATETIME_FORMATS)}")
    regex = format_regex(fmt)
    to_iso = _iso_rewriter(fmt)

    def parse(value: str, default_tz: tzinfo) -> datetime:
        value = value.strip()
        if regex.match(value) is not None:  # fast path: the shape is right, let C parse it
            try:
                parsed = datetime.fromisoformat(to_iso(value))
            except ValueError:
                pass  # e.g. 31 February or a 7+ digit fraction: the exact path below says why
            else:
                return (parsed if parsed.tzinfo else parsed.replace(tzinfo=default_tz)).astimezone(UTC)
        return _parse_exact(regex, fmt, value, default_tz)

    return parse


def _iso_rewriter(fmt: str) -> Callable[[str], str]:
    """Turn a value of ``fmt`` into ISO 8601 by slicing (dates come first, at fixed positions)."""
    if fmt.startswith("YYYY"):
        return (lambda v: v.replace("/", "-")) if "/" in fmt[:10] else (lambda v: v)
    return lambda v: f"{v[6:10]}-{v[3:5]}-{v[0:2]}{v[10:]}"


def _parse_exact(regex: re.Pattern[str], fmt: str, value: str, default_tz: tzinfo) -> datetime:
    """The exact path: field by field, so an impossible value gets a precise reason."""
    match = regex.match(value)
    if match is None:
        raise RowError(f"value {value!r} does not match datetime format {fmt}")
    g = match.groupdict()
    frac = (g.get("f") or "0")[:6].ljust(6, "0")
    tz = _offset(g["tz"]) if g.get("tz") else default_tz
    try:
        return datetime(
            int(g["y"]),
            int(g["mo"]),
            int(g["d"]),
            int(g.get("h") or 0),
            int(g.get("mi") or 0),
            int(g.get("s") or 0),
            int(frac),
            tzinfo=tz,
        ).astimezone(UTC)
    except ValueError as exc:
        raise RowError(f"value {value!r} is not a valid date-time ({exc})") from exc

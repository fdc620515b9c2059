"""Event times: epoch seconds, epoch milliseconds or ISO 8601 in, UTC instants out (reference 2.3).

``user_time`` is the user's local wall-clock time and ``current_time`` the UTC time; with the timezone
offset either one derives the other. When neither time is sent, the receive time is the event time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dateutil.parser import isoparse

# Epoch values at or above this magnitude are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
MS_THRESHOLD = 100_000_000_000
MAX_OFFSET_S = 54_000
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_MIN = datetime(1970, 1, 1, tzinfo=UTC)
_MAX = datetime(9999, 12, 31, tzinfo=UTC)


class TimeValueError(ValueError):
    """A time value that is none of the accepted forms."""


@dataclass(frozen=True, slots=True)
class ParsedTime:
    """A wall-clock reading; ``offset_s`` is set only when an ISO string carried an explicit offset."""

    wall: datetime  # naive-as-UTC digits of the clock, stored aware in UTC
    offset_s: int | None


def parse_time(value: object) -> ParsedTime:
    """Read epoch seconds or milliseconds (number or digit string, by magnitude) or ISO 8601."""
    if isinstance(value, bool):
        raise TimeValueError("a boolean is not a time")
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        value = float(value.strip())
    if isinstance(value, int | float):
        return ParsedTime(_from_epoch(float(value)), None)
    if isinstance(value, str):
        return _from_iso(value.strip())
    raise TimeValueError(f"expected a number or a string, got {type(value).__name__}")


def _from_epoch(number: float) -> datetime:
    if not math.isfinite(number):
        raise TimeValueError("not a finite number")
    seconds = number / 1000 if abs(number) >= MS_THRESHOLD else number
    try:
        moment = _MIN + timedelta(seconds=seconds)
    except OverflowError as exc:
        raise TimeValueError("epoch value out of range") from exc
    if not _MIN <= moment <= _MAX:
        raise TimeValueError("epoch value out of range")
    return moment


def _from_iso(text: str) -> ParsedTime:
    try:
        moment = isoparse(text)
    except (ValueError, OverflowError) as exc:
        raise TimeValueError(f"{text!r} is not ISO 8601") from exc
    offset = moment.utcoffset()
    wall = moment.replace(tzinfo=UTC)
    if offset is None or offset == timedelta(0):
        return ParsedTime(wall, None)
    return ParsedTime(wall, int(offset.total_seconds()))


@dataclass(frozen=True, slots=True)
class EventTimes:
    """The derived event instant (UTC), the normalised current_time and the offset actually sent."""

    event_time: datetime
    current_time: datetime | None
    offset_s: int | None


def derive_times(
    user_time: ParsedTime | None,
    current_time: ParsedTime | None,
    offset_s: int | None,
    received_at: datetime,
    default_offset_s: int = 0,
) -> EventTimes:
    """Apply the reference's rules: current_time wins; user_time minus the offset gives UTC otherwise.

    ``Z`` or a missing zone on ``current_time`` means UTC. An explicit zone on ``user_time`` stands in for
    a missing ``user_timezone_offset``; with neither, the account default (``default_offset_s``) applies.
    """
    current = None
    if current_time is not None:
        shift = current_time.offset_s or 0
        current = current_time.wall - timedelta(seconds=shift)
    if current is not None:
        return EventTimes(current, current, offset_s)
    if user_time is not None:
        effective = offset_s if offset_s is not None else user_time.offset_s
        if effective is None:
            effective = default_offset_s
        return EventTimes(user_time.wall - timedelta(seconds=effective), None, offset_s)
    return EventTimes(received_at, None, offset_s)

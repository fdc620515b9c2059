"""Event times: epoch seconds, epoch milliseconds or ISO 8601 in (the forms MoEngage accepts for an
action's ``user_time`` and ``current_time``), UTC epoch milliseconds out.

``user_time`` is the user's local wall-clock time and ``current_time`` the UTC time; with the timezone
offset either one derives the other. When neither time is sent, the receive time is the event time.
Everything is integer milliseconds (what Avro ``timestamp-millis`` stores): no datetime on the hot path.
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
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class TimeValueError(ValueError):
    """A time value that is none of the accepted forms."""


@dataclass(frozen=True, slots=True)
class ParsedTime:
    """A wall-clock reading in ms; ``offset_s`` is set only when an ISO string carried a non-zero offset."""

    wall_ms: int
    offset_s: int | None


def parse_time(value: object) -> ParsedTime:
    """Read epoch seconds or milliseconds (number or digit string, by magnitude) or ISO 8601."""
    if isinstance(value, bool):
        raise TimeValueError("a boolean is not a time")
    if isinstance(value, int):
        return ParsedTime(
            _checked(value if value >= MS_THRESHOLD or value <= -MS_THRESHOLD else value * 1000), None
        )
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        value = float(value.strip()) if "." in value else int(value.strip())
        return parse_time(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TimeValueError("not a finite number")
        return ParsedTime(_checked(round(value if abs(value) >= MS_THRESHOLD else value * 1000)), None)
    if isinstance(value, str):
        return _from_iso(value.strip())
    raise TimeValueError(f"expected a number or a string, got {type(value).__name__}")


def _checked(ms: int) -> int:
    if not 0 <= ms <= MAX_MS:
        raise TimeValueError("epoch value out of range")
    return ms


def _from_iso(text: str) -> ParsedTime:
    try:
        moment = isoparse(text)
    except (ValueError, OverflowError) as exc:
        raise TimeValueError(f"{text!r} is not ISO 8601") from exc
    offset = moment.utcoffset()
    wall_ms = _checked((moment.replace(tzinfo=UTC) - _EPOCH) // _ONE_MS)
    if offset is None or offset == timedelta(0):
        return ParsedTime(wall_ms, None)
    return ParsedTime(wall_ms, int(offset.total_seconds()))


def to_ms(moment: datetime) -> int:
    """Aware datetime to epoch milliseconds, exactly."""
    return (moment - _EPOCH) // _ONE_MS


@dataclass(frozen=True, slots=True)
class EventTimes:
    """The derived event instant and the normalised current_time (epoch ms, UTC), and the offset sent."""

    event_ms: int
    current_ms: int | None
    offset_s: int | None


def derive_times(
    user_time: ParsedTime | None,
    current_time: ParsedTime | None,
    offset_s: int | None,
    received_ms: int,
    default_offset_s: int = 0,
) -> EventTimes:
    """Apply MoEngage's rules: current_time wins; user_time minus the offset gives UTC otherwise.

    ``Z`` or a missing zone on ``current_time`` means UTC. An explicit zone on ``user_time`` stands in for
    a missing ``user_timezone_offset``; with neither, the account default (``default_offset_s``) applies.
    """
    if current_time is not None:
        current = current_time.wall_ms - (current_time.offset_s or 0) * 1000
        return EventTimes(current, current, offset_s)
    if user_time is not None:
        effective = offset_s if offset_s is not None else user_time.offset_s
        if effective is None:
            effective = default_offset_s
        return EventTimes(user_time.wall_ms - effective * 1000, None, offset_s)
    return EventTimes(received_ms, None, offset_s)

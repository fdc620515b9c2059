"""When an import runs: one-time (now or at a time) or periodic (hourly, daily, weekly, monthly, every N
minutes), ending after N runs or at a date. Occurrences are computed from the definition alone
(``dateutil.rrule``), so every poller agrees on them without shared state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from dateutil import rrule
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class ScheduleKind(StrEnum):
    ONE_TIME = "one_time"
    PERIODIC = "periodic"


class Frequency(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    MINUTES = "minutes"


_RRULE_FREQ: dict[Frequency, int] = {
    Frequency.HOURLY: rrule.HOURLY,
    Frequency.DAILY: rrule.DAILY,
    Frequency.WEEKLY: rrule.WEEKLY,
    Frequency.MONTHLY: rrule.MONTHLY,
    Frequency.MINUTES: rrule.MINUTELY,
}


class Schedule(BaseModel):
    """MoEngage's import frequencies; ``start_at`` defaults to when the import was created."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ScheduleKind = ScheduleKind.ONE_TIME
    at: AwareDatetime | None = Field(None, description="one-time: when to run; None runs as soon as possible")
    every: Frequency | None = None
    interval: int = Field(1, ge=1, le=100_000, description="periodic: every N units (minutes for 'minutes')")
    start_at: AwareDatetime | None = None
    end_after_runs: int | None = Field(None, ge=1)
    end_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if self.kind is ScheduleKind.PERIODIC and self.every is None:
            raise ValueError("a periodic schedule needs 'every' (hourly, daily, weekly, monthly, minutes)")
        if self.kind is ScheduleKind.ONE_TIME and (self.every or self.end_after_runs or self.end_at):
            raise ValueError("a one-time schedule takes only 'at'")
        return self

    def _rule(self, anchor: datetime) -> rrule.rrule:
        assert self.every is not None
        start = (self.start_at or anchor).astimezone(UTC).replace(microsecond=0)
        return rrule.rrule(
            _RRULE_FREQ[self.every],  # type: ignore[arg-type]
            dtstart=start,
            interval=self.interval,
            count=self.end_after_runs,
            until=self.end_at.astimezone(UTC) if self.end_at else None,
        )

    def latest_due(self, now: datetime, anchor: datetime) -> datetime | None:
        """The most recent occurrence at or before ``now`` (None when none is due yet)."""
        if self.kind is ScheduleKind.ONE_TIME:
            at = self.at or anchor
            return at if at <= now else None
        due: datetime | None = self._rule(anchor).before(now, inc=True)
        return due

    def next_after(self, now: datetime, anchor: datetime) -> datetime | None:
        """The next occurrence after ``now``, or None when the schedule has ended."""
        if self.kind is ScheduleKind.ONE_TIME:
            at = self.at or anchor
            return at if at > now else None
        nxt: datetime | None = self._rule(anchor).after(now, inc=False)
        return nxt

"""Hourly and daily row budgets of file imports, per workspace and import type (MoEngage §4.4).

Users imports (registered and anonymous) and events imports each have their own budget; the defaults are
MoEngage's (users 600,000 rows an hour and 14,000,000 a day, events 5,000,000 and 40,000,000), set per
workspace with ``import_limits`` in the YAML file. Auxiliary data has no documented budget and none here.

What was used is read from run history (``control.import-runs``): the rows of the workspace's files of the
same type that started in the last hour / day. Nothing else is stored, so every poller and every restart
agrees. A file whose rows do not fit in what is left is *parked* (run history: WAITING, "Rate limit
breached") and looked at again on every tick until they fit; a file with more rows than the hourly budget
can never fit and fails ("Number of rows in the file exceeds the hourly limit").

Rows are counted before a file is claimed only when they might not fit: a row takes at least one byte, so a
file of fewer bytes than the budget left fits without counting. Counting reads the file once (through
GnuPG when encrypted) and counts its lines, an upper bound of its rows (a quoted line break in a CSV cell
counts once more).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from inflow.config.file import ImportLimits
from inflow.imports.history import IMPORT_TYPES, QUEUED, WAITING
from inflow.producers.s3_import.definition import FileFormat, ImportDefinition, ImportType
from inflow.producers.s3_import.pgp import DecryptStream, Keyring
from inflow.producers.s3_import.storage import Folder, S3File

RATE_LIMIT_BREACHED = "Rate limit breached"
OVER_HOURLY_LIMIT = "Number of rows in the file exceeds the hourly limit"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
CHUNK = 1 << 20


@dataclass(frozen=True)
class Budget:
    per_hour: int
    per_day: int


@dataclass(frozen=True)
class Verdict:
    """Import the file now (``park`` and ``fail`` None), park it, or fail it, with the reason."""

    park: str | None = None
    fail: str | None = None


def budget_for(limits: ImportLimits, kind: ImportType) -> Budget | None:
    if kind in (ImportType.REGISTERED_USERS, ImportType.ANONYMOUS_USERS):
        return Budget(limits.users_rows_per_hour, limits.users_rows_per_day)
    if kind is ImportType.EVENTS:
        return Budget(limits.events_rows_per_hour, limits.events_rows_per_day)
    return None


def used_rows(
    runs: Iterable[dict[str, Any]], workspace_id: str, import_type: str, now: datetime
) -> tuple[int, int]:
    """Rows of the workspace's files of ``import_type`` (USERS / EVENTS) started in the last hour and day."""
    hour = day = 0
    for run in runs:
        if run.get("workspace_id") != workspace_id or run.get("import_type") != import_type:
            continue
        if run["status"] in (QUEUED, WAITING):
            continue
        started = run["started_at"]
        rows = int(run.get("rows_total") or 0)
        if started >= now - DAY:
            day += rows
            if started >= now - HOUR:
                hour += rows
    return hour, day


def judge(rows: int, budget: Budget, used_hour: int, used_day: int) -> Verdict:
    if rows > budget.per_hour:
        return Verdict(fail=f"{OVER_HOURLY_LIMIT} ({rows} rows, {budget.per_hour} an hour)")
    if used_hour + rows > budget.per_hour:
        left = max(budget.per_hour - used_hour, 0)
        return Verdict(park=f"{RATE_LIMIT_BREACHED}: {rows} rows, {left} left of {budget.per_hour} this hour")
    if used_day + rows > budget.per_day:
        left = max(budget.per_day - used_day, 0)
        return Verdict(park=f"{RATE_LIMIT_BREACHED}: {rows} rows, {left} left of {budget.per_day} today")
    return Verdict()


def check_budget(
    d: ImportDefinition,
    folder: Folder,
    file: S3File,
    limits: ImportLimits,
    runs: Iterable[dict[str, Any]],
    now: datetime,
    gpg_timeout: float,
) -> Verdict:
    """Whether ``file`` fits in the workspace's budget of its import type now."""
    budget = budget_for(limits, d.type)
    if budget is None:
        return Verdict()
    used_hour, used_day = used_rows(runs, d.workspace_id, IMPORT_TYPES[d.type.value], now)
    left = min(budget.per_hour - used_hour, budget.per_day - used_day)
    if file.size <= left and file.size <= budget.per_hour:
        return Verdict()  # fewer bytes than rows left: it fits whatever its rows
    return judge(count_rows(d, folder, file, gpg_timeout), budget, used_hour, used_day)


def count_rows(d: ImportDefinition, folder: Folder, file: S3File, gpg_timeout: float) -> int:
    """Data rows of the file, at most: its lines, less the CSV header."""
    body = folder.open(file)
    try:
        if d.encrypted:
            with Keyring(d.pgp) as keyring:
                stream = DecryptStream(keyring, body, timeout=gpg_timeout)
                try:
                    lines = count_lines(stream.stdout)
                finally:
                    stream.close()
        else:
            lines = count_lines(body)
    finally:
        body.close()
    return max(lines - 1, 0) if d.file_format is FileFormat.CSV else lines


def count_lines(stream: IO[bytes] | Any) -> int:
    """Lines of a byte stream (a last line without a line break counts), read in bounded chunks."""
    lines, last = 0, b"\n"
    while chunk := stream.read(CHUNK):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
    return lines + (last != b"\n")

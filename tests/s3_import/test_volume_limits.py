"""Volume safeguards of file imports (§4.4, §4.6): file size, columns, files per run, cell size, hourly and
daily row budgets with parked files, and the 30 attempts of a file that meets S3 outages. Real S3 folder,
real broker; small limits are configured where the documented ones would need huge files, and the
defaults are checked against the documented values."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inflow.config.file import ImportLimits
from inflow.config.settings import KafkaSettings, S3Settings
from inflow.producers.s3_import.budgets import (
    OVER_HOURLY_LIMIT,
    RATE_LIMIT_BREACHED,
    Budget,
    count_lines,
    judge,
    used_rows,
)
from inflow.producers.s3_import.poller import Poller, RunSummary
from inflow.producers.s3_import.reading import CELL_LIMIT, MAX_COLUMNS, read_ndjson, text_stream
from inflow.producers.s3_import.runs import RunStore
from inflow.producers.s3_import.settings import PollerSettings
from inflow.schemas.serde import AvroSerde
from tests.s3_import.faults import CUT, FaultyProxy
from tests.support import wait_for

DAY1 = "registered_user_data_01012024.csv"
DAY2 = "registered_user_data_02012024.csv"
DAY3 = "registered_user_data_03012024.csv"


def users(n: int, prefix: str = "u") -> str:
    return "ID,First Name\n" + "".join(f"{prefix}{i},N{i}\n" for i in range(n))


def by_file(summaries: list[RunSummary] | RunSummary) -> dict[str, Any]:
    if isinstance(summaries, RunSummary):
        summaries = [summaries]
    return {r.file_name: r for s in summaries for r in s.files}


def history(kafka: KafkaSettings, name: str) -> dict[str, dict[str, Any]]:
    return {r["file_name"]: r for r in RunStore(kafka, AvroSerde()).history(name, timeout=10)}


def test_defaults_are_the_documented_limits() -> None:
    settings = PollerSettings()
    assert settings.max_file_bytes == 500 * 1024 * 1024  # "Less than 500 MB per CSV/JSON file"
    assert settings.max_columns == MAX_COLUMNS == 100
    assert settings.max_files_per_run == 250
    assert settings.transient_attempts == 30
    assert CELL_LIMIT == 131_072  # 128 KB
    limits = ImportLimits()
    assert (limits.users_rows_per_hour, limits.users_rows_per_day) == (600_000, 14_000_000)
    assert (limits.events_rows_per_hour, limits.events_rows_per_day) == (5_000_000, 40_000_000)


def test_budget_counts_only_the_workspace_type_and_window() -> None:
    now = datetime(2024, 1, 2, 12, tzinfo=UTC)

    def run(
        minutes_ago: int, rows: int, ws: str = "WS1", kind: str = "USERS", status: str = "SUCCESSFUL"
    ) -> Any:
        started = now - timedelta(minutes=minutes_ago)
        return {
            "workspace_id": ws,
            "import_type": kind,
            "status": status,
            "started_at": started,
            "rows_total": rows,
        }

    runs = [
        run(10, 100),
        run(90, 1000),  # outside the hour, inside the day
        run(60 * 25, 5000),  # outside the day
        run(5, 7, ws="OTHER"),
        run(5, 9, kind="EVENTS"),
        run(5, 11, status="WAITING"),  # parked: nothing used yet
    ]
    assert used_rows(runs, "WS1", "USERS", now) == (100, 1100)
    budget = Budget(per_hour=150, per_day=1200)
    assert judge(50, budget, 100, 1100) == judge(0, budget, 0, 0)  # fits
    assert judge(51, budget, 100, 1100).park == f"{RATE_LIMIT_BREACHED}: 51 rows, 50 left of 150 this hour"
    assert judge(40, Budget(150, 1120), 100, 1100).park.endswith("20 left of 1120 today")
    assert judge(151, budget, 0, 0).fail == f"{OVER_HOURLY_LIMIT} (151 rows, 150 an hour)"
    assert count_lines(io.BytesIO(b"a\nb\nc")) == 3 and count_lines(io.BytesIO(b"a\nb\n")) == 2


def test_ndjson_value_over_128_kb_fails_its_row_only() -> None:
    big = "x" * (CELL_LIMIT + 1)
    data = f'{{"id": "a", "note": "{big}"}}\n{{"id": "b", "note": "ok"}}\n'.encode()
    _, rows = read_ndjson(text_stream(io.BytesIO(data)), ["id", "note"])
    first, second = list(rows)
    assert first.cells is None and first.error is not None
    assert first.error.startswith("Field larger than field limit (131072 characters, 128 KB): column 'note'")
    assert second.cells == ["b", "ok"]


def test_file_size_and_column_limits_fail_the_file_with_the_reason(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
) -> None:
    d = definition(date_format="ddmmyyyy")
    put(f"in/users/{DAY1}", users(300))  # about 2.7 KB: over the 1000-byte limit below
    wide = ["ID", *(f"c{i}" for i in range(MAX_COLUMNS))]  # 101 columns: over the documented 100
    put(f"in/users/{DAY2}", ",".join(wide) + "\n" + ",".join(["w1", *("x" * MAX_COLUMNS)]) + "\n")
    put(f"in/users/{DAY3}", users(3))
    poller = poller_factory(max_file_bytes=1000)
    poller.store.put(d)
    runs = by_file(poller.run_import(d))
    assert runs[DAY1].status == "FAILED"
    assert runs[DAY1].message.startswith("File size exceeds the limit: ") and runs[DAY1].message.endswith(
        "less than 1000 bytes"
    )
    assert runs[DAY2].status == "FAILED"
    assert runs[DAY2].message == "The file has 101 columns: at most 100 columns are supported per file"
    assert (runs[DAY3].status, runs[DAY3].rows_added) == ("SUCCESSFUL", 3)
    stored = history(catalogue_topics, d.name)
    assert stored[DAY1]["status"] == "FAILED" and stored[DAY1]["file_size"] > 1000
    again = poller.run_import(d)  # failed files are done: never imported again
    assert again.files == [] and "already processed (FAILED)" in again.skipped[DAY1]


def test_files_over_the_per_run_limit_wait_queued_for_the_next_run(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
) -> None:
    d = definition(date_format="ddmmyyyy")
    for i, name in enumerate((DAY1, DAY2, DAY3)):
        put(f"in/users/{name}", users(2, prefix=f"f{i}-"))
    poller = poller_factory(max_files_per_run=2)
    poller.store.put(d)
    (first,) = poller.tick()
    assert sorted(by_file(first)) == [DAY1, DAY2]
    assert first.skipped[DAY3] == "More than 2 files in one run: this file is imported by the next run"
    queued = history(catalogue_topics, d.name)[DAY3]
    assert queued["status"] == "QUEUED" and queued["message"].startswith("More than 2 files")
    # The next tick runs the import again, whatever its schedule (a one-time import never falls due again).
    second = poller.tick()
    assert by_file(second)[DAY3].status == "SUCCESSFUL"
    assert history(catalogue_topics, d.name)[DAY3]["status"] == "SUCCESSFUL"


def test_row_budget_parks_a_file_as_waiting_until_it_fits(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
) -> None:
    d = definition(date_format="ddmmyyyy")
    put(f"in/users/{DAY1}", users(4, "a"))
    put(f"in/users/{DAY2}", users(4, "b"))  # 4 + 4 > 6 an hour: parked
    put(f"in/users/{DAY3}", users(7, "c"))  # more than the hourly budget: can never fit
    poller = poller_factory()
    poller.import_limits["WS1"] = ImportLimits(users_rows_per_hour=6, users_rows_per_day=100)
    poller.store.put(d)
    runs = by_file(poller.tick())
    assert (runs[DAY1].status, runs[DAY1].rows_added) == ("SUCCESSFUL", 4)
    assert runs[DAY3].status == "FAILED"
    assert runs[DAY3].message == "Number of rows in the file exceeds the hourly limit (7 rows, 6 an hour)"
    parked = history(catalogue_topics, d.name)[DAY2]
    assert parked["status"] == "WAITING"
    assert parked["message"] == "Rate limit breached: 4 rows, 2 left of 6 this hour"
    assert d.name in poller.parked

    # Looked at again on every tick, still parked: nothing claimed, nothing imported.
    assert by_file(poller.tick()) == {}
    assert poller.ledger.get(f"{d.name}|{d.bucket}/{d.folder}|{DAY2}") is None
    # The budget frees (here: the workspace's budget is raised): the parked file is imported on the next tick.
    poller.import_limits["WS1"] = ImportLimits(users_rows_per_hour=8, users_rows_per_day=100)
    assert by_file(poller.tick())[DAY2].status == "SUCCESSFUL"
    assert history(catalogue_topics, d.name)[DAY2]["status"] == "SUCCESSFUL"
    assert d.name not in poller.parked


@pytest.fixture
def proxy(s3_settings: S3Settings) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(str(s3_settings.endpoint_url), cut_after=40)
    yield faulty
    faulty.stop()


def test_a_file_failing_for_transient_causes_is_failed_after_its_attempts(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    proxy: FaultyProxy,
    catalogue_topics: KafkaSettings,
) -> None:
    d = definition(endpoint_url=proxy.url, date_format="ddmmyyyy")
    put(f"in/users/{DAY1}", users(200))
    poller = poller_factory(retry_min_seconds=0.2, retry_max_seconds=0.5, transient_attempts=3)
    poller.store.put(d)
    proxy.mode = CUT  # every download breaks off mid-stream
    proxy.start()
    seen: list[str] = []

    def failed() -> bool:
        for summary in poller.tick():
            seen.extend(r.status for r in summary.files)
        return "FAILED" in seen

    wait_for(failed, 90, what="the file FAILED after its attempts")
    assert seen == ["RETRYING", "RETRYING", "FAILED"]
    stored = history(catalogue_topics, d.name)[DAY1]
    assert stored["status"] == "FAILED" and stored["message"].startswith(
        "Failed after 3 attempts: S3 unavailable"
    )
    proxy.mode = "up"
    assert by_file(poller.run_import(d)) == {}  # failed for good: not imported again

"""Following the files of an import run as pollers write their run records to ``control.import-runs``.

Every poller writes a file's record when it starts it (PROCESSING), with the counts so far about every second
while it reads it (``progress.py``), and when it ends (SUCCESSFUL, PARTIAL_SUCCESS, FAILED) or must retry
later (RETRYING, WAITING). A follower reads that topic live, whichever poller imports the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inflow.config.settings import KafkaSettings
from inflow.kafka.view import CompactedView
from inflow.producers.s3_import.runs import FAILED, PARTIAL_SUCCESS, SUCCESSFUL
from inflow.schemas.serde import AvroSerde

FINAL = frozenset({SUCCESSFUL, PARTIAL_SUCCESS, FAILED})


@dataclass(frozen=True)
class FileState:
    """The latest run record of one file, as shown while following."""

    file_name: str
    status: str
    rows_total: int
    rows_added: int
    rows_failed: int
    rows_skipped: int
    started_at: datetime
    completed_at: datetime | None
    message: str

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def rows_per_second(self, now: datetime | None = None) -> float:
        """Rows read per second since the file started (until it ended, once it has)."""
        end = self.completed_at or now or datetime.now(UTC)
        seconds = (end - self.started_at).total_seconds()
        return self.rows_total / seconds if seconds > 0 else 0.0

    @classmethod
    def of(cls, record: dict[str, Any]) -> FileState:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__})


class RunFollower:
    """The files of import ``import_name`` whose runs started at or after ``since``, kept up to date."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde, import_name: str, since: datetime) -> None:
        self.import_name = import_name
        self.since = since
        self.view = CompactedView(
            kafka,
            kafka.topic("control.import-runs"),
            name="import-runs-follow",
            decode=lambda value: serde.decode(value, expected="ImportRun")[1],
        )

    def open(self, timeout: float = 30.0) -> RunFollower:
        self.view.open(timeout).catch_up(timeout)
        return self

    def pump(self, timeout: float) -> int:
        return self.view.pump(timeout)

    def files(self) -> dict[str, FileState]:
        """The latest record of each file (a retry after a failed attempt is a later record)."""
        latest: dict[str, dict[str, Any]] = {}
        for record in list(self.view.data.values()):
            if record["import_name"] != self.import_name or record["started_at"] < self.since:
                continue
            known = latest.get(record["file_name"])
            if known is None or record["started_at"] >= known["started_at"]:
                latest[record["file_name"]] = record
        return {name: FileState.of(record) for name, record in sorted(latest.items())}

    def close(self) -> None:
        self.view.close()

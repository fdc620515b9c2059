"""Per-file run records (``ImportRun``) in the compacted ``control.import-runs`` topic, keyed by run id.

The run id is derived from (import, folder, file, attempt), so a resumed file updates the same record and
its counts are never added twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from inflow.config.settings import KafkaSettings
from inflow.imports import history
from inflow.kafka.errors import KafkaFault, Kind
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.producers.s3_import.exceptions import InfrastructureFault, S3ImportError
from inflow.schemas.serde import AvroSerde

NO_LINGER: dict[str, Any] = {"linger.ms": 0}  # control records are written one at a time

# The states of a file in run history (inflow/imports/history.py has the API's view of them).
QUEUED = history.QUEUED  # found by a run, waiting for the files before it
PROCESSING = history.PROCESSING  # rows being read and written, then applied by the processors
SUCCESSFUL = history.SUCCESSFUL
PARTIAL_SUCCESS = history.PARTIAL_SUCCESS
FAILED = history.FAILED
RETRYING = history.RETRYING  # S3 or Kafka failed: the file is imported again after a wait (message says why)
WAITING = history.WAITING  # parked: a row budget is spent, or its workspace is disabled (message says why)
RUNNING = PROCESSING  # the former name of PROCESSING (records written before v2 say "RUNNING")
_RUN_NS = uuid.UUID("0f8f3b1e-0c56-5d7e-a2c5-3f1b8e6d9a44")


def run_id_for(import_name: str, folder: str, file_name: str, attempt: int) -> str:
    return str(uuid.uuid5(_RUN_NS, f"{import_name}/{folder}/{file_name}/{attempt}"))


@dataclass
class RunRecord:
    """Mutable counterpart of the ImportRun Avro record while a file is imported."""

    run_id: str
    import_name: str
    folder: str
    file_name: str
    file_size: int
    started_at: datetime
    completed_at: datetime | None = None
    rows_total: int = 0
    rows_added: int = 0
    rows_updated: int = 0
    rows_failed: int = 0
    rows_skipped: int = 0
    status: str = PROCESSING
    message: str = ""
    error_report_key: str | None = None
    workspace_id: str = ""
    import_type: str = ""
    attempt: int = 1
    rows_written: int = 0
    rows_applied: int = 0
    aux_data_added_count: int = 0
    aux_data_failed_count: int = 0
    unmapped_columns: list[str] = field(default_factory=list)

    def to_avro(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.pop("unmapped_columns")
        data["updated_at"] = datetime.now(UTC)
        return data

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in fields(cls)}
        run = cls(**{k: v for k, v in data.items() if k in names})
        if run.status == "RUNNING":
            run.status = PROCESSING
        return run

    def finish(self, status: str, message: str) -> None:
        self.status, self.message, self.completed_at = status, message, datetime.now(UTC)

    @property
    def done(self) -> bool:
        return self.status in history.END_STATES


def outcome(added: int, failed: int) -> str:
    """SUCCESSFUL when no row failed; PARTIAL_SUCCESS when some did; FAILED when all did."""
    if failed == 0:
        return SUCCESSFUL
    return PARTIAL_SUCCESS if added > 0 else FAILED


def outcome_message(status: str, unmapped: list[str]) -> str:
    message = {SUCCESSFUL: "", PARTIAL_SUCCESS: "At least 1 row failed", FAILED: "All rows failed"}[status]
    if unmapped:
        message = f"{message}; unmapped columns: {', '.join(unmapped)}".lstrip("; ")
    return message


def _stamp(record: dict[str, Any]) -> datetime:
    """When a run record was written (records of v1 have no stamp: older than any v2 record)."""
    return record.get("updated_at") or datetime.min.replace(tzinfo=UTC)


class RunStore:
    """Writes run records and reads the history of one import."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde) -> None:
        self.topic = kafka.topic("control.import-runs")
        self._kafka = kafka
        self._serde = serde
        self._encode = serde.encoder("ImportRun", topic=self.topic)
        self._producer: KafkaProducer | None = None  # made on the first write: history() only reads
        self._view: CompactedView | None = None  # follow(): the poller's live copy of run history

    def write(self, run: RunRecord) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(self._kafka, name="import-runs", **NO_LINGER)
        record = run.to_avro()
        try:
            self._producer.publish_and_wait(self.topic, run.run_id.encode(), self._encode(record))
        except KafkaFault as exc:
            if exc.kind is Kind.FATAL:
                raise
            if exc.kind is Kind.RETRIABLE:
                raise InfrastructureFault(
                    f"Kafka unavailable: writing run history failed: {exc}", kafka=True
                ) from exc
            raise S3ImportError(f"writing run {run.run_id} failed: {exc}") from exc
        if self._view is not None:
            self._view.data[run.run_id] = record  # budgets see this poller's own runs at once

    def _decode(self, value: bytes) -> dict[str, Any]:
        return self._serde.decode(value, expected="ImportRun")[1]

    def follow(self, timeout: float = 30.0) -> None:
        """Read run history to its end and keep following it (``refresh()``): row budgets and the runs
        whose outcomes are still awaited are read from it."""
        if self._view is None:
            view = CompactedView(self._kafka, self.topic, name="import-runs", apply=self._apply)
            self._view = view
            try:
                view.open(timeout).catch_up(timeout)
            except BaseException:
                self._view = None
                view.close()
                raise

    def _apply(self, msg: Message) -> None:
        """Keep the newer record of a run: this poller's own write, already in the table, is not replaced
        by an older record of the same run that the view reads after it."""
        assert self._view is not None
        data, raw = self._view.data, msg.key()
        key, value = (raw.decode() if raw else ""), msg.value()
        if value is None:
            data.pop(key, None)
            return
        record = self._decode(value)
        current = data.get(key)
        if current is None or _stamp(record) >= _stamp(current):
            data[key] = record

    def refresh(self) -> None:
        if self._view is not None:
            self._view.pump(0)

    def latest(self) -> list[dict[str, Any]]:
        """The followed history: the latest record of every run."""
        return list(self._view.data.values()) if self._view is not None else []

    def history(self, import_name: str | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Latest record of every run (of one import when named), oldest first."""
        view = CompactedView.read(
            self._kafka,
            self.topic,
            timeout,
            name="import-runs",
            decode=self._decode,
        )
        runs = [r for r in view.data.values() if import_name is None or r["import_name"] == import_name]
        return sorted(runs, key=lambda r: r["started_at"])

    def close(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            view.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

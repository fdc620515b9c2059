"""Per-file run records (``ImportRun``) in the compacted ``control.import-runs`` topic, keyed by run id.

The run id is derived from (import, folder, file, attempt), so a resumed file updates the same record and
its counts are never added twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import KafkaFault, Kind
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.producers.s3_import.exceptions import InfrastructureFault, S3ImportError
from inflow.schemas.serde import AvroSerde

NO_LINGER: dict[str, Any] = {"linger.ms": 0}  # control records are written one at a time

RUNNING = "RUNNING"
SUCCESSFUL = "SUCCESSFUL"
PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
FAILED = "FAILED"
RETRYING = "RETRYING"  # S3 or Kafka failed: the file is imported again after a wait (message says why)
WAITING = "WAITING"  # not started: its workspace is disabled (message says why)
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
    status: str = RUNNING
    message: str = ""
    error_report_key: str | None = None
    unmapped_columns: list[str] = field(default_factory=list)

    def to_avro(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.pop("unmapped_columns")
        return data

    def finish(self, status: str, message: str) -> None:
        self.status, self.message, self.completed_at = status, message, datetime.now(UTC)


def outcome(added: int, failed: int) -> str:
    """SUCCESSFUL when no row failed; PARTIAL_SUCCESS when some did; FAILED when all did."""
    if failed == 0:
        return SUCCESSFUL
    return PARTIAL_SUCCESS if added > 0 else FAILED


class RunStore:
    """Writes run records and reads the history of one import."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde) -> None:
        self.topic = kafka.topic("control.import-runs")
        self._kafka = kafka
        self._serde = serde
        self._encode = serde.encoder("ImportRun", topic=self.topic)
        self._producer: KafkaProducer | None = None  # made on the first write: history() only reads

    def write(self, run: RunRecord) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(self._kafka, name="import-runs", **NO_LINGER)
        try:
            self._producer.publish_and_wait(self.topic, run.run_id.encode(), self._encode(run.to_avro()))
        except KafkaFault as exc:
            if exc.kind is Kind.FATAL:
                raise
            if exc.kind is Kind.RETRIABLE:
                raise InfrastructureFault(
                    f"Kafka unavailable: writing run history failed: {exc}", kafka=True
                ) from exc
            raise S3ImportError(f"writing run {run.run_id} failed: {exc}") from exc

    def history(self, import_name: str | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Latest record of every run (of one import when named), oldest first."""
        view = CompactedView.read(
            self._kafka,
            self.topic,
            timeout,
            name="import-runs",
            decode=lambda value: self._serde.decode(value, expected="ImportRun")[1],
        )
        runs = [r for r in view.data.values() if import_name is None or r["import_name"] == import_name]
        return sorted(runs, key=lambda r: r["started_at"])

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

"""Per-file run records (``ImportRun``) in the compacted ``control.import-runs`` topic, keyed by run id.

The run id is derived from (import, folder, file, attempt), so a resumed file updates the same record and
its counts are never added twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.control_topics import topic_partitions, watermarks
from inflow.producers.s3_import.exceptions import S3ImportError
from inflow.schemas.serde import AvroSerde

RUNNING = "RUNNING"
SUCCESSFUL = "SUCCESSFUL"
PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
FAILED = "FAILED"
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
        self._producer = Producer(kafka.producer_config(**{"linger.ms": 0}))

    def write(self, run: RunRecord) -> None:
        errors: list[Any] = []
        self._producer.produce(
            self.topic,
            self._encode(run.to_avro()),
            run.run_id.encode(),
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        if self._producer.flush(30) or errors:
            raise S3ImportError(f"writing run {run.run_id} failed: {errors or 'timeout'}")

    def history(self, import_name: str | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Latest record of every run (of one import when named), oldest first."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self._read_all(timeout):
            if import_name is None or record["import_name"] == import_name:
                latest[record["run_id"]] = record
        return sorted(latest.values(), key=lambda r: r["started_at"])

    def _read_all(self, timeout: float) -> Iterator[dict[str, Any]]:
        consumer = Consumer(self._kafka.consumer_config("inflow-runs-reader"))
        try:
            targets = {}
            for p in topic_partitions(consumer, self.topic, timeout):
                low, high = watermarks(consumer, TopicPartition(self.topic, p), timeout)
                if high > low:
                    targets[p] = high
            consumer.assign([TopicPartition(self.topic, p, 0) for p in targets])
            deadline = datetime.now(UTC).timestamp() + timeout
            while targets and datetime.now(UTC).timestamp() < deadline:
                for msg in consumer.consume(500, timeout=0.5):
                    if msg.error() or msg.value() is None:
                        continue
                    yield self._serde.decode(msg.value() or b"", expected="ImportRun")[1]
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    if offset + 1 >= targets.get(partition, 0):
                        targets.pop(partition, None)
        finally:
            consumer.close()

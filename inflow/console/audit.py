"""The audit log: every change made through the admin API or the console, in the ``control.audit`` topic.

One ``AuditRecord`` (Avro, ``schemas/AuditRecord.avsc``) per change attempt, keyed by the changed object:
when, which admin token (name and role), the action, the target, ``ok`` / ``refused`` / ``failed`` and a
JSON detail (request parameters without secrets, or the reason). Written and acknowledged before the
answer is sent; the topic keeps a year (``config/topics.yaml``).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_consumer, topic_partitions, watermarks
from inflow.kafka.producer import KafkaProducer
from inflow.schemas.serde import AvroSerde

TOPIC = "control.audit"
RECORD = "AuditRecord"
SECRET_FIELDS = ("key", "data_api_key", "password", "secret_key", "auth", "headers", "token", "pgp")


def scrub(detail: dict[str, Any]) -> dict[str, Any]:
    """The detail with every secret-bearing field replaced by ``**********``."""
    out: dict[str, Any] = {}
    for name, value in detail.items():
        if any(s in name.lower() for s in SECRET_FIELDS):
            out[name] = "**********"
        elif isinstance(value, dict):
            out[name] = scrub(value)
        else:
            out[name] = value
    return out


class AuditLog:
    """Writes audit records (acknowledged) and reads the most recent ones."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde) -> None:
        self.kafka = kafka
        self.serde = serde
        self.topic = kafka.topic(TOPIC)
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def record(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        record = {
            "at": datetime.now(UTC),
            "actor": actor,
            "role": role,
            "action": action,
            "target": target,
            "outcome": outcome,
            "detail_json": json.dumps(scrub(detail or {}), default=str, sort_keys=True),
            "request_id": request_id,
        }
        with self._lock:
            if self._producer is None:
                options: dict[str, Any] = {"linger.ms": 0}
                self._producer = KafkaProducer(self.kafka, name="audit", **options)
            self._producer.publish_and_wait(self.topic, target.encode(), self.serde.encode(RECORD, record))
        return record

    def recent(self, limit: int = 100, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The last ``limit`` records of every partition, newest first."""
        consumer = new_consumer(self.kafka, f"{self.kafka.topic_prefix}.console-audit-reader")
        found: list[dict[str, Any]] = []
        try:
            tps = []
            ends = {}
            for p in topic_partitions(consumer, self.topic, timeout):
                low, high = watermarks(consumer, TopicPartition(self.topic, p), timeout)
                if high > low:
                    tps.append(TopicPartition(self.topic, p, max(low, high - limit)))
                    ends[p] = high
            if not tps:
                return []
            consumer.assign(tps)
            done: set[int] = set()
            deadline = datetime.now(UTC).timestamp() + timeout
            while len(done) < len(ends) and datetime.now(UTC).timestamp() < deadline:
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    value = msg.value()
                    if msg.error() is not None or value is None:
                        continue
                    found.append(self.serde.decode(value, expected=RECORD)[1])
                    if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                        done.add(msg.partition() or 0)
        finally:
            consumer.close()
        found.sort(key=lambda r: r["at"], reverse=True)
        return found[:limit]

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

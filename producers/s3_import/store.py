"""Import definitions, durable in the compacted ``control.imports`` topic (key: import name).

Every poller and CLI call reads the topic to its end to know the current definitions; secrets inside are
encrypted with the secret box, so the topic never holds them in clear.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.control_topics import topic_partitions, watermarks
from inflow.producers.s3_import.definition import (
    ImportDefinition,
    check_not_duplicate,
    from_stored,
    to_stored,
    with_created_at,
)
from inflow.producers.s3_import.exceptions import DefinitionError, S3ImportError
from inflow.schemas.serde import AvroSerde


class DefinitionStore:
    """Reads and writes import definitions; ``refresh()`` picks up changes made by other processes."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde, box: SecretBox) -> None:
        self.topic = kafka.topic("control.imports")
        self._serde = serde
        self._box = box
        self._encode = serde.encoder("ImportDefinition", topic=self.topic)
        self._consumer = Consumer(kafka.consumer_config("unused", **{"group.id": "inflow-imports-reader"}))
        self._producer = Producer(kafka.producer_config(**{"linger.ms": 0}))
        partitions = topic_partitions(self._consumer, self.topic)
        self._partitions = [TopicPartition(self.topic, p, 0) for p in partitions]
        self._consumer.assign(self._partitions)
        self.definitions: dict[str, ImportDefinition] = {}
        self.errors: dict[str, str] = {}
        self._applied: dict[int, int] = {}
        self.load()

    def load(self, timeout: float = 30.0) -> None:
        """Read every partition to its current end."""
        targets = {}
        for tp in self._partitions:
            _, high = watermarks(self._consumer, tp, timeout)
            targets[tp.partition] = high
        done = {p for p, high in targets.items() if high == 0}
        deadline = datetime.now(UTC).timestamp() + timeout
        while len(done) < len(targets):
            if datetime.now(UTC).timestamp() > deadline:
                raise S3ImportError(f"timed out reading {self.topic}")
            for msg in self._consumer.consume(500, timeout=0.5):
                self._apply(msg)
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if offset + 1 >= targets.get(partition, 0):
                    done.add(partition)

    def refresh(self) -> None:
        """Apply records written since the last read, without blocking."""
        for msg in self._consumer.consume(500, timeout=0):
            self._apply(msg)

    def _apply(self, msg: Any) -> None:
        if msg.error():
            return
        self._applied[msg.partition()] = msg.offset()
        name = msg.key().decode() if msg.key() else ""
        if msg.value() is None:
            self.definitions.pop(name, None)
            return
        _, record = self._serde.decode(msg.value(), expected="ImportDefinition")
        try:
            data = json.loads(record["definition_json"])
            data["archived"] = record["archived"]
            data["created_at"] = record["created_at"].isoformat()
            self.definitions[name] = from_stored(data, self._box)
            self.errors.pop(name, None)
        except Exception as exc:  # a definition that no longer validates is reported, never fatal
            self.errors[name] = f"{type(exc).__name__}: {exc}"

    def put(self, definition: ImportDefinition, *, replace: bool = False) -> ImportDefinition:
        """Add (or with ``replace`` update) a definition after the duplicate check; returns it as stored."""
        self.refresh()
        existing = self.definitions.get(definition.name)
        if existing is not None and not replace:
            raise DefinitionError(
                f"An import with the same import name has already been used: {definition.name}"
            )
        check_not_duplicate(definition, self.definitions.values())
        now = datetime.now(UTC)
        created = existing.created_at if existing and existing.created_at else now
        stored = with_created_at(definition.model_copy(update={"created_at": created}), now)
        self._write(stored, now)
        return stored

    def archive(self, name: str) -> ImportDefinition:
        """Stop future runs; a running file finishes (reference: a running import can't be stopped midway)."""
        self.refresh()
        existing = self.get(name)
        archived = existing.model_copy(update={"archived": True})
        self._write(archived, datetime.now(UTC))
        return archived

    def get(self, name: str) -> ImportDefinition:
        try:
            return self.definitions[name]
        except KeyError:
            raise DefinitionError(f"no import named {name!r}") from None

    def _write(self, d: ImportDefinition, now: datetime) -> None:
        data = to_stored(d, self._box)
        for key in ("archived", "created_at"):
            data.pop(key, None)
        record = {
            "name": d.name,
            "workspace_id": d.workspace_id,
            "definition_json": json.dumps(data, sort_keys=True),
            "archived": d.archived,
            "created_at": d.created_at or now,
            "updated_at": now,
        }
        delivered: list[Any] = []
        self._producer.produce(
            self.topic,
            self._encode(record),
            d.name.encode(),
            on_delivery=lambda err, m: delivered.append((err, m)),
        )
        self._producer.flush(30)
        if not delivered or delivered[0][0] is not None:
            raise S3ImportError(f"writing import {d.name} to {self.topic} failed: {delivered or 'timeout'}")
        self._read_until(delivered[0][1].partition(), delivered[0][1].offset())

    def _read_until(self, partition: int, offset: int, timeout: float = 30.0) -> None:
        """Read our own write back, so that the local view is exactly the topic's (no stale overwrite)."""
        deadline = datetime.now(UTC).timestamp() + timeout
        while self._applied.get(partition, -1) < offset:
            if datetime.now(UTC).timestamp() > deadline:
                raise S3ImportError(f"timed out reading back {self.topic} offset {offset}")
            for msg in self._consumer.consume(500, timeout=0.5):
                self._apply(msg)

    def close(self) -> None:
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError):
            pass

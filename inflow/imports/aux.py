"""Auxiliary data by key: the compacted ``ingest.aux`` topic, one record per workspace and key column value.

The importer writes each aux row to the partition :func:`aux_partition` names (CRC-32 of the record key,
like the ledger), so a lookup reads that one partition, from its beginning to its current end, and keeps
the last record of the key: nothing is held in memory between lookups, at the price of reading one
partition of the compacted topic per lookup (see docs: fine for reference tables; a large aux table wants a
materialized view downstream).
"""

from __future__ import annotations

import json
import uuid
import zlib
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_consumer, topic_partitions, watermarks
from inflow.kafka.errors import KafkaFault, Kind
from inflow.schemas.serde import AvroSerde

AUX_TOPIC = "ingest.aux"


def aux_key(workspace_id: str, key: str) -> bytes:
    return f"{workspace_id}:{key}".encode()


def aux_partition(key: bytes, partitions: int) -> int:
    """Partition of an aux record: stable, independent of the client's default partitioner."""
    return zlib.crc32(key) % partitions


def aux_item(record: dict[str, Any]) -> dict[str, Any]:
    """What a lookup answers: the key, the row's attributes, and where and when it was imported."""
    try:
        attributes = json.loads(record.get("attributes_json") or "{}")
    except ValueError:
        attributes = {}
    return {
        "key": record.get("customer_id"),
        "attributes": attributes,
        "origin": record.get("origin"),
        "received_at": record["received_at"].isoformat(),
    }


def lookup_aux(
    kafka: KafkaSettings, serde: AvroSerde, workspace_id: str, key: str, timeout: float = 30.0
) -> dict[str, Any] | None:
    """The latest aux row of ``key`` in ``workspace_id``, or None."""
    topic = kafka.topic(AUX_TOPIC)
    wanted = aux_key(workspace_id, key)
    consumer = new_consumer(
        kafka, f"{kafka.topic_prefix}.aux-lookup-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
    )
    try:
        partition = aux_partition(wanted, len(topic_partitions(consumer, topic, timeout)))
        low, high = watermarks(consumer, TopicPartition(topic, partition), timeout)
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        found: bytes | None = None
        position = low
        while position < high:
            msg = consumer.poll(timeout)
            if msg is None:
                raise KafkaFault(f"reading {topic} [{partition}] timed out", kind=Kind.RETRIABLE)
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # read to the end
                    break
                raise KafkaFault(f"reading {topic}: {error}", kind=Kind.RETRIABLE)
            position = (msg.offset() or 0) + 1
            if msg.key() == wanted:
                found = msg.value()  # None: a tombstone removed the key
        if found is None:
            return None
        return aux_item(serde.decode(found, expected="UserUpsert")[1])
    finally:
        consumer.close()

"""Kafka clients are made here and nowhere else: confluent-kafka producers, consumers and admin clients, all
built once from :class:`~inflow.config.settings.KafkaSettings`.

Every component gets the same bootstrap servers, SASL/SSL settings and durability defaults (acks=all,
idempotence) from these functions, so a change of security or timeouts reaches all of them at once.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import KafkaFault, Kind, from_exception


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """A durable producer's librdkafka settings (acks=all, idempotent, lz4, batched)."""
    return kafka.producer_config(**overrides)


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer with manual commits, starting at the earliest offset of a partition it has never read."""
    return kafka.consumer_config(group_id, **overrides)


def new_producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    """A raw librdkafka producer with the durable defaults; prefer
    :class:`~inflow.kafka.producer.KafkaProducer`."""
    return Producer(producer_config(kafka, **overrides))


def new_consumer(kafka: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    """A raw librdkafka consumer for callers that drive assignment themselves (router, watchdog, DLQ)."""
    return Consumer(consumer_config(kafka, group_id, **overrides))


def new_admin(kafka: KafkaSettings, **overrides: Any) -> AdminClient:
    return AdminClient(kafka.client_config() | overrides)


def topic_partitions(client: Any, topic: str, timeout: float = 30.0) -> list[int]:
    """Partition ids of ``topic``, waiting up to ``timeout`` for a just-created topic to show in metadata.

    ``client`` is any consumer, producer or admin client. A topic that stays missing raises a
    :class:`KafkaFault` (kind PERMANENT) that names the fix.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            md = client.list_topics(topic, timeout=min(10.0, max(timeout, 0.1))).topics.get(topic)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise from_exception(exc, f"reading metadata of {topic}") from exc
            md = None
        if md is not None and md.error is None and md.partitions:
            return sorted(md.partitions)
        if time.monotonic() > deadline:
            raise KafkaFault(
                f"topic {topic} does not exist: run `inflow topics create` to create the missing topics",
                kind=Kind.PERMANENT,
            )
        time.sleep(0.2)


def watermarks(client: Any, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """Low and high offsets of one partition, retried while a new topic's leader is being elected, and
    after a metadata refresh when the client does not know the partition yet (a topic just grown)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = client.get_watermark_offsets(tp, timeout=10, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise from_exception(exc, f"reading offsets of {tp.topic} [{tp.partition}]") from exc
            if exc.args[0].code() == KafkaError._UNKNOWN_PARTITION:
                try:
                    client.list_topics(tp.topic, timeout=5)
                except KafkaException:
                    pass
            time.sleep(0.2)

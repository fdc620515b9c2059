"""KafkaProducer against the real broker: acks, size limits, typed failures, the three ways to wait."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer

from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import DeliveryFailed, Kind, RecordTooLarge
from inflow.kafka.producer import RECORD_OVERHEAD, KafkaProducer


def _read(consumer: Consumer, count: int, timeout: float = 30.0) -> list[tuple[bytes | None, bytes | None]]:
    got: list[tuple[bytes | None, bytes | None]] = []
    loop = asyncio.new_event_loop()
    deadline = loop.time() + timeout
    while len(got) < count and loop.time() < deadline:
        for msg in consumer.consume(100, 0.5):
            if msg.error() is None:
                got.append((msg.key(), msg.value()))
    loop.close()
    return got


def test_publish_and_wait_returns_the_written_offset(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    topic = topic_factory(partitions=2)
    producer = KafkaProducer(kafka_settings, name="t")
    try:
        first = producer.publish_and_wait(topic, b"k", b"v1")
        second = producer.publish_and_wait(topic, b"k", b"v2")
    finally:
        producer.close()
    assert first.error() is None and second.partition() == first.partition()
    assert second.offset() == first.offset() + 1
    assert _read(consumer_factory([topic]), 2) == [(b"k", b"v1"), (b"k", b"v2")]


def test_record_over_the_topic_limit_is_refused_before_sending_and_the_rest_goes_through(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    topic = topic_factory(config={"max.message.bytes": "20000"})
    producer = KafkaProducer(kafka_settings, name="t")
    try:
        assert producer.limit(topic) == 20000 - RECORD_OVERHEAD
        producer.produce(topic, b"small", b"a")
        with pytest.raises(RecordTooLarge) as caught:
            producer.produce(topic, b"x" * 30_000, b"b")
        producer.produce(topic, b"small too", b"c")
        producer.flush(30)
    finally:
        producer.close()
    assert caught.value.kind is Kind.TOO_LARGE and caught.value.topic == topic
    assert caught.value.size == 30_001 and caught.value.limit == 20000 - RECORD_OVERHEAD
    assert _read(consumer_factory([topic]), 2) == [(b"a", b"small"), (b"c", b"small too")]


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_records_that_each_fit_a_small_topic_limit_are_never_refused_together(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
    compression: str,
) -> None:
    """The broker applies max.message.bytes to a whole batch: twenty incompressible records of 3 KB under
    a 4,000-byte limit, queued at once, would be refused together without batches fitted to the topic."""
    topic = topic_factory(config={"max.message.bytes": "4000"})
    settings = kafka_settings.model_copy(update={"compression": compression})
    producer = KafkaProducer(settings, name="t", batch_topics=[topic], **{"linger.ms": 50})
    values = [os.urandom(3000) for _ in range(20)]
    try:
        for n, value in enumerate(values):
            producer.produce(topic, value, b"k%d" % n)
        producer.flush(30)
    finally:
        producer.close()
    assert _read(consumer_factory([topic]), 20) == [(b"k%d" % n, v) for n, v in enumerate(values)]


def test_client_limit_applies_to_topics_with_a_larger_limit(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory()
    producer = KafkaProducer(kafka_settings, name="t", **{"message.max.bytes": 50_000})
    try:
        with pytest.raises(RecordTooLarge):
            producer.produce(topic, b"x" * 60_000)
        producer.produce(topic, b"x" * 40_000)
        producer.flush(30)
    finally:
        producer.close()


def test_on_delivered_reports_partition_and_offset(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=3)
    producer = KafkaProducer(kafka_settings, name="t")
    seen: list[tuple[int, int]] = []
    try:
        for i in range(30):
            producer.produce(
                topic,
                b"v",
                str(i % 5).encode(),
                on_delivered=lambda m: seen.append((m.partition(), m.offset())),
            )
        producer.flush(30)
    finally:
        producer.close()
    assert len(seen) == 30 and len(set(seen)) == 30


def test_unreachable_broker_fails_flush_with_a_retriable_typed_error(unique: str) -> None:
    from inflow.local.process import free_port

    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix=f"t{unique}")
    producer = KafkaProducer(dead, name="t", topic_limits=False, **{"message.timeout.ms": 1500})
    try:
        producer.produce("nowhere", b"v")
        with pytest.raises(DeliveryFailed) as caught:
            producer.flush(30)
    finally:
        producer.close(1)
    assert caught.value.kind is Kind.RETRIABLE
    assert "not acknowledged" in str(caught.value)


async def test_send_many_waits_for_every_ack_and_raises_too_large_first(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    topic = topic_factory(config={"max.message.bytes": "20000"})
    producer = KafkaProducer(kafka_settings, name="t", background=True)
    try:
        acked = await producer.send_many(((topic, str(i).encode(), b"v") for i in range(50)), 50)
        assert len(acked) == 50 and all(m.error() is None for m in acked)
        one = await producer.send(topic, b"last", b"k")
        assert one.topic() == topic
        with pytest.raises(RecordTooLarge):
            await producer.send_many([(topic, b"big", b"x" * 30_000)], 1)
    finally:
        producer.close()
    assert len(_read(consumer_factory([topic]), 51)) == 51


async def test_send_to_a_dead_broker_raises_a_typed_error(unique: str) -> None:
    from inflow.local.process import free_port

    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix=f"t{unique}")
    producer = KafkaProducer(
        dead, name="t", background=True, topic_limits=False, **{"message.timeout.ms": 1500}
    )
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await producer.send("nowhere", b"v")
    finally:
        producer.close(1)
    assert caught.value.retriable

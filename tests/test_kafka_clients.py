"""The Kafka client against the real broker: confluent-kafka (librdkafka), the only client Inflow uses."""

from __future__ import annotations

import os

import pytest

from tests.support import consume_n


def test_confluent_produce_and_consume_in_a_group(topic_factory, producer_factory, consumer_factory):
    topic = topic_factory(partitions=3)
    producer = producer_factory()
    for i in range(30):
        producer.produce(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    assert producer.flush(15) == 0
    consumer = consumer_factory([topic])
    messages = consume_n(consumer, 30)
    assert sorted(m.value() for m in messages) == sorted(f"v{i}".encode() for i in range(30))
    # Records of one key stay in order on one partition.
    by_key: dict[bytes, list[int]] = {}
    for m in messages:
        by_key.setdefault(m.key(), []).append(int(m.value()[1:]))
    assert all(seq == sorted(seq) for seq in by_key.values())
    consumer.commit(asynchronous=False)
    committed = consumer.committed(consumer.assignment(), timeout=10)
    assert sum(tp.offset for tp in committed) == 30


def test_a_producer_without_success_reports_still_raises_failures_and_refuses_success_callbacks(
    kafka_settings, topic_factory
):
    """``successes=False`` (the worker's outputs): no callback per delivered record, a failed one still
    fails the flush, and a caller that wants to hear of a success is told it never would."""
    from inflow.kafka.errors import KafkaFault
    from inflow.kafka.producer import KafkaProducer

    topic = topic_factory(partitions=1, config={"max.message.bytes": "2000"})
    # The client does not look the topic's limit up: the broker refuses the record at delivery.
    producer = KafkaProducer(kafka_settings, name="quiet", successes=False, topic_limits=False)
    try:
        with pytest.raises(ValueError, match="reports no successful deliveries"):
            producer.produce(topic, b"v", on_delivered=lambda msg: None)
        producer.produce(topic, b"fits")
        producer.flush(30)  # delivered: no report, no error
        producer.produce(topic, os.urandom(5000))  # incompressible: over the limit after compression too
        with pytest.raises(KafkaFault):
            producer.flush(30)
    finally:
        producer.close()

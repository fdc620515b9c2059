"""The Kafka client against the real broker: confluent-kafka (librdkafka), the only client Inflow uses."""

from __future__ import annotations

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

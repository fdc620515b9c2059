"""Avro records produced and consumed through the real broker with the serde, keyed as the catalogue says."""

from __future__ import annotations

from datetime import UTC, datetime

from inflow.schemas.serde import AvroSerde
from tests.support import consume_n


def test_event_records_round_trip_through_kafka(catalogue_topics, producer_factory, consumer_factory):
    serde = AvroSerde()
    topic = catalogue_topics.topic("ingest.records")
    now = datetime.now(UTC).replace(microsecond=0)
    sent = []
    producer = producer_factory()
    for i in range(20):
        record = {
            "event_uuid": f"uuid-{i}",
            "workspace_id": "WS1",
            "request_id": "req-1",
            "received_at": now,
            "source": "api",
            "client_ip": "203.0.113.195",
            "customer_id": f"user-{i % 4}",
            "anonymous_id": None,
            "user_identifiers": {"email": f"u{i % 4}@example.com"},
            "device_id": None,
            "action": "Added To Cart",
            "attributes_json": '{"price": 10.5}',
            "platform": "web",
            "app_version": None,
            "user_time": now,
            "current_time": None,
            "user_timezone_offset": 19800,
            "origin": None,
        }
        sent.append(record)
        producer.produce(topic, key=f"WS1|user-{i % 4}".encode(), value=serde.encode("EventRecord", record))
    assert producer.flush(15) == 0
    messages = consume_n(consumer_factory([topic]), 20)
    decoded = [serde.decode(m.value(), expected="EventRecord") for m in messages]
    assert {name for name, _ in decoded} == {"EventRecord"}
    got = {r["event_uuid"]: r for _, r in decoded}
    for record in sent:
        assert {k: got[record["event_uuid"]][k] for k in record} == record
    partitions_by_key: dict[bytes, set[int]] = {}
    for m in messages:
        partitions_by_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions_by_key.values())

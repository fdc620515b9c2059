"""Parked batches over a topic's size limit: split and still delivered, or dead-lettered with their reason;
either way the sink keeps advancing over the events topic."""

from __future__ import annotations

import json
import secrets

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from inflow.config.settings import KafkaSettings
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import dlq
from inflow.sinks.streams.cli import group_progress
from tests.streams.conftest import enriched, stream
from tests.support import consume_until_quiet, wait_for


def limit_topic(admin: AdminClient, topic: str, max_bytes: int) -> None:
    """Lower the topic's size limit and wait until the broker reports it (the change propagates)."""
    entry = ConfigEntry("max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)

    def applied() -> bool:
        [future] = admin.describe_configs([ConfigResource("topic", topic)]).values()
        return future.result(timeout=10)["max.message.bytes"].value == str(max_bytes)

    wait_for(applied, 30, interval=0.2, what=f"max.message.bytes of {topic}")


def caught_up(kafka: KafkaSettings, stream_id: str) -> bool:
    """The stream's group committed every record of the events topic."""
    progress = group_progress(kafka, f"{kafka.topic_prefix}.streams.{stream_id}", kafka.topic("events"))
    return bool(progress) and all(p["lag"] == 0 for p in progress.values() if p["end"] > 0)


def big(uid: str, size: int) -> dict:
    """An event with ``size`` characters of random text: it does not compress below the limits either."""
    return enriched(uid=uid, event_attributes_json=json.dumps({"note": secrets.token_urlsafe(size)[:size]}))


def test_a_batch_too_large_for_its_retry_topic_is_parked_in_parts_and_delivered(
    writer, endpoint_factory, sink_factory, catalogue_topics, admin, consumer_factory
):
    limit = 20_000
    limit_topic(admin, catalogue_topics.topic("streams.retry.30s"), limit)
    ep = endpoint_factory(statuses=[500])
    sent = writer.write([big(f"u-{i}", 1000) for i in range(60)])
    sink_factory(stream(ep.url, batch_size=60, linger_s=0.5, retry_delays_s=[0.5, 0.5, 0.5]))
    wait_for(lambda: ep.delivered_uuids() == set(sent), 90, what="every event delivered after the split")
    first, *later = ep.snapshot()
    assert first.status == 500 and len(first.event_uuids) == 60
    assert all(r.status == 200 for r in later) and len(later) >= 4
    assert all(len(r.event_uuids) < 60 for r in later)
    assert sorted(u for r in later for u in r.event_uuids) == sorted(sent)  # each event once
    ids = [r.body["moe_request_id"] for r in later]
    assert len(set(ids)) == len(ids) and first.body["moe_request_id"] not in ids
    parked = consume_until_quiet(consumer_factory([catalogue_topics.topic("streams.retry.30s")]))
    assert len(parked) == len(later) and all(len(m.value()) < limit for m in parked)
    wait_for(lambda: caught_up(catalogue_topics, "s1"), 60, what="the events topic committed")


def test_one_event_too_large_for_the_dlq_is_dead_lettered_without_its_body_and_the_rest_flows(
    writer, endpoint_factory, sink_factory, catalogue_topics, admin
):
    limit_topic(admin, catalogue_topics.topic("streams.dlq"), 4_000)
    ep = endpoint_factory(decide=lambda index, body: 500 if len(json.dumps(body)) > 5_000 else 200)
    [huge] = writer.write([big("huge", 6_000)])
    small = writer.write([enriched(uid=f"s-{i}") for i in range(3)])
    sink_factory(stream(ep.url, batch_size=1, linger_s=0.1, retry_delays_s=[]))
    serde = AvroSerde()
    [dead] = wait_for(lambda: dlq.read_dlq(catalogue_topics, serde), 60, interval=0.5, what="a DLQ batch")
    wait_for(lambda: ep.delivered_uuids() == set(small), 60, what="the small events")
    record = dead.record
    assert record["events_json"] == "[]" and record["event_uuids"] == [huge]
    assert record["attempts"][0]["status"] == 500
    reason = record["attempts"][-1]["error"]
    assert "not parked" in reason and "1 events" in reason and "limit" in reason
    assert catalogue_topics.topic("streams.dlq") in reason
    assert dlq.redrive(catalogue_topics, serde, [dead]) == []  # nothing left to resend
    wait_for(lambda: caught_up(catalogue_topics, "s1"), 60, what="the events topic committed")

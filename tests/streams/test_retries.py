"""Failed batches: retry topics at the configured intervals, DLQ with every attempt, redrive, isolation."""

from __future__ import annotations

from confluent_kafka import Consumer
from prometheus_client import REGISTRY

from inflow.local.process import free_port
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import dlq
from tests.streams.conftest import enriched, stream
from tests.support import consume_n, wait_for


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"inflow_streams_{name}", labels) or 0.0


def read_topic(consumer: Consumer, n: int) -> list[dict]:
    serde = AvroSerde()
    return [serde.decode(m.value(), "StreamBatch")[1] for m in consume_n(consumer, n, timeout=60)]


def test_500_then_200_is_delivered_on_retry_with_the_same_request_id(
    writer, endpoint_factory, sink_factory, consumer_factory, catalogue_topics
):
    ep = endpoint_factory(statuses=[500])
    sent = writer.write([enriched(uid=f"u-{i}") for i in range(5)])
    before = {
        name: metric(name, stream="r500") for name in ("delivered_events_total", "delivered_requests_total")
    }
    retried = metric("retried_batches_total", stream="r500", tier="streams.retry.30s")
    sink_factory(stream(ep.url, id="r500", retry_delays_s=[1.5, 1, 1], linger_s=1.0))
    wait_for(lambda: ep.delivered_uuids() == set(sent), 60, what="delivery on retry")
    assert metric("retried_batches_total", stream="r500", tier="streams.retry.30s") == retried + 1
    assert metric("delivered_events_total", stream="r500") == before["delivered_events_total"] + 5
    assert metric("delivered_requests_total", stream="r500") == before["delivered_requests_total"] + 1
    first, second = ep.snapshot()
    assert (first.status, second.status) == (500, 200)
    assert first.body == second.body  # same events, same moe_request_id
    assert second.at - first.at >= 1.4  # not before the configured 1.5 s
    parked = read_topic(consumer_factory([catalogue_topics.topic("streams.retry.30s")]), 1)[0]
    assert parked["moe_request_id"] == first.body["moe_request_id"]
    assert parked["attempt"] == 1 and parked["attempts"][0]["status"] == 500
    assert sorted(parked["event_uuids"]) == sorted(sent)


def test_always_failing_endpoint_retries_three_times_then_dlq_then_redrive(
    writer, endpoint_factory, sink_factory, catalogue_topics
):
    ep = endpoint_factory(default=503)
    sent = writer.write([enriched(uid=f"u-{i}") for i in range(3)])
    sink_factory(stream(ep.url, retry_delays_s=[1, 2, 3]))
    serde = AvroSerde()
    dead = wait_for(lambda: dlq.read_dlq(catalogue_topics, serde), 90, interval=0.5, what="a DLQ batch")
    assert metric("dead_lettered_batches_total", stream="s1") >= 1
    requests = ep.snapshot()
    assert [r.status for r in requests] == [503, 503, 503, 503]
    assert len({r.body["moe_request_id"] for r in requests}) == 1
    gaps = [b.at - a.at for a, b in zip(requests, requests[1:], strict=False)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 2.9
    [batch] = dead
    record = batch.record
    assert record["attempt"] == 4
    assert [a["status"] for a in record["attempts"]] == [503, 503, 503, 503]
    assert all(a["error"] == "HTTP 503 Service Unavailable" for a in record["attempts"])
    prefix = catalogue_topics.topic_prefix
    assert [a["topic"] for a in record["attempts"]] == [
        f"{prefix}.events",
        f"{prefix}.streams.retry.30s",
        f"{prefix}.streams.retry.60s",
        f"{prefix}.streams.retry.120s",
    ]
    assert sorted(record["event_uuids"]) == sorted(sent)
    # The endpoint recovers; redrive resends the same batch through the running sink.
    ep.default = 200
    assert dlq.redrive(catalogue_topics, serde, dead) == dead
    wait_for(lambda: ep.delivered_uuids() == set(sent), 60, what="redriven delivery")
    assert ep.snapshot()[-1].body["moe_request_id"] == requests[0].body["moe_request_id"]


def test_timeouts_count_as_failures_with_their_reason(
    writer, endpoint_factory, sink_factory, catalogue_topics
):
    ep = endpoint_factory(delay_s=3.0)
    writer.write([enriched()])
    sink_factory(stream(ep.url, request_timeout_s=0.5, retry_delays_s=[0.5]))
    serde = AvroSerde()
    [batch] = wait_for(lambda: dlq.read_dlq(catalogue_topics, serde), 90, interval=0.5, what="a DLQ batch")
    attempts = batch.record["attempts"]
    assert [a["status"] for a in attempts] == [None, None]
    assert all(a["error"] == "timeout after 0.5s" for a in attempts)


def test_a_dead_endpoint_does_not_hold_back_another_stream(writer, endpoint_factory, sink_factory):
    good = endpoint_factory()
    dead_url = f"http://127.0.0.1:{free_port()}/nothing-listens"
    sent = writer.write([enriched(uid=f"u-{i}") for i in range(300)])
    sink_factory(stream(good.url, id="good"), stream(dead_url, id="dead", retry_delays_s=[30, 60, 120]))
    wait_for(lambda: good.delivered_uuids() == set(sent), 60, what="the healthy stream's delivery")
    sent2 = writer.write([enriched(uid=f"v-{i}") for i in range(50)])
    wait_for(lambda: good.delivered_uuids() == set(sent) | set(sent2), 60, what="later events")


def test_an_unreadable_record_goes_to_the_dlq_and_the_rest_flows(
    writer, endpoint_factory, sink_factory, catalogue_topics
):
    ep = endpoint_factory()
    before = writer.write([enriched()])
    writer.write_raw(b"\x00not avro at all")
    after = writer.write([enriched()])
    sink_factory(stream(ep.url))
    wait_for(lambda: ep.delivered_uuids() == set(before + after), 60, what="good events")
    [batch] = wait_for(lambda: dlq.read_dlq(catalogue_topics, AvroSerde()), 60, what="the bad record parked")
    assert batch.record["event_uuids"] == []
    assert "invalid record" in batch.record["attempts"][0]["error"]
    assert f"{catalogue_topics.topic('events')}[" in batch.record["attempts"][0]["error"]

"""Hostile endpoints and definitions, and infrastructure faults, against the real sink, broker and local
HTTP endpoints: redirects are not followed, refused addresses are never connected to, stored values with
CR/LF hold their stream, a schema registry outage is retried (not dead-lettered), a disabled workspace's
streams are held until it is enabled again. Traffic only ever goes to 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import REGISTRY

from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import dlq
from inflow.sinks.streams.control import DEFINITIONS_TOPIC, definition_record, publish
from inflow.sinks.streams.settings import SinkSettings
from inflow.workspaces.registry import Workspace, WorkspaceRegistry
from tests.streams.conftest import enriched, stream
from tests.streams.registry_server import LocalRegistry
from tests.support import wait_for


def store(kafka, stream_id: str, data: dict[str, Any]) -> None:
    """A definition record as it is in the control topic (``data`` written as it is, plain or sealed)."""
    record = definition_record(stream_id, data)
    publish(kafka, DEFINITIONS_TOPIC, stream_id, AvroSerde().encode("StreamDefinition", record))


def nothing_arrives(endpoint, seconds: float = 1.5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert endpoint.snapshot() == []
        time.sleep(0.1)


def test_a_redirect_is_a_failed_attempt_and_its_target_receives_nothing(
    writer, endpoint_factory, sink_factory, catalogue_topics, caplog
):
    caplog.set_level(logging.INFO, logger="inflow.sinks.streams")
    elsewhere = endpoint_factory()
    redirecting = endpoint_factory(default=307, redirect_to=elsewhere.url + "?token=target-secret")
    definition = stream(
        redirecting.url + "?token=url-secret-1",
        retry_delays_s=[0.3, 0.3],
        auth={"type": "header", "header_name": "X-Api-Key", "header_value": "key-secret-1"},
    )
    sent = writer.write([enriched() for _ in range(2)])
    sink_factory(definition)
    [batch] = wait_for(
        lambda: dlq.read_dlq(catalogue_topics, AvroSerde()), 90, interval=0.5, what="the batch in the DLQ"
    )
    assert elsewhere.snapshot() == []  # neither a GET nor the credentials went to the other origin
    requests = redirecting.snapshot()
    assert [r.status for r in requests] == [307, 307, 307]
    assert all(r.body["events"] and r.headers["X-Api-Key"] == "key-secret-1" for r in requests)
    record = batch.record
    assert sorted(record["event_uuids"]) == sorted(sent)
    prefix = catalogue_topics.topic_prefix
    assert [a["topic"] for a in record["attempts"]] == [
        f"{prefix}.events",
        f"{prefix}.streams.retry.30s",
        f"{prefix}.streams.retry.60s",
    ]
    for attempt in record["attempts"]:
        assert attempt["status"] == 307
        assert attempt["error"] == (
            f"HTTP 307 Temporary Redirect: redirect to {elsewhere.url}?token=*** not followed"
        )
    text = json.dumps(record, default=str) + caplog.text
    for secret in ("target-secret", "url-secret-1", "key-secret-1"):
        assert secret not in text
    assert f"{redirecting.url}?token=***" in caplog.text  # the endpoint is logged with its token masked


def test_a_denied_literal_address_holds_the_stream_and_nothing_is_sent(
    writer, endpoint_factory, sink_factory
):
    ep = endpoint_factory()
    writer.write([enriched()])
    sink = sink_factory(stream(ep.url), settings=SinkSettings(deny_networks="127.0.0.0/8"))
    reason = wait_for(lambda: sink.sink.held.get("s1"), 30, what="the stream held")
    assert reason == "stream s1: address 127.0.0.1 is refused (INFLOW_SINK_DENY_NETWORKS: 127.0.0.0/8)"
    assert "s1" not in sink.sink.running
    nothing_arrives(ep)


def test_a_host_name_resolving_to_a_denied_address_is_refused_before_connecting(
    writer, endpoint_factory, sink_factory, catalogue_topics
):
    ep = endpoint_factory()
    url = f"http://localhost:{ep.port}/ingest"
    sent = writer.write([enriched()])
    deny = SinkSettings(deny_networks="127.0.0.0/8,::1")
    sink_factory(stream(url, retry_delays_s=[0.3]), settings=deny)
    [batch] = wait_for(
        lambda: dlq.read_dlq(catalogue_topics, AvroSerde()), 90, interval=0.5, what="the batch in the DLQ"
    )
    assert ep.snapshot() == []
    assert sorted(batch.record["event_uuids"]) == sorted(sent)
    for attempt in batch.record["attempts"]:
        assert attempt["status"] is None
        assert attempt["error"].startswith("refused: localhost resolves only to refused addresses")
        assert "127.0.0.1 is refused (INFLOW_SINK_DENY_NETWORKS: 127.0.0.0/8)" in attempt["error"]


def test_with_the_default_settings_the_same_host_name_receives_the_batch(
    writer, endpoint_factory, sink_factory
):
    ep = endpoint_factory()
    sent = writer.write([enriched()])
    sink_factory(stream(f"http://localhost:{ep.port}/ingest"))
    wait_for(lambda: ep.delivered_uuids() == set(sent), 60, what="delivery through localhost")


def test_a_stored_definition_with_cr_lf_holds_only_that_stream(
    writer, endpoint_factory, sink_factory, catalogue_topics, box
):
    bad_ep, sealed_ep, good_ep = endpoint_factory(), endpoint_factory(), endpoint_factory()
    # Written before such values were refused: one in clear, one encrypted.
    store(
        catalogue_topics,
        "crlf",
        {"id": "crlf", "url": bad_ep.url, "linger_s": 0.2, "headers": {"X-A": "v\r\nX-Injected: 1"}},
    )
    sealed_auth = {
        "type": "header",
        "header_name": "X-Api-Key",
        "header_value": box.encrypt("k\r\nX-Injected: 1"),
    }
    store(
        catalogue_topics,
        "sealed",
        {"id": "sealed", "url": box.encrypt(sealed_ep.url), "linger_s": 0.2, "auth": sealed_auth},
    )
    store(
        catalogue_topics,
        "good",
        {"id": "good", "url": good_ep.url, "linger_s": 0.2, "start_at": "2000-01-01T00:00:00Z"},
    )
    sink = sink_factory()
    sent = writer.write([enriched() for _ in range(3)])
    wait_for(lambda: good_ep.delivered_uuids() == set(sent), 60, what="the healthy stream's delivery")
    held = wait_for(lambda: len(sink.sink.held) == 2 and sink.sink.held, 30, what="both streams held")
    assert "headers: " in held["crlf"] and "header 'X-A' contains CR, LF" in held["crlf"]
    assert "auth" in held["sealed"] and "contains CR, LF" in held["sealed"]
    assert "Injected" not in json.dumps(held)
    nothing_arrives(bad_ep, 0.5)
    assert sealed_ep.snapshot() == []


def test_a_schema_registry_outage_is_retried_and_an_invalid_record_still_goes_to_the_dlq(
    writer, endpoint_factory, sink_factory, catalogue_topics
):
    registry = LocalRegistry()  # not answering yet
    ep = endpoint_factory()
    try:
        sink = sink_factory(stream(ep.url), serde=AvroSerde(registry.url))
        reason = wait_for(lambda: sink.sink.held.get("s1"), 30, what="the stream held")
        assert reason.startswith("schema registry:") and "unreachable" in reason
        registry.start()
        wait_for(lambda: "s1" in sink.sink.running and not sink.sink.held, 30, what="the stream started")
        encode = AvroSerde(registry.url).encoder("EnrichedEvent")  # registered while the registry answers
        registry.stop()
        before = REGISTRY.get_sample_value("inflow_streams_registry_retries_total", {"stream": "s1"}) or 0
        events = [enriched() for _ in range(3)]
        for event in events:
            writer.producer.produce(catalogue_topics.topic("events"), key=b"W1:u-1", value=encode(event))
        writer.producer.flush(30)
        writer.write_raw(b"\x07not avro at all")
        serde = sink.sink.serde  # knows the StreamBatch schema id without asking the registry
        wait_for(
            lambda: (
                (REGISTRY.get_sample_value("inflow_streams_registry_retries_total", {"stream": "s1"}) or 0)
                >= before + 2
            ),
            60,
            what="reads put off while the registry is down",
        )
        assert ep.snapshot() == []
        # The record that is really invalid is dead-lettered even during the outage; the others are not.
        [invalid] = wait_for(lambda: dlq.read_dlq(catalogue_topics, serde), 60, what="the invalid record")
        assert "unknown Avro framing" in invalid.record["attempts"][0]["error"]
        assert invalid.record["event_uuids"] == []
        registry.start()
        wait_for(lambda: ep.delivered_uuids() == {e["event_uuid"] for e in events}, 90, what="delivery after")
        # A schema id the registry answers it does not know is a really invalid record: dead-lettered.
        writer.write_raw(b"\x00" + (999).to_bytes(4, "big") + b"\x02")
        dead = wait_for(
            lambda: len(found := dlq.read_dlq(catalogue_topics, serde)) == 2 and found, 60, what="the DLQ"
        )
        unknown = next(b for b in dead if b.position != invalid.position)
        assert "invalid record" in unknown.record["attempts"][0]["error"]
        assert "999" in unknown.record["attempts"][0]["error"]
        assert all(b.record["event_uuids"] == [] for b in dead)
    finally:
        registry.stop()


def test_a_disabled_workspace_holds_its_streams_until_enabled_and_nothing_is_lost(
    writer, endpoint_factory, sink_factory, catalogue_topics
):
    own, every = endpoint_factory(), endpoint_factory()
    workspaces = WorkspaceRegistry(catalogue_topics, AvroSerde())
    workspaces.publish(Workspace(id="W1", key_hash="h", disabled=True))
    sink = sink_factory(stream(own.url, id="w1", workspace_id="W1"), stream(every.url, id="all"))
    reason = wait_for(lambda: sink.sink.held.get("w1"), 30, what="the workspace's stream held")
    assert reason == "workspace W1 disabled"
    sent = writer.write([enriched() for _ in range(4)])
    wait_for(lambda: every.delivered_uuids() == set(sent), 60, what="the other stream's delivery")
    nothing_arrives(own, 1.0)
    workspaces.publish(Workspace(id="W1", key_hash="h", disabled=False))
    wait_for(lambda: own.delivered_uuids() == set(sent), 60, what="delivery once enabled again")
    assert "w1" not in sink.sink.held

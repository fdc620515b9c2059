"""A worker reads packs (one request's records of one user in one message) in order, record by record."""

from __future__ import annotations

import json
from pathlib import Path

from inflow.schemas.packs import PackEncoder
from tests.processors import records as r
from tests.processors.workers import SERDE, WorkerProcess, output_reader, worker_env
from tests.support import wait_for


def test_a_pack_is_applied_in_order_its_bad_record_rejected_alone_and_single_records_still_read(
    worker_topics, producer_factory, tmp_path: Path
):
    kafka = worker_topics
    env = worker_env(kafka, tmp_path / "home", [{"id": "W", "identifiers": ["customer_id"]}])
    worker = WorkerProcess("packs", env, tmp_path / "data", tmp_path / "packs.log").start()
    out = output_reader(kafka)
    producer = producer_factory()
    topic = kafka.topic("ingest.records")
    first = r.event("W", "alice", "Viewed", at=2)
    items = [
        SERDE.encode("UserUpsert", r.user("W", "alice", at=1, attributes={"name": "Alice"})),
        SERDE.encode("EventRecord", first),
        b"\xc3\x01not a record",
        SERDE.encode("EventRecord", first),  # the same event_uuid again: an upstream duplicate
        SERDE.encode("UserUpsert", r.user("W", "alice", at=3, attributes={"name": "Alicia"})),
        SERDE.encode("EventRecord", r.event("W", "alice", "Bought", at=4)),
    ]
    single = r.event("W", "alice", "Left", at=5)
    try:
        producer.produce(topic, key=b"W:alice", value=PackEncoder(SERDE, topic).encode(items))
        producer.produce(topic, key=b"W:alice", value=SERDE.encode("EventRecord", single))
        assert producer.flush(30) == 0
        wait_for(
            out.until(lambda o: len(o.events) >= 3 and o.rejected, [worker]), 120, what="the pack's events"
        )
        out.poll()
        names = [(e["event_code"], json.loads(e["user_attributes_json"])["u_n"]) for e in out.events]
        assert names == [("Viewed", "Alice"), ("Bought", "Alicia"), ("Left", "Alicia")]
        [rejected] = out.rejected
        assert rejected["reason"].startswith("record 2 of the pack: ")
        assert json.loads(rejected["record_json"])["value_hex"] == items[2].hex()
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0, worker.tail()


def test_an_event_of_a_run_too_large_to_publish_is_rejected_alone(
    worker_topics, producer_factory, tmp_path: Path
):
    """The events after the first of a pack take the short path (LaneProcessor.next_event); one whose
    enriched event would pass the events topic's limit (a 400 KB profile beside 700 KB of its own
    attributes) is rejected with the reason, and the events before and after it come out."""
    kafka = worker_topics
    env = worker_env(kafka, tmp_path / "home", [{"id": "W", "identifiers": ["customer_id"]}])
    env["INFLOW_WORKER_MAX_PROFILE_BYTES"] = "2000000"
    worker = WorkerProcess("big-event", env, tmp_path / "data", tmp_path / "big.log").start()
    out = output_reader(kafka)
    producer = producer_factory()
    topic = kafka.topic("ingest.records")
    heavy = r.user("W", "bea", at=1, attributes={"blob": "u" * 400_000})
    small = [r.event("W", "bea", f"Small{i}", at=2 + i) for i in range(3)]
    big = r.event("W", "bea", "Huge", at=3, attributes={"payload": "e" * 700_000})
    items = [SERDE.encode("EventRecord", e) for e in (small[0], small[1], big, small[2])]
    try:
        producer.produce(topic, key=b"W:bea", value=SERDE.encode("UserUpsert", heavy))
        producer.produce(topic, key=b"W:bea", value=PackEncoder(SERDE, topic).encode(items))
        assert producer.flush(30) == 0
        try:
            wait_for(
                out.until(lambda o: len(o.events) >= 3 and o.rejected, [worker]), 120, what="the small events"
            )
        except AssertionError as exc:  # what the worker did, and what came out, for the report
            seen = f"{len(out.events)} events, {len(out.rejected)} rejected, {len(out.profiles)} profiles"
            raise AssertionError(f"{exc}; read {seen}; the worker's log:\n{worker.tail(80)}") from exc
        out.poll()
        assert [e["event_code"] for e in out.events] == ["Small0", "Small1", "Small2"]
        [rejected] = out.rejected
        assert rejected["event_uuid"] == big["event_uuid"]
        assert "EnrichedEvent it produces would be too large" in rejected["reason"], rejected["reason"]
        worker.assert_running()
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0, worker.tail()

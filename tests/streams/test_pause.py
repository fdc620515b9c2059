"""Pause and resume: paused means not sent; skip mode (MoEngage) drops what arrives during the pause,
resume mode sends it afterwards."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.control import STATE_TOPIC, publish, state_record
from tests.streams.conftest import enriched, stream
from tests.support import wait_for


def set_state(kafka, stream_id: str, paused: bool, mode: str, paused_at: datetime | None) -> None:
    record = state_record(stream_id, paused, mode, paused_at)
    publish(kafka, STATE_TOPIC, stream_id, AvroSerde().encode("StreamState", record))


def pause_and_prove_nothing_is_sent(
    kafka, writer, ep, sink, mode: str
) -> tuple[list[str], list[str], datetime]:
    before = writer.write([enriched(uid="a")])
    wait_for(lambda: ep.delivered_uuids() == set(before), 60, what="delivery before the pause")
    paused_at = datetime.now(UTC)
    set_state(kafka, "s1", True, mode, paused_at)
    # The sink sees the pause through the control topic; a marker stream proves it has read that far.
    wait_for(lambda: sink.sink.view.states.get("s1", {}).get("paused"), 30, what="pause seen by the sink")
    time.sleep(0.05)  # event timestamps must be after paused_at (ms resolution)
    during = writer.write([enriched(uid=f"p-{i}") for i in range(20)])
    # Paused means not sent: give the sink several linger periods, then check nothing went out.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert ep.delivered_uuids() == set(before)
        time.sleep(0.1)
    return before, during, paused_at


def test_pause_in_skip_mode_drops_events_that_arrived_during_the_pause(
    writer, endpoint_factory, sink_factory, catalogue_topics
):
    ep = endpoint_factory()
    sink = sink_factory(stream(ep.url))
    before, during, paused_at = pause_and_prove_nothing_is_sent(catalogue_topics, writer, ep, sink, "skip")
    set_state(catalogue_topics, "s1", False, "skip", paused_at)
    wait_for(lambda: sink.sink.view.states["s1"]["paused"] is False, 30, what="resume seen")
    time.sleep(0.05)
    after = writer.write([enriched(uid="z")])
    wait_for(lambda: set(after) <= ep.delivered_uuids(), 60, what="delivery after the resume")
    assert ep.delivered_uuids() == set(before) | set(after)
    assert not set(during) & ep.delivered_uuids()


def test_pause_in_resume_mode_sends_the_paused_events_afterwards(
    writer, endpoint_factory, sink_factory, catalogue_topics
):
    ep = endpoint_factory()
    sink = sink_factory(stream(ep.url))
    before, during, paused_at = pause_and_prove_nothing_is_sent(catalogue_topics, writer, ep, sink, "resume")
    set_state(catalogue_topics, "s1", False, "resume", paused_at)
    wait_for(lambda: ep.delivered_uuids() == set(before) | set(during), 60, what="paused events after resume")


def test_a_stream_paused_in_its_definition_sends_nothing(writer, endpoint_factory, sink_factory):
    ep = endpoint_factory()
    other = endpoint_factory()
    sent = writer.write([enriched()])
    sink_factory(stream(ep.url, paused=True), stream(other.url, id="other"))
    wait_for(lambda: other.delivered_uuids() == set(sent), 60, what="the other stream")
    assert ep.snapshot() == []

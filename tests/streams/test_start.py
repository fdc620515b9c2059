"""A new stream starts at "now" (MoEngage §5.2: no historical export); ``--replay-from`` replays from a time.

Driven from outside: ``inflow streams add`` against a running sink, events written to the events topic,
what reaches a real HTTP endpoint, and the stream's position as ``inflow streams show`` reports it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from inflow.config.secrets import SecretBox
from inflow.sinks.streams.definitions import starting
from inflow.sinks.streams.exceptions import StreamDefinitionError
from inflow.sinks.streams.operations import parse_replay_from
from tests.streams.conftest import SinkThread, enriched, invoke, stream
from tests.support import wait_for


def spread(n: int, tag: str) -> list[dict]:
    """Events of n users: their keys fall on every partition of the events topic."""
    return [enriched(uid=f"{tag}-{i}") for i in range(n)]


def progress(env, stream_id: str) -> dict:
    out = invoke(env, "streams", "show", stream_id).output
    return json.loads(out)["progress"]


def positioned(env, stream_id: str) -> dict | None:
    """The stream's committed offsets once every partition has one (its start is recorded), else None."""
    parts = progress(env, stream_id)
    return parts if parts and all(p["committed"] is not None for p in parts.values()) else None


def test_a_new_stream_skips_the_retained_events_and_delivers_the_first_new_one(
    cli_env, catalogue_topics, writer, endpoint_factory
):
    ep = endpoint_factory()
    old = set(writer.write(spread(100, "old")))
    runner = SinkThread(catalogue_topics, [], SecretBox(cli_env["INFLOW_SECRET_KEY"].encode())).start()
    try:
        invoke(cli_env, "streams", "add", "fresh", "--url", ep.url, "--linger", "0.2")
        parts = wait_for(lambda: positioned(cli_env, "fresh"), 60, interval=0.5, what="start recorded")
        assert sum(p["committed"] for p in parts.values()) == 100  # at the end of the history
        assert all(p["lag"] == 0 for p in parts.values())
        new = set(writer.write(spread(12, "new")))
        wait_for(lambda: new <= ep.delivered_uuids(), 60, what="the new events delivered")
        assert not ep.delivered_uuids() & old
    finally:
        runner.stop()


def test_a_stream_keeps_its_start_across_a_sink_restart(catalogue_topics, writer, endpoint_factory, box):
    """A YAML stream (no recorded time) starts at the end when it first runs; that position is committed
    at once, so events written while the sink is down are sent after the restart, the history never."""
    ep = endpoint_factory()
    old = set(writer.write(spread(30, "old")))
    definition = stream(ep.url, id="yaml-s", start_at=None)
    first = SinkThread(catalogue_topics, [definition], box).start()
    try:
        wait_for(lambda: first.sink.running.get("yaml-s"), 30, what="the stream started")
        from inflow.sinks.streams.cli import group_progress

        group = f"{catalogue_topics.topic_prefix}.streams.yaml-s"
        topic = catalogue_topics.topic("events")
        wait_for(
            lambda: all(
                p["committed"] is not None for p in group_progress(catalogue_topics, group, topic).values()
            ),
            60,
            interval=0.5,
            what="the start committed",
        )
    finally:
        first.stop()
    while_down = set(writer.write(spread(12, "down")))
    second = SinkThread(catalogue_topics, [definition], box).start()
    try:
        wait_for(lambda: while_down <= ep.delivered_uuids(), 60, what="events written while down")
        assert not ep.delivered_uuids() & old
    finally:
        second.stop()


def test_replay_from_sends_the_events_since_that_time(cli_env, catalogue_topics, writer, endpoint_factory):
    ep = endpoint_factory()
    before = set(writer.write(spread(20, "before")))
    since = datetime.now(UTC) + timedelta(milliseconds=1)
    wait_for(lambda: datetime.now(UTC) > since, 5, interval=0.001, what="the clock past the replay time")
    after = set(writer.write(spread(20, "after")))
    runner = SinkThread(catalogue_topics, [], SecretBox(cli_env["INFLOW_SECRET_KEY"].encode())).start()
    try:
        invoke(
            cli_env,
            "streams",
            "add",
            "replay",
            "--url",
            ep.url,
            "--linger",
            "0.2",
            "--replay-from",
            since.isoformat(),
        )
        wait_for(lambda: after <= ep.delivered_uuids(), 60, what="events since the replay time")
        live = set(writer.write(spread(6, "live")))
        wait_for(lambda: live <= ep.delivered_uuids(), 60, what="new events")
        assert not ep.delivered_uuids() & before
        shown = json.loads(invoke(cli_env, "streams", "show", "replay").output)
        assert datetime.fromisoformat(shown["definition"]["start_at"]) == since
    finally:
        runner.stop()


def test_a_removed_and_added_again_stream_starts_afresh(cli_env, catalogue_topics, writer, endpoint_factory):
    ep = endpoint_factory()
    runner = SinkThread(catalogue_topics, [], SecretBox(cli_env["INFLOW_SECRET_KEY"].encode())).start()
    try:
        invoke(cli_env, "streams", "add", "again", "--url", ep.url, "--linger", "0.2")
        wait_for(lambda: positioned(cli_env, "again"), 60, interval=0.5, what="start recorded")
        invoke(cli_env, "streams", "remove", "again")
        wait_for(lambda: "again" not in runner.sink.running, 30, what="the stream stopped")
        gap = set(writer.write(spread(12, "gap")))  # while no stream "again" exists
        invoke(cli_env, "streams", "add", "again", "--url", ep.url, "--linger", "0.2")
        new = set(writer.write(spread(6, "new")))
        wait_for(lambda: new <= ep.delivered_uuids(), 60, what="events of the new stream")
        assert not ep.delivered_uuids() & gap
    finally:
        runner.stop()


def test_replay_from_is_refused_when_unreadable_in_the_future_or_for_an_existing_stream(cli_env):
    bad = invoke(
        cli_env,
        "streams",
        "add",
        "r",
        "--url",
        "http://127.0.0.1:9/x",
        "--replay-from",
        "yesterday",
        ok=False,
    )
    assert isinstance(bad.exception, StreamDefinitionError) and "not an ISO 8601 time" in str(bad.exception)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    ahead = invoke(
        cli_env, "streams", "add", "r", "--url", "http://127.0.0.1:9/x", "--replay-from", future, ok=False
    )
    assert isinstance(ahead.exception, StreamDefinitionError) and "in the future" in str(ahead.exception)
    invoke(cli_env, "streams", "add", "r", "--url", "http://127.0.0.1:9/x")
    again = invoke(
        cli_env,
        "streams",
        "add",
        "r",
        "--url",
        "http://127.0.0.1:9/y",
        "--replace",
        "--replay-from",
        "2026-01-01",
        ok=False,
    )
    assert isinstance(again.exception, StreamDefinitionError) and "keeps its position" in str(again.exception)
    replaced = invoke(cli_env, "streams", "add", "r", "--url", "http://127.0.0.1:9/y", "--replace")
    assert "replaced" in replaced.output


def test_replay_time_parsing_and_the_recorded_start():
    assert parse_replay_from("2026-03-01T10:00:00") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_replay_from("2026-03-01T12:00:00+02:00") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    now = datetime(2026, 3, 2, tzinfo=UTC)
    d = stream("http://127.0.0.1:9/x", start_at=None)
    assert starting(d, None, now).start_at == now
    assert starting(d, datetime(2026, 3, 1, tzinfo=UTC), now).start_ms == int(
        datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000
    )
    with pytest.raises(StreamDefinitionError, match="UTC offset"):
        starting(d, datetime(2026, 3, 1), now)  # noqa: DTZ001 - the naive time is the case under test
    with pytest.raises(ValueError, match="UTC offset"):
        stream("http://127.0.0.1:9/x", start_at=datetime(2026, 3, 1))  # noqa: DTZ001


def test_partitions_added_while_a_stream_runs_are_read_from_their_beginning(
    catalogue_topics, writer, endpoint_factory, box, admin
):
    """A stream without a recorded start that has run: a new partition's records are not skipped."""
    from confluent_kafka.admin import NewPartitions

    from inflow.kafka.clients import topic_partitions
    from inflow.schemas.serde import AvroSerde

    ep = endpoint_factory()
    definition = stream(ep.url, id="grows", start_at=None)
    first = SinkThread(catalogue_topics, [definition], box).start()
    try:
        group = f"{catalogue_topics.topic_prefix}.streams.grows"
        topic = catalogue_topics.topic("events")
        from inflow.sinks.streams.cli import group_progress

        wait_for(
            lambda: all(
                p["committed"] is not None for p in group_progress(catalogue_topics, group, topic).values()
            ),
            60,
            interval=0.5,
            what="the start committed",
        )
    finally:
        first.stop()
    before = len(topic_partitions(admin, topic))
    admin.create_partitions([NewPartitions(topic, before + 2)])[topic].result(30)
    wait_for(lambda: len(topic_partitions(admin, topic)) == before + 2, 30, what="the new partitions")
    encode = AvroSerde().encoder("EnrichedEvent")
    events = spread(4, "late")
    for i, e in enumerate(events):  # straight onto the new partitions
        writer.producer.produce(topic, key=b"W1:late", value=encode(e), partition=before + i % 2)
    assert writer.producer.flush(30) == 0
    second = SinkThread(catalogue_topics, [definition], box).start()
    try:
        wanted = {e["event_uuid"] for e in events}
        wait_for(lambda: wanted <= ep.delivered_uuids(), 60, what="the new partitions' events")
    finally:
        second.stop()

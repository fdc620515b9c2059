"""CompactedView against the real broker: read to the end, follow, tombstones, bad records, group mode."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Message, Producer

from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import KafkaFault, Kind
from inflow.kafka.view import CompactedView

COMPACTED = {"cleanup.policy": "compact"}


def _wait(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _write(producer: Producer, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    for key, value in records:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def test_read_once_keeps_the_last_value_per_key_and_drops_tombstones(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
) -> None:
    topic = topic_factory(partitions=3, config=COMPACTED)
    _write(producer_factory(), topic, [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4"), (b"c", None)])
    view = CompactedView.read(kafka_settings, topic, decode=bytes.decode)
    assert view.data == {"a": "3", "b": "2"}
    assert view.records == 5


def test_empty_topic_is_ready_at_once(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=2, config=COMPACTED)
    view = CompactedView(kafka_settings, topic).open(10)
    try:
        assert view.ready.is_set() and view.problem is None
    finally:
        view.close()


def test_missing_topic_names_the_fix(kafka_settings: KafkaSettings, unique: str) -> None:
    with pytest.raises(KafkaFault) as caught:
        CompactedView.read(kafka_settings, f"missing-{unique}", timeout=1)
    assert caught.value.kind is Kind.PERMANENT and "inflow topics create" in str(caught.value)


def test_a_record_apply_cannot_take_is_skipped_and_the_rest_applied(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
) -> None:
    topic = topic_factory(config=COMPACTED)
    _write(producer_factory(), topic, [(b"a", b"1"), (b"b", b"not a number"), (b"c", b"3")])
    view = CompactedView.read(kafka_settings, topic, decode=lambda v: int(v))
    assert view.data == {"a": 1, "c": 3}


def test_followed_view_signals_caught_up_then_sees_later_writes(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
) -> None:
    topic = topic_factory(partitions=2, config=COMPACTED)
    producer = producer_factory()
    _write(producer, topic, [(f"k{i}".encode(), b"old") for i in range(200)])
    view = CompactedView(kafka_settings, topic, decode=bytes.decode).start()
    try:
        assert view.wait_ready(30), view.problem
        assert len(view.data) == 200  # ready means every record written before the start is applied
        _write(producer, topic, [(b"k0", b"new"), (b"later", b"x")])
        assert _wait(lambda: view.get("k0") == "new" and view.get("later") == "x")
    finally:
        view.close()


def test_followed_view_waits_for_a_topic_created_later(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
    unique: str,
) -> None:
    name = f"late-{unique}"
    view = CompactedView(kafka_settings, name).start(retry_s=0.2)
    try:
        assert _wait(lambda: "missing" in (view.problem or ""), 15)
        assert not view.ready.is_set()
        topic_factory(name=name, config=COMPACTED)
        assert view.wait_ready(30), view.problem
        _write(producer_factory(), name, [(b"k", b"v")])
        assert _wait(lambda: view.get("k") == b"v")
    finally:
        view.close()


def test_read_until_sees_ones_own_write(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
) -> None:
    from inflow.kafka.producer import KafkaProducer

    topic = topic_factory(partitions=3, config=COMPACTED)
    view = CompactedView(kafka_settings, topic).open().catch_up()
    writer = KafkaProducer(kafka_settings, name="t")
    try:
        msg = writer.publish_and_wait(topic, b"mine", b"v")
        view.read_until(topic, msg.partition(), msg.offset())
        assert view.get("mine") == b"v"
    finally:
        writer.close()
        view.close()


def test_custom_apply_over_two_topics(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
) -> None:
    first, second = topic_factory(config=COMPACTED), topic_factory(config=COMPACTED)
    producer = producer_factory()
    _write(producer, first, [(b"a", b"1")])
    _write(producer, second, [(b"b", b"2")])
    seen: list[tuple[str, bytes | None]] = []

    def apply(msg: Message) -> None:
        seen.append((str(msg.topic()), msg.value()))

    CompactedView.read(kafka_settings, [first, second], apply=apply)
    assert sorted(seen) == sorted([(first, b"1"), (second, b"2")])


def test_group_mode_splits_partitions_and_replays_each_from_its_beginning(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
    unique: str,
) -> None:
    topic = topic_factory(partitions=4, config=COMPACTED)
    producer = producer_factory()
    for p in range(4):
        for i in range(10):
            producer.produce(topic, b"v", f"{p}-{i}".encode(), partition=p)
    assert producer.flush(30) == 0
    group = f"views-{unique}"
    revoked: list[tuple[str, int]] = []
    lock = threading.Lock()

    def member(hook: list[tuple[str, int]] | None = None) -> CompactedView:
        return CompactedView(
            kafka_settings,
            topic,
            group_id=group,
            on_revoke=(hook.extend if hook is not None else None),
            **{"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        ).open()

    one = member(revoked)
    try:
        assert _wait(
            lambda: (
                (one.pump(0.1) >= 0)
                and len(one.owned()) == 4
                and all(one.partition_ready(topic, p) for p in range(4))
            )
        )
        assert len(one.data) == 40
        two = member()
        try:

            def balanced() -> bool:
                with lock:
                    one.pump(0.1)
                    two.pump(0.1)
                return (
                    len(one.owned()) == 2
                    and len(two.owned()) == 2
                    and all(two.partition_ready(topic, p) for _, p in two.owned())
                )

            assert _wait(balanced, 60)
            assert len(revoked) == 2  # the hook heard of the two partitions that moved, before they went
            moved = {p for _, p in two.owned()}
            assert {k for k in two.data} == {f"{p}-{i}" for p in moved for i in range(10)}
        finally:
            two.close()
    finally:
        one.close()

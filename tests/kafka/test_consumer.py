"""BatchConsumer's loop against the real broker: hand over, commit after processing, not before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from confluent_kafka import Message, Producer, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.consumer import BatchConsumer, next_offsets


def test_next_offsets_are_one_past_the_last_record_per_partition() -> None:
    class Fake:
        def __init__(self, p: int, o: int) -> None:
            self.p, self.o = p, o

        def topic(self) -> str:
            return "t"

        def partition(self) -> int:
            return self.p

        def offset(self) -> int:
            return self.o

    batch = [Fake(0, 5), Fake(1, 2), Fake(0, 7), Fake(1, 1)]
    got = {(tp.partition, tp.offset) for tp in next_offsets(batch)}  # type: ignore[arg-type]
    assert got == {(0, 8), (1, 3)}


async def test_run_commits_what_was_handled_and_a_failed_batch_is_read_again(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
    unique: str,
) -> None:
    topic = topic_factory(partitions=2)
    producer = producer_factory()
    for i in range(20):
        producer.produce(topic, str(i).encode(), str(i).encode())
    assert producer.flush(30) == 0
    group = f"loop-{unique}"
    handled: list[bytes] = []
    fail = True

    async def handle(batch: list[Message]) -> None:
        if fail:
            raise RuntimeError("downstream refused")
        handled.extend(m.value() or b"" for m in batch)

    first = BatchConsumer(kafka_settings, group, [topic], name="t")
    try:
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(first.run(handle, timeout=0.5), 60)
    finally:
        await first.close()

    fail = False
    second = BatchConsumer(kafka_settings, group, [topic], name="t")
    try:

        async def until_all() -> None:
            await second.run(handle, timeout=0.2, running=lambda: len(handled) < 20)

        await asyncio.wait_for(until_all(), 60)
        # The loop commits asynchronously after each handled batch: wait (with a deadline) for the broker
        # to hold the offsets one past every handled record.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            second.client.poll(0.1)  # serves the commit callbacks
            committed = second.client.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
            if sum(max(tp.offset, 0) for tp in committed) == 20 or loop.time() > deadline:
                break
    finally:
        await second.close()
    assert sorted(int(v) for v in handled) == list(range(20))  # nothing lost after the failed batch
    assert sum(max(tp.offset, 0) for tp in committed) == 20

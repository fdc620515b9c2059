"""The lane watchdog against a real broker: a partition with records beyond the group's committed offset
and nothing applied for the stall time is reported with the offset to re-read from; nothing else is."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.processors.watchdog import LaneWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_reports_only_idle_partitions_with_records_beyond_the_commit(
    kafka_bootstrap, topic_factory, producer_factory, unique
):
    topic = topic_factory(partitions=3)
    producer = producer_factory()
    for partition, count in ((0, 3), (1, 2)):  # partition 2 stays empty
        for n in range(count):
            producer.produce(topic, f"m{n}".encode(), partition=partition)
    producer.flush(30)
    group = f"watchdog-{unique}"
    config = KafkaSettings(bootstrap_servers=kafka_bootstrap).consumer_config(group)
    committer = Consumer(config)  # the lane's group commits partition 1 completely
    committer.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
    committer.close()

    clock = Clock()
    watchdog = LaneWatchdog(config, topic, stall_s=30, clock=clock)
    try:
        watchdog.assigned([0, 1, 2])
        clock.now += 29
        assert watchdog.stalled([0, 1, 2], idle=True) == {}  # not stalled for long enough yet
        clock.now += 2
        assert watchdog.stalled([0, 1, 2], idle=False) == {}  # the agent is busy: never a stall
        watchdog.applied(0)  # a batch of partition 0 was just applied
        assert watchdog.stalled([0, 1, 2], idle=True) == {}  # 1 committed to its end, 2 empty
        clock.now += 31
        # partition 0: three records, nothing committed, nothing applied for 31 s -> re-read from 0
        assert watchdog.stalled([0, 1, 2], idle=True) == {0: 0}
        assert watchdog.stalled([0, 1, 2], idle=True) == {}  # looked at: waits another stall time
    finally:
        watchdog.close()

"""Consumer lag read from a real broker: a topic with a known lag per partition, through the reader and
the collector's metrics; an unreachable broker fails the collector's health check."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import KafkaFault
from inflow.kafka.lag import LagReader, PartitionLag
from inflow.local.process import free_port
from inflow.observability.lag import LagCollector
from tests.observability.offsets import commit_offset
from tests.support import wait_for


@pytest.fixture
def lagging_group(
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    producer_factory: Callable[..., Producer],
    kafka_bootstrap: str,
) -> tuple[str, str]:
    """Topic with 5 records on partition 0 and 3 on partition 1; the group committed 2 on partition 0 and
    nothing on partition 1: lag 3 and 3."""
    topic = topic_factory(partitions=2)
    producer = producer_factory()
    for partition, count in ((0, 5), (1, 3)):
        for i in range(count):
            producer.produce(topic, f"v{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    group = f"{kafka_settings.topic_prefix}.lagging"
    commit_offset(kafka_bootstrap, group, topic, 0, 2)
    return group, topic


def test_reader_reports_the_known_lag_per_partition(
    kafka_settings: KafkaSettings, lagging_group: tuple[str, str]
) -> None:
    group, topic = lagging_group
    reader = LagReader(kafka_settings)
    try:
        assert group in reader.groups(f"{kafka_settings.topic_prefix}.")
        assert reader.groups("no-such-prefix-") == []
        assert reader.lag(group) == [
            PartitionLag(group, topic, 0, 2, 5, 3),
            PartitionLag(group, topic, 1, None, 3, 3),  # never committed: all it retains is lag
        ]
    finally:
        reader.close()


def test_a_group_without_commits_counts_the_named_topics_whole(
    kafka_settings: KafkaSettings, lagging_group: tuple[str, str]
) -> None:
    _, topic = lagging_group
    reader = LagReader(kafka_settings)
    try:
        lags = reader.lag(f"{kafka_settings.topic_prefix}.never-ran", [topic])
    finally:
        reader.close()
    assert [(lag.partition, lag.committed, lag.lag) for lag in lags] == [(0, None, 5), (1, None, 3)]


def test_collector_serves_lag_per_partition_and_per_group(
    kafka_settings: KafkaSettings, lagging_group: tuple[str, str]
) -> None:
    group, topic = lagging_group
    registry = CollectorRegistry()
    collector = LagCollector(kafka_settings, [f"{kafka_settings.topic_prefix}."], registry=registry)
    try:
        collector.read_once()
        value = registry.get_sample_value
        assert value("inflow_consumer_lag", {"group": group, "topic": topic, "partition": "0"}) == 3
        assert value("inflow_consumer_lag", {"group": group, "topic": topic, "partition": "1"}) == 3
        assert value("inflow_consumer_group_lag", {"group": group}) == 6
        ok, detail = collector.check()
        assert ok and "6 records behind in 1 groups" == detail
    finally:
        collector.stop()


def test_unreachable_broker_fails_the_reader_and_the_collector_check() -> None:
    nowhere = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix="nowhere")
    reader = LagReader(nowhere, timeout=2)
    try:
        with pytest.raises(KafkaFault):
            reader.groups()
    finally:
        reader.close()
    collector = LagCollector(nowhere, ["nowhere."], interval_s=0.2, timeout_s=2, registry=None)
    assert collector.check() == (True, "first read pending")
    collector.start()
    try:
        wait_for(lambda: not collector.check()[0], 60, what="the check to fail")
        assert collector.check()[1] == collector.error and collector.lags == []
    finally:
        collector.stop()

"""Consumer lag read from the broker: each group's committed offsets against the partitions' end offsets.

Any process can read any group's lag without joining it: committed offsets come from the admin API, end
offsets from a probe consumer that never subscribes (so it creates no group). A partition of a topic the
group reads but has never committed on counts everything it retains as lag (``committed`` is None), which
is where a consumer with ``auto.offset.reset=earliest`` would start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_admin, new_consumer, watermarks
from inflow.kafka.errors import fault, from_exception


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """How far one group is behind on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has never committed an offset on this partition
    end: int  # the high watermark: offset of the next record written
    lag: int


class LagReader:
    """Reads consumer lag of any group; one admin client and one probe consumer, closed by :meth:`close`."""

    def __init__(self, kafka: KafkaSettings, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._admin = new_admin(kafka)
        # Never subscribes nor commits: its group id is never created on the broker.
        self._probe = new_consumer(kafka, f"{kafka.topic_prefix}.lag-probe")

    def groups(self, prefix: str = "") -> list[str]:
        """Consumer groups known to the broker (with members or committed offsets) named ``prefix...``."""
        try:
            listed = self._admin.list_consumer_groups(request_timeout=self.timeout).result()
        except KafkaException as exc:
            raise from_exception(exc, "listing consumer groups") from exc
        if listed.errors and not listed.valid:  # no broker answered: an empty list would be a lie
            raise fault(listed.errors[0], "listing consumer groups")
        return sorted(g.group_id for g in listed.valid if g.group_id.startswith(prefix))

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        """The group's committed offset of every partition it has committed on."""
        request = [ConsumerGroupTopicPartitions(group)]
        try:
            futures = self._admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
            found = futures[group].result()
        except KafkaException as exc:
            raise from_exception(exc, f"reading committed offsets of group {group}") from exc
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in found.topic_partitions or []
            if tp.error is None and tp.offset >= 0
        }

    def lag(self, group: str, topics: Iterable[str] = ()) -> list[PartitionLag]:
        """Lag of ``group`` on every partition of ``topics`` and of every topic it has committed on."""
        committed = self.committed(group)
        out: list[PartitionLag] = []
        for topic in sorted(set(topics) | {t for t, _ in committed}):
            for partition in self._partitions(topic):
                low, high = watermarks(self._probe, TopicPartition(topic, partition), self.timeout)
                done = committed.get((topic, partition))
                behind = high - done if done is not None else high - low
                out.append(PartitionLag(group, topic, partition, done, high, max(0, behind)))
        return out

    def _partitions(self, topic: str) -> list[int]:
        """Partition ids of ``topic``; none when it does not exist (deleted since the group committed)."""
        try:
            meta = self._probe.list_topics(topic, timeout=self.timeout).topics.get(topic)
        except KafkaException as exc:
            raise from_exception(exc, f"reading metadata of {topic}") from exc
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    def close(self) -> None:
        self._probe.close()

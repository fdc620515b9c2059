"""Where a stream starts: at the events that arrive once it is set up, never at the retained history.

MoEngage streams start when they are set up and have no historical export (spec §5.2). A stream's
definition carries its start time (``start_at``: the registration time, or an explicit ``--replay-from``).
When the export group is given a partition it has never committed on, the offset of the first record at
or after that time (``offsets_for_times``; the end of the partition when there is none, or when the
definition has no start: a YAML stream starts at the end of the topic when it first runs) is committed
for the group *before* fetching begins. From then on the committed offset is the stream's position, so a
sink restart neither replays the history nor skips what arrived while it was down.

This runs in the consumer's assignment callback, before librdkafka reads the committed offsets to start
fetching. A partition added to the topic later starts at its first record after the stream's start; for a
stream without a recorded start that has already run (other partitions have committed offsets), at its
beginning, so the records written to it before the group noticed it are not skipped.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaException, TopicPartition

from inflow.kafka.clients import watermarks
from inflow.kafka.consumer import TP
from inflow.kafka.errors import from_exception

log = logging.getLogger(__name__)
TIMEOUT_S = 15.0


def record_start(consumer: Consumer, tps: list[TP], start_ms: int | None, label: str) -> None:
    """Commit the start offset of every partition in ``tps`` the group has no committed offset for."""
    if not tps:
        return
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=TIMEOUT_S)
        fresh = [tp for tp in committed if tp.offset < 0]
        if not fresh:
            return
        if start_ms is None and has_run(consumer, fresh[0].topic):
            start_ms = 0  # a partition added while the stream runs: from its first record
        starts = start_offsets(consumer, fresh, start_ms)
        consumer.commit(offsets=starts, asynchronous=False)
    except KafkaException as exc:
        raise from_exception(exc, f"stream {label}: recording where it starts") from exc
    where = "the end" if start_ms is None else f"{start_ms} ms"
    log.info(
        "stream %s: starts at %s on %s",
        label,
        where,
        ", ".join(f"[{tp.partition}]@{tp.offset}" for tp in starts),
    )


def has_run(consumer: Consumer, topic: str) -> bool:
    """Whether the group has a committed offset on any partition of the topic."""
    meta = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None:
        return False
    parts = [TopicPartition(topic, p) for p in meta.partitions]
    return any(tp.offset >= 0 for tp in consumer.committed(parts, timeout=TIMEOUT_S))


def start_offsets(
    consumer: Consumer, fresh: list[TopicPartition], start_ms: int | None
) -> list[TopicPartition]:
    """The first offset at or after ``start_ms`` of each partition, else (or with no start) its end."""
    found: dict[TP, int] = {}
    if start_ms is not None:
        query = [TopicPartition(tp.topic, tp.partition, start_ms) for tp in fresh]
        for tp in consumer.offsets_for_times(query, timeout=TIMEOUT_S):
            if tp.offset >= 0:
                found[(tp.topic, tp.partition)] = tp.offset
    out = []
    for tp in fresh:
        offset = found.get((tp.topic, tp.partition))
        if offset is None:
            offset = watermarks(consumer, TopicPartition(tp.topic, tp.partition), TIMEOUT_S)[1]
        out.append(TopicPartition(tp.topic, tp.partition, offset))
    return out

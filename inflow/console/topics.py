"""Topics and consumer groups as the console shows them: partitions, end offsets, lag per group.

Read with one admin client (``inflow.kafka.clients.new_admin``): the catalogue's topics and the consumer
groups under this installation's topic prefix, each group's committed offsets against the end offsets.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from inflow.config.settings import KafkaSettings
from inflow.config.topics import load_catalogue
from inflow.kafka.errors import from_exception

TIMEOUT_S = 10.0


def end_offsets(admin: AdminClient, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
    """Latest offset of each partition."""
    if not partitions:
        return {}
    futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=TIMEOUT_S)
    out = {}
    for tp, future in futures.items():
        try:
            out[(tp.topic, tp.partition)] = int(future.result().offset)
        except KafkaException:
            continue  # a partition without a leader right now: shown without an end offset
    return out


def catalogue_topics(kafka: KafkaSettings, admin: AdminClient) -> list[dict[str, Any]]:
    """Every catalogue topic: partitions on the cluster, records (end - start summed), policy."""
    try:
        metadata = admin.list_topics(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise from_exception(exc, "listing topics") from exc
    specs = load_catalogue(kafka.topic_prefix)
    tps = [
        TopicPartition(s.name, p)
        for s in specs
        if (found := metadata.topics.get(s.name)) is not None and not found.error
        for p in found.partitions
    ]
    ends = end_offsets(admin, tps)
    out = []
    for spec in specs:
        found = metadata.topics.get(spec.name)
        exists = found is not None and not found.error
        parts = sorted(found.partitions) if exists and found is not None else []
        out.append(
            {
                "topic": spec.name,
                "short_name": spec.short_name,
                "exists": exists,
                "partitions": len(parts),
                "declared_partitions": spec.entry.partitions,
                "cleanup_policy": spec.entry.cleanup_policy,
                "end_offsets": {str(p): ends.get((spec.name, p)) for p in parts},
                "end_offset_total": sum(ends.get((spec.name, p), 0) for p in parts),
            }
        )
    return out


def group_ids(kafka: KafkaSettings, admin: AdminClient) -> list[str]:
    """Consumer groups of this installation (named after its topic prefix); view readers are left out."""
    try:
        listing = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result()
    except KafkaException as exc:
        raise from_exception(exc, "listing consumer groups") from exc
    prefix = kafka.topic_prefix + "."
    return sorted(
        g.group_id for g in listing.valid if g.group_id.startswith(prefix) and ".view-" not in g.group_id
    )


def consumer_lag(
    kafka: KafkaSettings, admin: AdminClient, groups: list[str] | None = None
) -> list[dict[str, Any]]:
    """Per group: committed offset, end offset and lag of every partition it has committed, and the total."""
    names = group_ids(kafka, admin) if groups is None else groups
    committed: dict[str, list[TopicPartition]] = {}
    for group in names:
        future = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT_S
        )[group]
        try:
            committed[group] = [tp for tp in future.result().topic_partitions or [] if tp.offset >= 0]
        except KafkaException:
            committed[group] = []
    wanted = {(tp.topic, tp.partition) for tps in committed.values() for tp in tps}
    ends = end_offsets(admin, [TopicPartition(t, p) for t, p in sorted(wanted)])
    out = []
    for group in names:
        per_topic: dict[str, dict[str, dict[str, int | None]]] = defaultdict(dict)
        total = 0
        for tp in committed[group]:
            end = ends.get((tp.topic, tp.partition))
            lag = max(0, end - tp.offset) if end is not None else None
            total += lag or 0
            per_topic[tp.topic][str(tp.partition)] = {"committed": tp.offset, "end": end, "lag": lag}
        out.append({"group": group, "lag": total, "topics": dict(per_topic)})
    return out


def component_of(group: str, prefix: str) -> str:
    """Which component a consumer group belongs to, from its name."""
    name = group.removeprefix(prefix + ".")
    if name.startswith("streams."):
        return "sink"
    if name.startswith("processors"):
        return "worker"
    if "import" in name or "poller" in name:
        return "poller"
    return "other"

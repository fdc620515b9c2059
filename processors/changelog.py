"""Changelog topics of the lane state, and rebuilding a lane partition's databases from them.

Every write to a state table is also a record of its changelog topic ``<prefix>.processors-<table>-changelog``
(key and value as stored; a tombstone for a delete), in the partition of the lane partition it belongs to.
The changelogs are compacted; the seen marks' changelog is also pruned after the de-duplication window,
and carries a batch's marks as bundles (:mod:`~inflow.processors.bundles`), expanded here on restore.
The names and the record format are those faust-streaming used for these tables, so the changelogs of an
existing installation keep working.

When a lane partition is assigned, :class:`ChangelogRestorer` reads its changelog partitions from the
offset its local databases reflect (from the beginning on a fresh disk) to the end the broker reports at
that moment, before the lane applies any record of the partition. Only the partition's owner writes its
changelog partitions, and the group hands a partition over only after its previous owner gave it up (or
its session expired), so that end is final. The restorer is a consumer of its own that assigns the
changelog partitions itself (no group membership, nothing committed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.config.topics import TopicEntry, TopicSpec
from inflow.kafka.clients import new_consumer, watermarks
from inflow.kafka.consumer import good_messages
from inflow.kafka.errors import from_exception
from inflow.processors import bundles
from inflow.processors.store import SEEN, TABLES, TableStore

log = logging.getLogger(__name__)


def changelog_topic(app_id: str, table: str) -> str:
    """``<prefix>.processors-<table>-changelog``."""
    return f"{app_id}-{table}-changelog"


def changelog_specs(
    app_id: str, lanes: TopicSpec, dedup_window_s: int, partitions: int | None = None
) -> list[TopicSpec]:
    """One compacted topic per table, co-partitioned with ingest.records (``partitions``: its count on the
    broker, else the catalogue's); seen marks expire with the window."""
    specs = []
    for index, table in enumerate(TABLES):
        seen = index == SEEN
        entry = TopicEntry(
            key="state key (workspace id first)",
            value="state value (JSON), tombstone on delete",
            partitions=partitions or lanes.entry.partitions,
            replication=lanes.entry.replication,
            cleanup_policy="compact,delete" if seen else "compact",
            retention_ms=dedup_window_s * 1000 if seen else None,
        )
        name = changelog_topic(app_id, table)
        specs.append(TopicSpec(name, name, entry))
    return specs


@dataclass
class _Restore:
    """One lane partition being restored: per changelog partition, the offset that ends it."""

    partition: int
    stores: list[TableStore]
    ends: dict[str, int] = field(default_factory=dict)  # changelog topic -> end offset still to reach
    records: int = 0
    begun: bool = False
    started: float = field(default_factory=time.monotonic)


class ChangelogRestorer:
    """Reads changelog partitions into the databases of newly assigned lane partitions."""

    def __init__(self, kafka: KafkaSettings, app_id: str, batch: int = 5_000) -> None:
        self.topics = [changelog_topic(app_id, table) for table in TABLES]
        self.batch = batch
        self._consumer: Consumer = new_consumer(kafka, f"{app_id}.restore", **{"fetch.wait.max.ms": 50})
        self._jobs: dict[int, _Restore] = {}

    @property
    def restoring(self) -> list[int]:
        return sorted(self._jobs)

    def start(self, partition: int, stores: list[TableStore]) -> None:
        """Restore a lane partition (from the next :meth:`step` on: no broker round trip here, this runs
        inside the lane consumer's rebalance callback)."""
        self.cancel(partition)
        self._jobs[partition] = _Restore(partition, stores)

    def _begin(self, job: _Restore) -> None:
        """Where each changelog partition's restore starts and ends; tables already at the end need none."""
        assign = []
        for topic, store in zip(self.topics, job.stores, strict=True):
            tp = TopicPartition(topic, job.partition)
            low, high = watermarks(self._consumer, tp)
            reflected = store.changelog_offset()
            if reflected is not None and reflected + 1 > high:
                # The database knows records the changelog does not have: a recreated topic.
                log.warning("%s[%d]: local state is ahead of the changelog; rebuilding", topic, job.partition)
                store.wipe()
                reflected = None
            start = OFFSET_BEGINNING if reflected is None else max(reflected + 1, low)
            if high > low and (reflected is None or reflected + 1 < high):
                job.ends[topic] = high
                assign.append(TopicPartition(topic, job.partition, start))
        job.begun = True
        if assign:
            self._consumer.incremental_assign(assign)

    def cancel(self, partition: int) -> None:
        """The lane partition was revoked before its restore finished."""
        job = self._jobs.pop(partition, None)
        if job is not None and job.begun and job.ends:
            self._unassign(partition, list(job.ends))

    def step(self, budget_s: float) -> list[int]:
        """Blocking: apply changelog records for up to ``budget_s``; the lane partitions now complete."""
        deadline = time.monotonic() + budget_s
        for job in list(self._jobs.values()):
            if not job.begun:
                self._begin(job)
        while any(job.ends for job in self._jobs.values()) and time.monotonic() < deadline:
            try:
                messages = self._consumer.consume(self.batch, 0.1)
            except KafkaException as exc:
                raise from_exception(exc, "restoring lane state") from exc
            writes: dict[tuple[str, int], tuple[list[tuple[bytes, bytes | None]], int]] = {}
            for msg in good_messages(messages, "changelog restore"):
                key = (str(msg.topic()), int(msg.partition() or 0))
                records, _ = writes.get(key, ([], -1))
                records.append((bytes(msg.key() or b""), msg.value()))
                writes[key] = (records, int(msg.offset() or 0))
            for (topic, partition), (records, last) in writes.items():
                owner = self._jobs.get(partition)
                if owner is None or topic not in owner.ends:
                    continue
                owner.stores[self.topics.index(topic)].restore(bundles.expand(records), last)
                owner.records += len(records)
            self._check_done()
        done = [p for p, job in self._jobs.items() if not job.ends]
        for partition in done:
            job = self._jobs.pop(partition)
            if job.records:
                log.info(
                    "lane %d: %d changelog records restored in %.1fs",
                    partition,
                    job.records,
                    time.monotonic() - job.started,
                )
        return done

    def _check_done(self) -> None:
        tps = [TopicPartition(t, job.partition) for job in self._jobs.values() for t in job.ends]
        if not tps:
            return
        for tp in self._consumer.position(tps):
            job = self._jobs[tp.partition]
            if tp.offset >= 0 and tp.offset >= job.ends[tp.topic]:
                del job.ends[tp.topic]
                self._unassign(tp.partition, [tp.topic])

    def _unassign(self, partition: int, topics: list[str]) -> None:
        self._consumer.incremental_unassign([TopicPartition(t, partition) for t in topics])

    def close(self) -> None:
        self._jobs.clear()
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError):
            pass

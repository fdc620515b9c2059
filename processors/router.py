"""The router: every ingest record, unchanged and in order, onto its workspace's lane, in packs.

A consumer group of its own (``<prefix>.processors.router``) reads the ingest topics in batches. A batch's
lane messages are flushed before its offsets are committed, synchronously; a rebalance or a crash in
between replays the batch and the lane drops the copies on event_uuid.

Packs: the records of one workspace in one consumed batch travel as one lane message
(:func:`~inflow.processors.lanes.pack_records`, at most 512 KiB each), in their consumed order, so the lane
stage pays its per-message costs once per pack of hundreds of records instead of once per record. A
record's position in the lane (partition, offset, index in the pack) is what its seen mark stores, so a
pack read again after a crash is applied again, and a record the router forwarded twice (replayed batch)
is dropped as a duplicate. A record too large for the lane topic even alone is rejected with the reason
(kept whole, hex, in the rejection when that fits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Message

from inflow.config.settings import KafkaSettings
from inflow.kafka.consumer import BatchConsumer, next_offsets
from inflow.kafka.errors import RecordTooLarge
from inflow.processors.exceptions import LaneFramingError
from inflow.processors.lanes import MAX_PACK_BYTES, pack, pack_spans, peek_workspace
from inflow.processors.publishing import Publisher

log = logging.getLogger(__name__)


class Router:
    """Consumes the ingest topics in batches and forwards each record to the lane of its workspace."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        publisher: Publisher,
        ingest_topics: list[str],
        lanes_topic: str,
        batch_size: int,
        poll_s: float,
        session_timeout_s: float,
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.publisher = publisher
        self.producer = publisher.producer
        self.ingest_topics = ingest_topics
        self.lanes_topic = lanes_topic
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.session_timeout_s = session_timeout_s
        self.forwarded = 0  # records, for the progress log
        self._owned: set[tuple[str, int]] = set()  # ingest partitions assigned now (progress log)

    async def run(self, running: Callable[[], bool]) -> None:
        """While ``running()``: consume a batch, forward it, flush, commit."""
        consumer = BatchConsumer(
            self.kafka,
            self.group_id,
            self.ingest_topics,
            name="router",
            on_assign=lambda _, partitions: self._owned.update(partitions),
            on_revoke=lambda _, partitions: self._owned.difference_update(partitions),
            **{  # type: ignore[arg-type]
                "fetch.max.bytes": 52_428_800,
                "session.timeout.ms": int(self.session_timeout_s * 1000),
                "partition.assignment.strategy": "cooperative-sticky",
            },
        )
        try:
            while running():
                batch = await consumer.consume(self.batch_size, self.poll_s)
                if not batch:
                    continue
                self.forward(batch)
                await self.producer.flush_patiently_async()
                await consumer.commit_sync(next_offsets(batch))
                self.forwarded += len(batch)
        finally:
            await consumer.close()
            self._owned.clear()

    def owned_partitions(self) -> int:
        """How many ingest partitions this router is assigned now (progress log)."""
        return len(self._owned)

    def forward(self, batch: list[Message]) -> None:
        by_workspace: dict[str, list[Message]] = {}
        for msg in batch:
            value = msg.value()
            try:
                workspace = peek_workspace(value)  # type: ignore[arg-type]
            except LaneFramingError as exc:
                self.publisher.unreadable(
                    msg.topic() or "", msg.partition() or 0, msg.offset() or 0, value, str(exc)
                )
                continue
            by_workspace.setdefault(workspace, []).append(msg)
        # Packs stay under the lane topic's own limit too (a topic may allow less than MAX_PACK_BYTES):
        # only a record too large for the lanes alone is rejected, never the records packed with it.
        limit = min(MAX_PACK_BYTES, self.producer.limit(self.lanes_topic))
        for workspace, messages in by_workspace.items():
            values: list[bytes] = [m.value() for m in messages]  # type: ignore[misc]
            for start, end in pack_spans([len(v) for v in values], limit):
                try:
                    self.producer.produce(self.lanes_topic, pack(values[start:end]), workspace.encode())
                except RecordTooLarge as exc:  # a span over the limit holds one record only
                    for msg in messages[start:end]:
                        reason = f"ingest record too large for the lanes: {exc}"
                        self.publisher.unreadable(
                            msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.value(), reason
                        )

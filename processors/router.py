"""The router: every ingest record, unchanged and in order, onto its workspace's lane, in packs.

A librdkafka consumer (its own group, ``<app id>.router``) instead of a faust agent: faust acks a
message it skips while a rebalance or a table recovery has the stream paused, and its offset then
commits although the record never reached the lane (the "stranded record" in docs/BENCHMARKS.md).
Here a batch's lane messages are flushed before its offsets are committed, synchronously; a rebalance
or a crash in between replays the batch and the lane drops the copies on event_uuid.

Packs: the records of one workspace in one consumed batch travel as one lane message
(:func:`~inflow.processors.lanes.pack_records`, at most 512 KiB each), in their consumed order. faust's
consumer
costs tens of µs per message, so one message per record held a worker to ~6,500 events/s; a pack of
hundreds of records pays that once. A record's position in the lane (partition, offset, index in the
pack) is what its seen mark stores, so a pack read again after a crash is applied again, and a record
the router forwarded twice (replayed batch) is dropped as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Message

from inflow.processors.delivery import BatchProducer
from inflow.processors.exceptions import LaneFramingError
from inflow.processors.lanes import pack_records, peek_workspace

log = logging.getLogger(__name__)
Unreadable = Callable[[str, int, int, bytes | None, str], None]


class Router:
    """Consumes the ingest topics in batches and forwards each record to the lane of its workspace."""

    def __init__(
        self,
        consumer_config: dict[str, object],
        producer: BatchProducer,
        ingest_topics: list[str],
        lanes_topic: str,
        unreadable: Unreadable,
        batch_size: int,
        poll_s: float,
    ) -> None:
        self.consumer_config = consumer_config
        self.producer = producer
        self.ingest_topics = ingest_topics
        self.lanes_topic = lanes_topic
        self.unreadable = unreadable
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.forwarded = 0  # records, for the progress log
        self._consumer: Consumer | None = None

    async def run(self) -> None:
        """Until cancelled: consume a batch, forward it, flush, commit."""
        loop = asyncio.get_running_loop()
        consumer = self._consumer = Consumer(self.consumer_config)
        consumer.subscribe(self.ingest_topics)
        try:
            while True:
                batch = await loop.run_in_executor(None, consumer.consume, self.batch_size, self.poll_s)
                if not batch:
                    continue
                self.forward(batch)
                await self.producer.flush()
                await loop.run_in_executor(None, self.commit, consumer)
                self.forwarded += len(batch)
        finally:
            self._consumer = None
            await loop.run_in_executor(None, consumer.close)

    def owned_partitions(self) -> int:
        """How many ingest partitions this router is assigned now (progress log)."""
        return len(self._consumer.assignment()) if self._consumer is not None else 0

    def forward(self, batch: list[Message]) -> None:
        by_workspace: dict[str, list[bytes]] = {}
        for msg in batch:
            if msg.error():
                log.warning("router consumer: %s", msg.error())
                continue
            value = msg.value()
            try:
                workspace = peek_workspace(value)  # type: ignore[arg-type]
            except LaneFramingError as exc:
                self.unreadable(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, value, str(exc))
                continue
            by_workspace.setdefault(workspace, []).append(value)  # type: ignore[arg-type]
        for workspace, values in by_workspace.items():
            for pack in pack_records(values):
                self.producer.produce(self.lanes_topic, workspace.encode(), pack)

    @staticmethod
    def commit(consumer: Consumer) -> None:
        """Commit what was consumed; after a rebalance the new owner replays it (deduplicated downstream)."""
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            log.warning("router commit failed, the batch will be replayed: %s", exc)

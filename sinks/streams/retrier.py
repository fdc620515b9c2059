"""The retry loop: read the stream's parked batches from the retry topics and resend each when it is due.

Each retry topic has one fixed delay per stream, so a stream's records in a partition come due in offset
order. A record that is not yet due is held in memory and its partition paused until then; other partitions
(and other tiers) keep flowing, so a batch that is due is never stuck behind one that is not.

A parked batch that cannot be decoded *yet* (the schema registry is unreachable) is read again later with a
growing delay; it is never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from inflow.errors import InflowError
from inflow.kafka.consumer import TP, BatchConsumer
from inflow.schemas.exceptions import RegistryError
from inflow.sinks.streams import metrics
from inflow.sinks.streams.destinations.base import OutgoingBatch
from inflow.sinks.streams.offsets import OffsetTracker, WorkUnit
from inflow.sinks.streams.retry import TIER_TOPICS, tier_of
from inflow.sinks.streams.worker import GROUP_OVERRIDES, RegistryBackoff, RegistryHolds, StreamWorker

log = logging.getLogger(__name__)
HOLD_LIMIT = 200  # parked batches held in memory per partition before its fetching pauses
SHUTDOWN_GRACE_S = 15.0


@dataclass(eq=False)
class Held:
    """A parked batch waiting for its due time."""

    unit: WorkUnit
    record: dict[str, Any]
    tier: int
    topic: str
    due: float  # epoch seconds


class RetryLoop:
    """Consumer group ``<prefix>.streams.<id>.retry`` over the three retry topics."""

    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker
        prefix = worker.kafka.topic_prefix
        self.group = f"{prefix}.streams.{worker.definition.id}.retry"
        self.topics = [worker.kafka.topic(t) for t in TIER_TOPICS]
        self.short = {worker.kafka.topic(t): t for t in TIER_TOPICS}
        self.key = worker.definition.id.encode()
        self.tracker = OffsetTracker()
        self.holds: dict[TP, deque[Held]] = {}
        self.paused: set[TP] = set()
        self.in_flight: set[asyncio.Task[Any]] = set()
        self._registry = RegistryBackoff(self.worker.label, "parked batch ")

    async def run(self, stop: asyncio.Event) -> None:
        consumer = BatchConsumer(
            self.worker.kafka,
            self.group,
            self.topics,
            name=f"streams-{self.worker.label}-retry",
            on_revoke=self._revoked,
            **GROUP_OVERRIDES,
        )
        try:
            while not stop.is_set():
                self.worker.check()
                stream_paused = self.worker.pause_view().paused
                messages = await consumer.consume(200, self._poll_timeout(stream_paused))
                held = RegistryHolds()
                for msg in messages:
                    if held and held.holds(msg):
                        continue
                    try:
                        self._take(msg)
                    except RegistryError as exc:
                        held.hold(msg, exc)
                if not stream_paused:
                    self._dispatch()
                self._apply_pauses(consumer, stream_paused)
                consumer.commit(self.tracker.take_commits())
                await held.wait(consumer, self._registry, stop)
        finally:
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=SHUTDOWN_GRACE_S)
            await consumer.commit_sync(self.tracker.take_commits())
            await consumer.close()

    def _poll_timeout(self, stream_paused: bool) -> float:
        heads = [q[0].due for q in self.holds.values() if q]
        if stream_paused or not heads:
            return 0.5
        return min(0.5, max(0.01, min(heads) - time.time()))

    def _take(self, msg: Message) -> None:
        """Hold one parked batch of this stream; raises a retriable RegistryError before tracking it."""
        unit = WorkUnit()
        tp = (str(msg.topic()), int(msg.partition() or 0))
        if msg.key() != self.key:
            self.tracker.add(unit, tp[0], tp[1], int(msg.offset() or 0))
            self.tracker.complete(unit)  # another stream's batch
            return
        try:
            _, record = self.worker.serde.decode(msg.value() or b"", "StreamBatch")
        except RegistryError as exc:
            if exc.retriable:
                raise  # read it again once the registry answers; never skipped
            self._skip_unreadable(unit, msg, exc)
            return
        except InflowError as exc:
            self._skip_unreadable(unit, msg, exc)
            return
        self.tracker.add(unit, tp[0], tp[1], int(msg.offset() or 0))
        if record["stream_id"] != self.worker.definition.id:
            self.tracker.complete(unit)
            return
        due = (
            record["due_at"].timestamp()
            if isinstance(record["due_at"], datetime)
            else record["due_at"] / 1000
        )
        held = Held(unit, record, tier_of(self.short[tp[0]]), tp[0], due)
        self.holds.setdefault(tp, deque()).append(held)

    def _skip_unreadable(self, unit: WorkUnit, msg: Message, exc: Exception) -> None:
        topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
        self.tracker.add(unit, topic, partition, offset)
        log.error(
            "stream %s: unreadable retry record %s[%s]@%s skipped: %s",
            self.worker.label,
            topic,
            partition,
            offset,
            exc,
        )
        self.tracker.complete(unit)

    def _dispatch(self) -> None:
        """Send every held batch whose time has come, within the stream's in-flight limit."""
        limit = self.worker.definition.max_in_flight
        now = time.time()
        for queue in self.holds.values():
            while queue and queue[0].due <= now and len(self.in_flight) < limit:
                held = queue.popleft()
                task = asyncio.get_running_loop().create_task(self._redeliver(held))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
                task.add_done_callback(self.worker.task_done)

    def _apply_pauses(self, consumer: BatchConsumer, stream_paused: bool) -> None:
        """Pause a partition while its head is not due (or too much is held); resume it when it can flow."""
        now = time.time()
        assigned = [(tp.topic, tp.partition) for tp in consumer.assignment()]
        if consumer.assignment_changed:
            consumer.assignment_changed = False
            self.paused &= set(assigned)
        want = set()
        for tp in assigned:
            queue = self.holds.get(tp)
            if stream_paused or (queue and (queue[0].due > now or len(queue) >= HOLD_LIMIT)):
                want.add(tp)
        to_pause, to_resume = want - self.paused, self.paused - want
        if to_pause:
            consumer.client.pause([TopicPartition(t, p) for t, p in to_pause])
        if to_resume:
            consumer.client.resume([TopicPartition(t, p) for t, p in to_resume])
        self.paused = want

    async def _redeliver(self, held: Held) -> None:
        record = held.record
        count = len(record.get("event_uuids") or [])
        outcome = await self.worker.deliver(
            OutgoingBatch(record["moe_request_id"], record["events_json"], count)
        )
        if outcome.ok:
            metrics.DELIVERED_EVENTS.labels(self.worker.label).inc(count)
        else:
            await self.worker.park(record, outcome, held.topic, held.tier)
        self.tracker.complete(held.unit)

    def _revoked(self, consumer: Consumer, tps: list[TP]) -> None:
        self.tracker.release(consumer, tps)
        for tp in tps:
            self.holds.pop(tp, None)
            self.paused.discard(tp)

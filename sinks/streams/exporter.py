"""The export loop: read EnrichedEvents, filter and format them, POST batches, commit what is safe.

A record that cannot be read is dead-lettered with its position and reason. A record that cannot be read
*yet*, because the schema registry that resolves its schema id is unreachable, is an infrastructure fault:
the loop seeks its partition back to it and tries again with a growing delay, nothing is dead-lettered or
committed past it; the other partitions' records go on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confluent_kafka import Consumer, Message

from inflow.errors import InflowError
from inflow.kafka.consumer import TP, BatchConsumer
from inflow.schemas.exceptions import RegistryError
from inflow.sinks.streams import metrics
from inflow.sinks.streams.batching import BatchBuilder, EventBatch
from inflow.sinks.streams.destinations.base import Outcome, OutgoingBatch
from inflow.sinks.streams.offsets import OffsetTracker, WorkUnit
from inflow.sinks.streams.payload import EventFilter, EventFormatter, events_array
from inflow.sinks.streams.reading import EnrichedEventReader
from inflow.sinks.streams.retry import MAIN_TIER, dead_record
from inflow.sinks.streams.start import record_start
from inflow.sinks.streams.worker import GROUP_OVERRIDES, RegistryBackoff, RegistryHolds, StreamWorker

log = logging.getLogger(__name__)
LAG_EVERY_S = 5.0
# Offsets that became committable are committed at most this often (each asynchronous commit is a request
# to the broker and a few µs of the event loop); at shutdown and on a revoke they are committed at once.
COMMIT_EVERY_S = 0.2
SHUTDOWN_GRACE_S = 15.0


class ExportLoop:
    """Consumer group ``<prefix>.streams.<id>`` over the events topic."""

    def __init__(self, worker: StreamWorker) -> None:
        d = worker.definition
        self.worker = worker
        self.topic = worker.kafka.topic("events")
        self.group = f"{worker.kafka.topic_prefix}.streams.{d.id}"
        self.tracker = OffsetTracker()
        self.builder = BatchBuilder(d.batch_size, d.linger_s)
        event_filter = EventFilter.of(d)
        self.accepts = None if event_filter.accepts_all else event_filter.accepts
        self.fragment = EventFormatter(d).fragment
        self.read = EnrichedEventReader(worker.serde).read
        self.in_flight: set[asyncio.Task[Any]] = set()
        self._paused = False
        self._lag_at = 0.0
        self._commit_at = 0.0
        self._registry = RegistryBackoff(self.worker.label, "")

    async def run(self, stop: asyncio.Event) -> None:
        consumer = BatchConsumer(
            self.worker.kafka,
            self.group,
            [self.topic],
            name=f"streams-{self.worker.label}",
            on_assign=self._assigned,
            on_revoke=self._revoked,
            **GROUP_OVERRIDES,
        )
        limit = self.worker.definition.max_in_flight
        try:
            while not stop.is_set():
                self.worker.check()
                view = self.worker.pause_view()
                self._apply_pause(consumer, view.paused)
                if len(self.in_flight) >= limit:
                    await asyncio.wait(self.in_flight, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                    self._commit(consumer, time.monotonic())
                    continue
                free = limit - len(self.in_flight)
                messages = await consumer.consume(
                    self.builder.batch_size * free, self._poll_timeout(view.paused)
                )
                now = time.monotonic()
                take, builder, skip_window = self._take, self.builder, view.skip_window
                size = builder.batch_size
                held = RegistryHolds()
                for msg in messages:
                    if held and held.holds(msg):
                        continue  # after a record of its partition that waits for the registry
                    try:
                        take(msg, skip_window)
                    except RegistryError as exc:
                        held.hold(msg, exc)
                        continue
                    if len(builder.current.fragments) >= size and not view.paused:
                        self._send(builder.take(), skip_window)
                if not view.paused and self.builder.due(now):
                    self._send(self.builder.take(), view.skip_window)
                self._commit(consumer, now)
                if now - self._lag_at >= LAG_EVERY_S:
                    self._lag_at = now
                    metrics.CONSUMER_LAG.labels(self.worker.label).set(consumer_lag(consumer.client))
                await held.wait(consumer, self._registry, stop)
        finally:
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=SHUTDOWN_GRACE_S)
            await consumer.commit_sync(self.tracker.take_commits())
            await consumer.close()

    def _commit(self, consumer: BatchConsumer, now: float) -> None:
        if now - self._commit_at >= COMMIT_EVERY_S:
            self._commit_at = now
            consumer.commit(self.tracker.take_commits())

    def _poll_timeout(self, paused: bool) -> float:
        if paused:
            return 0.2
        until_due = self.builder.time_to_due(time.monotonic())
        return 0.5 if until_due is None else min(0.5, max(0.01, until_due))

    def _apply_pause(self, consumer: BatchConsumer, paused: bool) -> None:
        """Paused means not sent: stop fetching; resume continues where it stopped (events stay in Kafka)."""
        if paused and (not self._paused or consumer.assignment_changed):
            consumer.client.pause(consumer.assignment())
        elif not paused and self._paused:
            consumer.client.resume(consumer.assignment())
        consumer.assignment_changed = False
        self._paused = paused

    def _take(self, msg: Message, skip_window: tuple[int, int] | None) -> None:
        batch = self.builder.current
        fragments = batch.fragments
        if not fragments and not batch.partitions:
            batch.opened = time.monotonic()
        arrival = msg.timestamp()[1]
        if skip_window is not None and skip_window[0] <= arrival < skip_window[1]:
            self.tracker.add(batch, msg.topic(), msg.partition(), msg.offset())  # type: ignore[arg-type]
            return  # arrived while paused in skip mode
        try:
            event = self.read(msg.value() or b"")
            if self.accepts is not None and not self.accepts(event):
                self.tracker.add(batch, msg.topic(), msg.partition(), msg.offset())  # type: ignore[arg-type]
                return
            fragment = self.fragment(event)
        except RegistryError as exc:
            if exc.retriable:
                raise  # the registry is down, the record is fine: read it again later
            self._park_invalid(msg, exc)
            return
        except (InflowError, KeyError, TypeError, ValueError) as exc:
            self._park_invalid(msg, exc)
            return
        self.tracker.add(batch, msg.topic(), msg.partition(), msg.offset())  # type: ignore[arg-type]
        fragments.append(fragment)
        batch.event_uuids.append(event["event_uuid"])
        batch.first_arrival_ms.append(arrival)

    def _park_invalid(self, msg: Message, exc: Exception) -> None:
        """A record that cannot be exported goes to the DLQ with its position and reason; the rest flows."""
        unit = WorkUnit()
        self.tracker.add(unit, str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
        reason = f"invalid record {msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}"[:1000]
        log.error("stream %s: %s", self.worker.label, reason)
        metrics.INVALID_EVENTS.labels(self.worker.label).inc()
        self._spawn(self._park(unit, reason))

    async def _park(self, unit: WorkUnit, reason: str) -> None:
        batch = EventBatch()
        record = dead_record(self.worker.definition.id, batch, Outcome.failed_permanently(reason), self.topic)
        await self.worker.dead_letter(record)
        self.tracker.complete(unit)

    def _send(self, batch: EventBatch, skip_window: tuple[int, int] | None) -> None:
        if skip_window is not None:
            batch.drop_arrivals(*skip_window)  # taken just before a skip-mode pause took hold
        if not batch.fragments:
            self.tracker.complete(batch)  # only filtered or skipped records: nothing to send
            return
        self._spawn(self._deliver(batch))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        task.add_done_callback(self.worker.task_done)

    async def _deliver(self, batch: EventBatch) -> None:
        events_json = events_array(batch.fragments)
        outcome = await self.worker.deliver(
            OutgoingBatch(batch.moe_request_id, events_json, len(batch.fragments))
        )
        if outcome.ok:
            self._delivered(batch)
        else:
            previous = {
                "moe_request_id": batch.moe_request_id,
                "events_json": events_json,
                "event_uuids": batch.event_uuids,
                "created_at": batch.created_at,
            }
            await self.worker.park(previous, outcome, self.topic, MAIN_TIER)
        self.tracker.complete(batch)

    def _delivered(self, batch: EventBatch) -> None:
        label = self.worker.label
        metrics.DELIVERED_EVENTS.labels(label).inc(len(batch.fragments))
        now_ms = time.time() * 1000
        delay = metrics.DELIVERY_DELAY.labels(label)
        for arrival in batch.first_arrival_ms[:: max(1, len(batch.first_arrival_ms) // 10)]:
            delay.observe(max(0.0, (now_ms - arrival) / 1000))

    def _assigned(self, consumer: Consumer, tps: list[TP]) -> None:
        """Partitions this stream never read start at the stream's start (see :mod:`.start`)."""
        record_start(consumer, tps, self.worker.definition.start_ms, self.worker.label)

    def _revoked(self, consumer: Consumer, tps: list[TP]) -> None:
        """Before partitions move to another sink: commit what is done, forget the rest (redelivered)."""
        self.tracker.release(consumer, tps)


def consumer_lag(client: Consumer) -> int:
    """Sum over assigned partitions of (high watermark - position), from cached watermarks."""
    lag = 0
    try:
        for tp in client.position(client.assignment()):
            _, high = client.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                lag += max(0, high - tp.offset)
    except Exception:  # noqa: BLE001 - lag is best effort, never a reason to stop
        return 0
    return lag

"""What a stream's export loop and retry loop share: its destination, parking failed batches, pause state.

Each stream has its own consumer groups (``<prefix>.streams.<id>`` and ``<prefix>.streams.<id>.retry``), so a
slow or dead endpoint only ever holds back its own stream. The two loops (:mod:`.exporter`,
:mod:`.retrier`) import this module; :mod:`.sink` starts both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.consumer import TP, BatchConsumer
from inflow.kafka.errors import KafkaFault, Kind
from inflow.kafka.producer import KafkaProducer
from inflow.schemas.exceptions import RegistryError
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import metrics
from inflow.sinks.streams.control import PauseView, pause_view
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.destinations.base import Destination, Outcome, OutgoingBatch
from inflow.sinks.streams.payload import events_array, split_events
from inflow.sinks.streams.retry import (
    DLQ_TOPIC,
    ParkingTopic,
    attempt_record,
    next_parking_topic,
    parked_batch,
)

log = logging.getLogger(__name__)
REGISTRY_BACKOFF_S = (0.5, 30.0)  # first and longest wait before reading again after a registry outage


class RegistryBackoff:
    """The wait before a record is read again after a schema registry outage (an infrastructure fault,
    never a reason to dead-letter): doubling from the first to the longest wait, reset after a clean read.
    Shared by the export and retry loops."""

    def __init__(self, label: str, what: str) -> None:
        self.label = label
        self.what = what
        self.delay = REGISTRY_BACKOFF_S[0]

    def reset(self) -> None:
        self.delay = REGISTRY_BACKOFF_S[0]

    async def wait(self, exc: Exception, msg: Any, stop: asyncio.Event) -> None:
        delay, self.delay = self.delay, min(REGISTRY_BACKOFF_S[1], self.delay * 2)
        metrics.REGISTRY_RETRIES.labels(self.label).inc()
        log.warning(
            "stream %s: cannot read %s%s[%s]@%s yet, reading it again in %gs: %s",
            self.label,
            self.what,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            delay,
            exc,
        )
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass


class RegistryHolds:
    """Partitions of one fetch whose next record waits for the schema registry (an outage: the record is
    fine, it cannot be read yet). Their later records in the fetch are left alone and each is sought back
    to its first waiting record; the other partitions' records, a really invalid one among them, go on."""

    __slots__ = ("first", "failure")

    def __init__(self) -> None:
        self.first: dict[TP, int] = {}
        self.failure: tuple[RegistryError, Message] | None = None

    def __bool__(self) -> bool:
        return bool(self.first)

    def holds(self, msg: Message) -> bool:
        return (str(msg.topic()), int(msg.partition() or 0)) in self.first

    def hold(self, msg: Message, exc: RegistryError) -> None:
        self.first.setdefault((str(msg.topic()), int(msg.partition() or 0)), int(msg.offset() or 0))
        if self.failure is None:
            self.failure = (exc, msg)

    async def wait(self, consumer: BatchConsumer, backoff: RegistryBackoff, stop: asyncio.Event) -> None:
        """Seek the held partitions back and wait the backoff; without any, the backoff starts over."""
        if self.failure is None:
            backoff.reset()
            return
        for (topic, partition), offset in self.first.items():
            consumer.client.seek(TopicPartition(topic, partition, offset))
        await backoff.wait(*self.failure, stop)


# A sink that died is noticed after 10 s (librdkafka's default is 45 s) so its partitions move on quickly;
# the fetch queue is bounded so a paused or slow stream does not hoard memory.
GROUP_OVERRIDES: dict[str, Any] = {
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 2_000,
    "queued.max.messages.kbytes": 32768,
}
PRODUCE_BACKOFF_MAX_S = 5.0


class StreamWorker:
    """Shared parts of a stream's two loops: delivery, parking failed batches, pause state, failure."""

    def __init__(
        self,
        definition: StreamDefinition,
        kafka: KafkaSettings,
        serde: AvroSerde,
        producer: KafkaProducer,
        destination: Destination,
        state_of: Callable[[], Mapping[str, Any] | None],
    ) -> None:
        self.definition = definition
        self.kafka = kafka
        self.serde = serde
        self.producer = producer
        self.destination = destination
        self._state_of = state_of
        self._encode = serde.encoder("StreamBatch")
        self.label = definition.id
        self.failure: BaseException | None = None  # set by a task that cannot go on; the loops stop on it

    def pause_view(self) -> PauseView:
        return pause_view(self.definition, self._state_of())

    def check(self) -> None:
        """Raise the failure a delivery task met (the stream stops; the sink restarts it)."""
        if self.failure is not None:
            raise self.failure

    async def deliver(self, batch: OutgoingBatch) -> Outcome:
        """One delivery attempt, measured."""
        gauge = metrics.IN_FLIGHT.labels(self.label)
        gauge.inc()
        try:
            outcome = await self.destination.deliver(batch)
        finally:
            gauge.dec()
        metrics.REQUEST_LATENCY.labels(self.label).observe(outcome.latency_s)
        if outcome.ok:
            metrics.DELIVERED_REQUESTS.labels(self.label).inc()
        else:
            log.info(
                "stream %s: delivery to %s failed: %s", self.label, self.destination.safe_name, outcome.reason
            )
        return outcome

    async def park(
        self,
        previous: dict[str, Any],
        outcome: Outcome,
        source_topic: str,
        failed_tier: int,
        to_dlq: bool = False,
    ) -> ParkingTopic:
        """Put the whole batch in the next retry topic (or the DLQ); returns once the broker acked it.

        A batch over the parking topic's size limit is split in halves, each parked as a request of its own
        (a new ``moe_request_id``: the endpoint must not take a half for a duplicate of the other). One event
        that still does not fit its retry topic goes to the DLQ, and if it does not fit there either, it is
        dead-lettered without its body, with the reason and its event id.
        """
        parking = next_parking_topic(self.definition, failed_tier, outcome.permanent or to_dlq)
        record = parked_batch(self.definition, previous, outcome, source_topic, parking)
        try:
            await self.produce(parking.topic, self._encode(record))
        except KafkaFault as exc:
            if exc.kind is not Kind.TOO_LARGE:
                raise
            await self._park_too_large(previous, outcome, source_topic, failed_tier, parking, exc)
            return parking
        if parking.is_dlq:
            metrics.DEAD_LETTERED_BATCHES.labels(self.label).inc()
            log.warning(
                "stream %s: batch %s dead-lettered after %d attempts: %s",
                self.label,
                record["moe_request_id"],
                record["attempt"],
                outcome.reason,
                extra={"stream": self.label, "request_id": record["moe_request_id"]},
            )
        else:
            metrics.RETRIED_BATCHES.labels(self.label, parking.topic).inc()
        return parking

    async def _park_too_large(
        self,
        previous: dict[str, Any],
        outcome: Outcome,
        source_topic: str,
        failed_tier: int,
        parking: ParkingTopic,
        exc: KafkaFault,
    ) -> None:
        fragments = split_events(previous["events_json"])
        if len(fragments) > 1:
            half = len(fragments) // 2
            log.warning(
                "stream %s: batch %s of %d events cannot be parked (%s); parking it in two",
                self.label,
                previous["moe_request_id"],
                len(fragments),
                exc,
            )
            for part in (fragments[:half], fragments[half:]):
                await self.park(
                    split_batch(previous, part), outcome, source_topic, failed_tier, parking.is_dlq
                )
            return
        if not parking.is_dlq:
            await self.park(previous, outcome, source_topic, failed_tier, to_dlq=True)
            return
        topic = self.kafka.topic(parking.topic)
        record = unparkable_record(self.definition.id, previous, outcome, source_topic, topic, exc)
        await self.dead_letter(record)

    async def dead_letter(self, record: dict[str, Any]) -> None:
        """Write a record to the DLQ; one that is still too large is logged with its reason and dropped."""
        try:
            await self.produce(DLQ_TOPIC, self._encode(record))
        except KafkaFault as exc:
            if exc.kind is not Kind.TOO_LARGE:
                raise
            log.error(
                "stream %s: batch %s dropped, not even its summary fits the DLQ: %s",
                self.label,
                record["moe_request_id"],
                exc,
                extra={
                    "stream": self.label,
                    "request_id": record["moe_request_id"],
                    "event_id": ",".join(record["event_uuids"]),
                },
            )
        metrics.DEAD_LETTERED_BATCHES.labels(self.label).inc()

    async def produce(self, short_topic: str, value: bytes) -> None:
        """Produce keyed by stream id; a retriable failure is retried (backing off) until it succeeds.

        A record over the size limit goes back to the caller (kind TOO_LARGE: refused by this producer's
        check, :class:`~inflow.kafka.errors.RecordTooLarge`, or by the broker); a fatal or permanent fault is
        raised too and stops the stream with its reason."""
        topic = self.kafka.topic(short_topic)
        delay = 0.2
        while True:
            try:
                await self.producer.send(topic, value, self.definition.id.encode())
                return
            except KafkaFault as exc:
                if exc.kind is not Kind.RETRIABLE:
                    raise
                log.warning(
                    "stream %s: writing to %s failed, retrying in %gs: %s", self.label, topic, delay, exc
                )
            await asyncio.sleep(delay)
            delay = min(PRODUCE_BACKOFF_MAX_S, delay * 2)

    def task_done(self, task: asyncio.Task[Any]) -> None:
        """Done-callback of a delivery task: a task that raised stops the stream with its reason."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("stream %s: task %s failed: %r", self.label, task.get_name(), exc, exc_info=exc)
            if self.failure is None:
                self.failure = exc


def split_batch(previous: dict[str, Any], fragments: list[str]) -> dict[str, Any]:
    """Part of a parked batch as a request of its own: a new id, its own events, the shared history."""
    return previous | {
        "moe_request_id": str(uuid.uuid4()),
        "events_json": events_array(fragments),
        "event_uuids": [str(json.loads(f).get("event_uuid", "")) for f in fragments],
    }


def unparkable_record(
    stream_id: str,
    previous: dict[str, Any],
    outcome: Outcome,
    source_topic: str,
    topic: str,
    exc: KafkaFault,
) -> dict[str, Any]:
    """A DLQ StreamBatch without the events that were too large to park; its last attempt says why."""
    now = datetime.now(UTC)
    uuids = list(previous.get("event_uuids", []))
    size = len(previous["events_json"])
    why = (
        f"{outcome.reason}; over the size limit of {topic}, not parked, events dropped "
        f"({len(uuids)} events, {size} bytes): {exc}"
    )
    last = Outcome(outcome.result, why[:1000], outcome.status, outcome.latency_s)
    return {
        "stream_id": stream_id,
        "moe_request_id": previous["moe_request_id"],
        "events_json": "[]",
        "event_uuids": uuids,
        "attempt": int(previous.get("attempt", 0)) + 1,
        "attempts": [*previous.get("attempts", []), attempt_record(last, source_topic, now)],
        "due_at": now,
        "created_at": previous.get("created_at", now),
    }

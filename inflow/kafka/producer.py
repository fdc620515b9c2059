"""The one producer every component writes to Kafka with: durable, size-checked, with delivery tracking.

- acks=all and idempotence (from :func:`~inflow.kafka.clients.producer_config`), so each partition keeps the
  produce order and a retried send is not written twice.
- A record over the topic's size limit raises :class:`~inflow.kafka.errors.RecordTooLarge` *before* it is
  queued: the caller rejects that one record (rejected-records topic, error report, 4xx) and goes on, and
  the broker never answers a whole batch with ``MSG_SIZE_TOO_LARGE`` (batches are kept under the smallest
  limit of the producer's ``batch_topics``).
- A full local queue is drained by polling, never dropped.
- Delivery failures are classified once (:mod:`inflow.kafka.errors`) and raised as typed errors from
  :meth:`KafkaProducer.flush`, :meth:`KafkaProducer.send` and :meth:`KafkaProducer.send_many`.

Three ways to wait, for the three shapes of caller: ``flush()`` after a batch (workers, importer),
``await send()`` / ``await send_many()`` from asyncio (gateway, sink) with a background poll thread, and
``publish_and_wait()`` for one control record (CLI, stores).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import ConfigResource

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_admin, new_producer
from inflow.kafka.errors import DeliveryFailed, KafkaFault, RecordTooLarge, fault, from_exception

log = logging.getLogger(__name__)

UNASSIGNED = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks the partition
CLIENT_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes
BROKER_MAX_BYTES = 1_048_588  # Kafka's default max.message.bytes of a topic
# Bytes a record costs beyond its key and value in a v2 record batch of one record (batch header, record
# header, varints); a record whose key + value + this is under the limit is accepted by the broker.
RECORD_OVERHEAD = 128

DeliveryReport = Callable[[KafkaError | None, Message], None]
Delivered = Callable[[Message], None]


class KafkaProducer:
    """A librdkafka producer with Inflow's durability, size checks and typed delivery errors."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        name: str = "producer",
        background: bool = False,
        topic_limits: bool = True,
        successes: bool = True,
        batch_topics: Iterable[str] = (),
        **overrides: Any,
    ) -> None:
        """``background`` starts a thread that serves delivery reports (for asyncio callers);
        ``topic_limits`` looks up each topic's ``max.message.bytes`` once (else the client limit alone);
        ``successes=False``: librdkafka reports only failed deliveries (``delivery.report.only.error``),
        which saves a Python callback per record; failures are raised by :meth:`flush` as always, and
        ``on_delivered`` / ``on_delivery`` are refused (they would never be called for a success).
        ``batch_topics``: the topics this producer mostly writes; their ``max.message.bytes`` is read now
        and the producer's ``batch.size`` kept under the smallest (see :meth:`_fit_batches`)."""
        self.kafka = kafka
        self.name = name
        self.successes = successes
        self.max_bytes = int(overrides.get("message.max.bytes", CLIENT_MAX_BYTES))
        self._topic_limits = topic_limits
        self._limits: dict[str, int] = {}
        if not successes:
            overrides = overrides | {"delivery.report.only.error": True}
        overrides = self._fit_batches(batch_topics, overrides)
        self._producer = new_producer(kafka, error_cb=self._on_error, **overrides)
        self._errors: list[KafkaError] = []
        self.last_error: str | None = None
        self.fatal: KafkaFault | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._serve, name=f"{name}-poll", daemon=True)
            self._thread.start()

    # --- size -------------------------------------------------------------------------------------
    def _fit_batches(self, topics: Iterable[str], overrides: dict[str, Any]) -> dict[str, Any]:
        """The broker applies a topic's ``max.message.bytes`` to a whole record batch: records that each
        fit are refused together (``MSG_SIZE_TOO_LARGE``) when librdkafka batches more of them than the
        topic takes (without compression, or with data that does not compress). So the batches stay
        under the smallest limit of the producer's main topics. A limit lowered later is read when the
        component restarts (until then the records that each fit may be refused as too large, never lost
        without a report)."""
        limits = [self.limit(topic) for topic in topics]  # looked up now, and kept for the size checks
        if not limits:
            return overrides
        batch = int(overrides.get("batch.size", self.kafka.producer_config()["batch.size"]))
        fitting = min(limits)
        if 0 < fitting < batch:
            log.info("%s: batches of at most %d bytes (a topic's max.message.bytes)", self.name, fitting)
            return overrides | {"batch.size": fitting}
        return overrides

    def limit(self, topic: str) -> int:
        """The largest key + value this producer accepts for ``topic`` (client and topic limits)."""
        limit = self._limits.get(topic)
        if limit is None:
            limit = self._limits[topic] = min(self.max_bytes, self._topic_limit(topic)) - RECORD_OVERHEAD
        return limit

    def check(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Raise :class:`RecordTooLarge` when the record cannot be written to ``topic``."""
        size = (len(key) if key else 0) + (len(value) if value else 0)
        limit = self._limits.get(topic)  # the limit already holds the client's max_bytes
        if limit is None:
            limit = self.limit(topic)
        if size > limit:
            raise RecordTooLarge(topic, size, limit)

    def _topic_limit(self, topic: str) -> int:
        if not self._topic_limits:
            return BROKER_MAX_BYTES
        try:
            admin = new_admin(self.kafka)
            futures = admin.describe_configs([ConfigResource("topic", topic)], request_timeout=10)
            for future in futures.values():
                entry = future.result(timeout=10).get("max.message.bytes")
                if entry is not None and entry.value:
                    return int(entry.value)
        except Exception as exc:  # unknown topic or no describe permission: the client limit still holds
            log.debug("cannot read max.message.bytes of %s: %s", topic, exc)
        return BROKER_MAX_BYTES

    # --- producing --------------------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int | None = None,
        on_delivered: Delivered | None = None,
        on_delivery: DeliveryReport | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        checked: bool = False,
    ) -> None:
        """Queue one record after the size check. ``on_delivered(msg)`` runs on success (failures are
        raised by the next :meth:`flush`); ``on_delivery(err, msg)`` takes over the whole report.
        ``checked``: the caller has just passed this very record through :meth:`check` (the worker checks
        every output of an ingest record before it queues any), so it is not measured twice."""
        if not checked:
            self.check(topic, key, value)
        if not self.successes and (on_delivered is not None or on_delivery is not None):
            raise ValueError(f"{self.name} reports no successful deliveries: on_delivered is never called")
        report = on_delivery or (self._report if on_delivered is None else self._then(on_delivered))
        part = UNASSIGNED if partition is None else partition
        refreshes = 0
        while True:
            try:
                if headers:
                    self._producer.produce(topic, value, key, part, report, headers=headers)
                else:
                    self._producer.produce(topic, value, key, part, report)
                return
            except BufferError:  # local queue full: serve delivery reports until there is room
                self._producer.poll(0.05)
            except KafkaException as exc:
                # A partition this client's metadata does not know yet (the topic was just grown): read
                # the topic's metadata again, for up to ~10 s, before giving up.
                if exc.args[0].code() == KafkaError._UNKNOWN_PARTITION and refreshes < 20:
                    refreshes += 1
                    self._refresh(topic)
                    continue
                raise from_exception(exc, f"cannot queue a record for {topic}") from exc

    def _refresh(self, topic: str) -> None:
        try:
            self._producer.list_topics(topic, timeout=5)
        except KafkaException as exc:
            log.warning("%s: metadata of %s not read: %s", self.name, topic, exc)
        time.sleep(0.5)

    def poll(self, timeout: float = 0.0) -> int:
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued record is acknowledged; raise the first failure as a typed error."""
        remaining = int(self._producer.flush(timeout))
        self._raise_errors(remaining, timeout)

    async def flush_async(self, timeout: float = 60.0) -> None:
        """:meth:`flush` off the event loop."""
        remaining = await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, timeout)
        self._raise_errors(int(remaining), timeout)

    async def flush_patiently_async(self, report_every_s: float = 60.0) -> None:
        """Wait off the event loop until every queued record is acknowledged or has failed, however long the
        broker is away. librdkafka keeps retrying a queued record until its ``message.timeout.ms`` (5 min by
        default) and then reports it failed; until then an outage is waited out, with a warning every
        ``report_every_s``, instead of failing a batch that would be delivered a moment later. A delivery
        failure raises its typed error as :meth:`flush` does."""
        loop = asyncio.get_running_loop()
        waited = 0.0
        while True:
            remaining = int(await loop.run_in_executor(None, self._producer.flush, report_every_s))
            if remaining == 0 or self._errors:
                self._raise_errors(remaining, waited + report_every_s)
                return
            waited += report_every_s
            log.warning(
                "%s: %d records not acknowledged after %.0f s (broker away?); still waiting",
                self.name,
                remaining,
                waited,
            )

    def _raise_errors(self, remaining: int, timeout: float) -> None:
        errors, self._errors = self._errors, []
        if errors:
            first = fault(errors[0], f"{self.name}: {len(errors)} records not acknowledged, first")
            raise first
        if remaining:
            raise DeliveryFailed(f"{self.name}: {remaining} records not acknowledged within {timeout:g}s")

    def publish_and_wait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        timeout: float = 30.0,
        partition: int | None = None,
    ) -> Message:
        """Write one record (to ``partition`` when given) and wait for its acknowledgement; returns it with
        partition and offset."""
        outcome: list[tuple[KafkaError | None, Message]] = []
        self.produce(
            topic, value, key, partition=partition, on_delivery=lambda err, msg: outcome.append((err, msg))
        )
        self._producer.flush(timeout)
        if not outcome:
            raise DeliveryFailed(f"writing to {topic}: not acknowledged within {timeout:g}s")
        err, msg = outcome[0]
        if err is not None:
            raise fault(err, f"writing to {topic}")
        return msg

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> Message:
        """Produce from asyncio and wait for the acknowledgement (needs ``background=True``)."""
        return (await self.send_many([(topic, key, value)], 1))[0]

    async def send_many(
        self, records: Iterable[tuple[str, bytes | None, bytes | None]], count: int
    ) -> list[Message]:
        """Produce ``count`` records ``(topic, key, value)`` and wait until the broker acknowledged all of
        them; the first failure is raised as a typed error. A record over the size limit raises
        :class:`RecordTooLarge` before any record of the batch is queued, so a rejected batch is not
        half-written."""
        batch = records if isinstance(records, list) else list(records)
        check = self.check
        for topic, key, value in batch:
            check(topic, key, value)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Message]] = loop.create_future()
        tally = _Tally(loop, future, count)
        sent = 0
        try:
            for topic, key, value in batch:
                while True:
                    try:
                        self._producer.produce(topic, value, key, on_delivery=tally)
                        break
                    except BufferError:  # local queue full: let the poll thread drain it
                        await asyncio.sleep(0.005)
                sent += 1
        except KafkaException as exc:
            # Records already queued still report to ``tally``, which then finds the future done.
            tally.abandon(from_exception(exc, f"cannot queue record {sent + 1} of {count}"))
        if sent == 0 and count == 0:
            return []
        return await future

    # --- lifecycle --------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()
        if err.fatal():
            self.fatal = fault(err, f"{self.name} cannot go on")
            log.error("kafka (fatal): %s", err.str())
        else:
            log.warning("kafka: %s", err.str())

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(err)

    def _then(self, then: Delivered) -> DeliveryReport:
        def report(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._errors.append(err)
            else:
                then(msg)

        return report

    def __len__(self) -> int:
        return len(self._producer)

    def close(self, timeout: float = 15.0) -> int:
        """Flush what is queued, stop the poll thread, release connections; returns records left unsent."""
        left = int(self._producer.flush(timeout))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.12
        if close is not None:
            close()
        return left


class _Tally:
    """Counts the acknowledgements of one batch; called on the poll thread, settles on the loop."""

    __slots__ = ("loop", "future", "left", "error", "messages")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[list[Message]], count: int):
        self.loop = loop
        self.future = future
        self.left = count
        self.error: KafkaError | None = None
        self.messages: list[Message] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self.error is None:
            self.error = err
        self.messages.append(msg)
        self.left -= 1
        if self.left == 0:
            self.loop.call_soon_threadsafe(self._settle)

    def abandon(self, exc: KafkaFault) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def _settle(self) -> None:
        if self.future.done():
            return
        if self.error is None:
            self.future.set_result(self.messages)
        else:
            self.future.set_exception(fault(self.error, "broker did not acknowledge"))

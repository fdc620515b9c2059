"""The gateway's records on their way to Kafka: one :class:`~inflow.kafka.producer.KafkaProducer` per process.

A request's records are sent together and the request waits until the broker has acknowledged all of them
(or any one failed). ``message.timeout.ms`` bounds the wait, so an unreachable broker turns into a 503 the
client can retry, never a false 200. A record over its topic's size limit is refused before anything of
the request is sent: the client gets a 4xx naming the reason, since resending the same data cannot help.
Rate-limit counts go through the same producer without waiting.

A request's records of one user (one key) go to ``ingest.records`` as one pack (:mod:`inflow.schemas.packs`,
split when a pack would pass the topic's limit): the worker reads them in request order from one message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, Message

from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import KafkaFault, Kind, RecordTooLarge
from inflow.kafka.producer import KafkaProducer
from inflow.producers.bulk_api.elements import Outgoing
from inflow.producers.bulk_api.exceptions import DeliveryError, RecordRejected
from inflow.schemas.packs import Message as Record
from inflow.schemas.packs import PackEncoder, pack_groups, pack_messages
from inflow.schemas.serde import AvroSerde

PACKED = "ingest.records"

log = logging.getLogger(__name__)


class GatewayDelivery:
    """Short catalogue names to topics, size checks with the gateway's errors, acknowledged sends."""

    def __init__(
        self, kafka: KafkaSettings, timeout_ms: int, serde: AvroSerde | None = None, **overrides: Any
    ) -> None:
        """``serde``: the framing of the packs (default: single-object over ``schemas/``)."""
        self.kafka = kafka
        self.timeout_ms = timeout_ms
        self.producer = KafkaProducer(
            kafka,
            name="gateway",
            background=True,
            batch_topics=[kafka.topic(PACKED)],
            **({"message.timeout.ms": timeout_ms} | overrides),
        )
        self._topics: dict[str, str] = {}
        self._packs = PackEncoder(serde or AvroSerde(), kafka.topic(PACKED))
        self._failing = False
        self._error_before_success: str | None = None

    @property
    def last_error(self) -> str | None:
        """The client's latest error text (broker down, authentication): for logs, never for answers."""
        return self.producer.last_error

    @property
    def available(self) -> bool:
        """False while the broker is unreachable: the last delivery failed, or the client reported an
        error and no delivery has been acknowledged since."""
        error = self.producer.last_error
        return not self._failing and (error is None or error == self._error_before_success)

    def topic(self, short_name: str) -> str:
        name = self._topics.get(short_name)
        if name is None:
            name = self._topics[short_name] = self.kafka.topic(short_name)
        return name

    def prepare(self, short_names: Iterable[str]) -> None:
        """Look up the size limits of the topics written to, so no request waits for that lookup (all at
        once: with the broker unreachable, each lookup waits for its timeout)."""
        topics = [self.topic(short_name) for short_name in short_names]
        with ThreadPoolExecutor(max(1, len(topics)), thread_name_prefix="gateway-limits") as pool:
            list(pool.map(self.producer.limit, topics))

    def room(self) -> int:
        """The largest key + value of one record of ``ingest.records`` (see :meth:`check`)."""
        return self.producer.limit(self.topic(PACKED))

    def check(self, messages: Sequence[Outgoing]) -> None:
        """Raise :class:`RecordRejected` for the first message over its topic's size limit."""
        check, topic = self.producer.check, self.topic
        for index, msg in enumerate(messages, 1):
            try:
                check(topic(msg.topic), msg.key, msg.value)
            except RecordTooLarge as exc:
                raise RecordRejected(
                    f"cannot queue record {index} of {len(messages)}: {exc}", str(exc)
                ) from exc

    async def deliver(self, messages: Sequence[Outgoing], count: int) -> None:
        """Send the messages (packed per key) and wait until the broker acknowledged all of them.

        :class:`RecordRejected` (nothing was sent) when one is over its size limit, :class:`DeliveryError`
        (the client may retry) when the broker did not acknowledge them all."""
        topic = self.topic
        packs = pack_messages(
            [(topic(m.topic), m.key, m.value) for m in messages],
            self._packs,
            self.producer.limit,
            topic(PACKED),
        )
        await self._send(packs, lambda: self.check(messages))  # check() names the first one too large

    async def deliver_groups(self, groups: Mapping[bytes, Sequence[bytes]]) -> None:
        """:meth:`deliver` for records of ``ingest.records`` already grouped by key, each checked
        against :meth:`room` (the Bulk API's path: no per-record message on the way)."""
        packed = self.topic(PACKED)
        await self._send(pack_groups(groups, self._packs, self.producer.limit(packed), packed), None)

    async def _send(self, packs: list[Record], name_too_large: Callable[[], None] | None) -> None:
        error = self.producer.last_error
        try:
            await self.producer.send_many(packs, len(packs))
            self._failing, self._error_before_success = False, error
        except RecordTooLarge as exc:  # send_many checks every record before it queues any
            if name_too_large is not None:
                name_too_large()
            raise RecordRejected(f"cannot queue a record of the request: {exc}", str(exc)) from exc
        except KafkaFault as exc:
            if exc.kind is Kind.TOO_LARGE:  # the broker's limit is lower than the one read at start-up
                raise RecordRejected(str(exc), f"the broker refused a record as too large ({exc})") from exc
            self._failing = True
            raise DeliveryError(str(exc)) from exc

    def send(self, short_topic: str, key: bytes, value: bytes) -> None:
        """Fire-and-forget record (rate-limit counts); losing one only delays the other gateways' view."""
        try:
            self.producer.produce(self.topic(short_topic), value, key, on_delivery=_log_failure)
        except KafkaFault as exc:
            log.warning("cannot publish to %s: %s", short_topic, exc)

    def close(self, timeout: float = 15.0) -> int:
        """Flush what is queued (SIGTERM path) and stop the poll thread; returns records left unsent."""
        return self.producer.close(timeout)


def _log_failure(err: KafkaError | None, msg: Message) -> None:
    if err is not None:
        log.warning("a record for %s was not stored: %s", msg.topic(), err.str())

"""One confluent-kafka producer per gateway process, with acknowledgements bridged to asyncio.

A request's records are produced together and the request waits on one future that resolves when the
broker has acknowledged all of them (or any one failed). ``message.timeout.ms`` bounds the wait, so an
unreachable broker turns into a 503 the client can retry, never a false 200.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from inflow.config.settings import KafkaSettings
from inflow.producers.bulk_api.elements import Outgoing
from inflow.producers.bulk_api.exceptions import DeliveryError

log = logging.getLogger(__name__)


class _Pending:
    """Counts outstanding acknowledgements of one request; called back on the producer's poll thread."""

    __slots__ = ("loop", "future", "left", "error")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], count: int) -> None:
        self.loop = loop
        self.future = future
        self.left = count
        self.error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and self.error is None:
            self.error = err
        self.left -= 1
        if self.left == 0:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(DeliveryError(f"broker did not acknowledge: {self.error.str()}"))


class KafkaDelivery:
    """Produces the gateway's records; a background thread serves the delivery callbacks."""

    def __init__(self, kafka: KafkaSettings, timeout_ms: int, **overrides: object) -> None:
        self.kafka = kafka
        self.timeout_ms = timeout_ms
        conf = kafka.producer_config(
            **{"message.timeout.ms": timeout_ms, "error_cb": self._on_error} | overrides
        )
        self.producer = Producer(conf)
        self.last_error: str | None = None
        self._topics: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="gateway-producer-poll", daemon=True)
        self._thread.start()

    def topic(self, short_name: str) -> str:
        name = self._topics.get(short_name)
        if name is None:
            name = self._topics[short_name] = self.kafka.topic(short_name)
        return name

    async def deliver(self, messages: Iterable[Outgoing], count: int) -> None:
        """Produce ``count`` messages and wait until the broker acknowledged all; DeliveryError otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        pending = _Pending(loop, future, count)
        produce, topic = self.producer.produce, self.topic
        sent = 0
        try:
            for msg in messages:
                while True:
                    try:
                        produce(topic(msg.topic), msg.value, msg.key, on_delivery=pending)
                        break
                    except BufferError:  # local queue full: let the poll thread drain it
                        await asyncio.sleep(0.005)
                sent += 1
        except KafkaException as exc:
            # Fail the request now; records already queued still report to ``pending``, which then finds
            # the future done. (Only the poll thread ever touches ``pending.left``.)
            future.set_exception(DeliveryError(f"cannot queue record {sent + 1} of {count}: {exc.args[0]}"))
        await future

    def send(self, short_topic: str, key: bytes, value: bytes) -> None:
        """Fire-and-forget record (rate-limit counts); losing one only delays the other gateways' view."""
        try:
            self.producer.produce(self.topic(short_topic), value, key)
        except (BufferError, KafkaException) as exc:
            log.warning("cannot publish to %s: %s", short_topic, exc)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()
        log.warning("kafka: %s", err.str())

    def close(self, timeout: float = 15.0) -> int:
        """Flush what is queued (SIGTERM path) and stop the poll thread; returns records left unsent."""
        left = self.producer.flush(timeout)
        self._stop.set()
        self._thread.join(5)
        # Release librdkafka's connections now rather than whenever this object is collected.
        close = getattr(self.producer, "close", None)  # confluent-kafka >= 2.12
        if close is not None:
            close()
        return left

"""An asyncio face on confluent-kafka's Producer: ``await produce(...)`` returns once the broker acked.

A background thread serves delivery callbacks (``poll``) and hands each result to the event loop, so the
sink commits a source offset only after its batch is durably in the next topic.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from inflow.sinks.streams.exceptions import StreamsError


class ProduceError(StreamsError):
    """The broker did not acknowledge a record (after librdkafka's own retries)."""

    retriable = True


class AsyncProducer:
    """One durable producer per sink process (acks=all, idempotent)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="streams-producer-poll", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def produce(self, topic: str, key: bytes, value: bytes) -> None:
        """Produce and wait for the acknowledgement; raises :class:`ProduceError` on a delivery failure."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, err, topic)

        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:  # local queue full: wait for deliveries to drain it
                await asyncio.sleep(0.05)
        await future

    def close(self, timeout: float = 30.0) -> int:
        """Flush what is queued and stop the poll thread; returns the number of records left unsent."""
        self._stop.set()
        self._thread.join(timeout=5)
        return int(self._producer.flush(timeout))


def _settle(future: asyncio.Future[None], err: KafkaError | None, topic: str) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(ProduceError(f"cannot produce to {topic}: {err.str()}"))

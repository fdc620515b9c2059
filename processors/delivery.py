"""Publishing from the agents with a confluent-kafka (librdkafka) producer, flushed once per batch.

faust's own producer (aiokafka, pure Python) costs tens of µs per message; librdkafka a few. An agent
produces a whole batch (lane messages, outputs, changelog writes), then awaits :meth:`BatchProducer.flush`
before the batch's events are acked, so no offset is committed before what it caused is on the broker
(at-least-once). The producer is idempotent with acks=all, so each partition keeps the produce order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from inflow.processors.exceptions import DeliveryError

DeliveryCallback = Callable[[Message], None]
UNASSIGNED = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks the partition


class BatchProducer:
    """A librdkafka producer whose flush runs off the event loop and fails loudly on a lost message."""

    def __init__(self, config: dict[str, Any], flush_timeout_s: float = 60.0) -> None:
        self._producer = Producer(config)
        self._flush_timeout_s = flush_timeout_s
        self._errors: list[KafkaError] = []

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        on_delivered: DeliveryCallback | None = None,
    ) -> None:
        """Queue one message; a full local queue is drained by polling, never dropped."""
        report = self._report if on_delivered is None else self._delivered(on_delivered)
        part = UNASSIGNED if partition is None else partition
        while True:
            try:
                self._producer.produce(topic, value, key, part, report)
                return
            except BufferError:
                self._producer.poll(0.05)

    async def flush(self) -> None:
        """Wait (off the loop) until every queued message is acknowledged by the broker, or raise."""
        remaining = await asyncio.get_running_loop().run_in_executor(
            None, self._producer.flush, self._flush_timeout_s
        )
        errors, self._errors = self._errors, []
        if remaining or errors:
            raise DeliveryError(f"{remaining} messages unflushed, delivery errors: {errors[:3]}")

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(err)

    def _delivered(self, then: DeliveryCallback | None) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._errors.append(err)
            elif then is not None:
                then(msg)

        return report

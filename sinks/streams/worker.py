"""One stream at work: its endpoint, its export loop over the events topic and its retry loop.

Each stream has its own consumer groups (``<prefix>.streams.<id>`` and ``<prefix>.streams.<id>.retry``), so a
slow or dead endpoint only ever holds back its own stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import metrics
from inflow.sinks.streams.control import PauseView, pause_view
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.delivery import Attempt, Endpoint
from inflow.sinks.streams.producer import AsyncProducer, ProduceError
from inflow.sinks.streams.retry import Destination, next_destination, parked_batch

log = logging.getLogger(__name__)


class StreamWorker:
    """Shared parts of a stream's two loops: delivery, parking failed batches, pause state."""

    def __init__(
        self,
        definition: StreamDefinition,
        kafka: KafkaSettings,
        serde: AvroSerde,
        producer: AsyncProducer,
        box: SecretBox | None,
        state_of: Callable[[], Mapping[str, Any] | None],
    ) -> None:
        self.definition = definition
        self.kafka = kafka
        self.serde = serde
        self.producer = producer
        self.endpoint = Endpoint(definition, box)
        self._state_of = state_of
        self._encode = serde.encoder("StreamBatch")
        self.label = definition.id

    def pause_view(self) -> PauseView:
        return pause_view(self.definition, self._state_of())

    async def post(self, body: bytes) -> Attempt:
        """One POST, measured."""
        gauge = metrics.IN_FLIGHT.labels(self.label)
        gauge.inc()
        try:
            attempt = await self.endpoint.post(body)
        finally:
            gauge.dec()
        metrics.REQUEST_LATENCY.labels(self.label).observe(attempt.latency_s)
        if attempt.ok:
            metrics.DELIVERED_REQUESTS.labels(self.label).inc()
        else:
            log.info(
                "stream %s: delivery to %s failed: %s", self.label, self.endpoint.safe_url, attempt.error
            )
        return attempt

    async def park(
        self, previous: dict[str, Any], attempt: Attempt, source_topic: str, failed_tier: int
    ) -> Destination:
        """Put the whole batch in the next retry topic (or the DLQ); returns once the broker acked it."""
        destination = next_destination(self.definition, failed_tier)
        record = parked_batch(self.definition, previous, attempt, source_topic, destination)
        await self.produce(destination.topic, self._encode(record))
        if destination.is_dlq:
            metrics.DEAD_LETTERED_BATCHES.labels(self.label).inc()
            log.warning(
                "stream %s: batch %s dead-lettered after %d attempts",
                self.label,
                record["moe_request_id"],
                record["attempt"],
            )
        else:
            metrics.RETRIED_BATCHES.labels(self.label, destination.topic).inc()
        return destination

    async def produce(self, short_topic: str, value: bytes) -> None:
        """Produce keyed by stream id, retrying a failed acknowledgement until it succeeds or we stop."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(ProduceError),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                await self.producer.produce(self.kafka.topic(short_topic), self.definition.id.encode(), value)

    async def run(self, stop: asyncio.Event) -> None:
        from inflow.sinks.streams.exporter import ExportLoop
        from inflow.sinks.streams.retrier import RetryLoop

        try:
            await asyncio.gather(ExportLoop(self).run(stop), RetryLoop(self).run(stop))
        finally:
            await self.endpoint.close()


def log_task_failure(task: asyncio.Task[Any]) -> None:
    """Done-callback: a delivery task that raised is a bug or a shutdown; say which."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("streams task %s failed: %r", task.get_name(), exc, exc_info=exc)

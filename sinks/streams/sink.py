"""The sink process: every stream definition gets a worker; definitions and pause state follow Kafka live.

Definitions come from the YAML file and from ``control.streams`` (``inflow streams add``); a worker is
started for each new id, restarted when its definition changes and stopped when it disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.control import ControlView, read_control, tail_consumer
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.producer import AsyncProducer
from inflow.sinks.streams.worker import StreamWorker

log = logging.getLogger(__name__)
RECONCILE_EVERY_S = 1.0


@dataclass
class Running:
    definition: StreamDefinition
    stop: asyncio.Event
    task: asyncio.Task[None]


class StreamSink:
    """Runs the workers of every stream (or of ``only`` those ids) until ``stop`` is set."""

    def __init__(
        self,
        kafka: KafkaSettings,
        yaml_definitions: list[StreamDefinition],
        box: SecretBox | None,
        serde: AvroSerde | None = None,
        only: set[str] | None = None,
    ) -> None:
        self.kafka = kafka
        self.box = box
        self.serde = serde or AvroSerde(kafka.schema_registry_url)
        self.view = ControlView(yaml={d.id: d for d in yaml_definitions})
        self.only = only
        self.running: dict[str, Running] = {}

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix="streams-control")
        await loop.run_in_executor(executor, read_control, self.kafka, self.serde, self.view)
        tail = await loop.run_in_executor(executor, tail_consumer, self.kafka)
        producer = AsyncProducer(self.kafka.producer_config())
        try:
            while not stop.is_set():
                self._reconcile(producer)
                for msg in await loop.run_in_executor(executor, tail.consume, 100, RECONCILE_EVERY_S):
                    if not msg.error():
                        self.view.apply(msg, self.serde, self.kafka.topic_prefix)
        finally:
            await self._stop_all()
            await loop.run_in_executor(executor, tail.close)
            executor.shutdown(wait=False)
            left = await loop.run_in_executor(None, producer.close)
            if left:
                log.error(
                    "%d parked batches unacknowledged at shutdown; their offsets stay uncommitted", left
                )

    def _reconcile(self, producer: AsyncProducer) -> None:
        wanted = {k: v for k, v in self.view.definitions().items() if self.only is None or k in self.only}
        for stream_id, running in list(self.running.items()):
            if stream_id not in wanted or wanted[stream_id] != running.definition or running.task.done():
                running.stop.set()
                if running.task.done():
                    del self.running[stream_id]
        for stream_id, definition in wanted.items():
            if stream_id in self.running:
                continue
            worker = StreamWorker(
                definition, self.kafka, self.serde, producer, self.box, self._state_getter(stream_id)
            )
            stop = asyncio.Event()
            task = asyncio.get_running_loop().create_task(worker.run(stop), name=f"stream-{stream_id}")
            task.add_done_callback(_report_exit)
            self.running[stream_id] = Running(definition, stop, task)
            log.info("stream %s: started (%s)", stream_id, definition.url.split("?", 1)[0])

    def _state_getter(self, stream_id: str) -> Callable[[], dict[str, Any] | None]:
        return lambda: self.view.states.get(stream_id)

    async def _stop_all(self) -> None:
        for running in self.running.values():
            running.stop.set()
        tasks = [r.task for r in self.running.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()


def _report_exit(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped on an error; restarting it", task.get_name(), exc_info=task.exception())


async def serve(sink: StreamSink) -> None:
    """Run until SIGTERM or SIGINT, then finish in-flight requests, commit and return (exit code 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await sink.run(stop)

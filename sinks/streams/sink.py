"""The sink process: every stream definition gets a worker; definitions and pause state follow Kafka live.

Definitions come from the YAML file and from ``control.streams`` (``inflow streams add``); a worker is
started for each new id, restarted when its definition changes or it stopped on an error, and stopped when
it disappears. Every stream parks its failed batches through one shared producer; a fatal producer error
stops the whole sink with its reason.

A stream that cannot run as defined is *held* (not started; its events wait in Kafka, nothing is lost or
committed) with its reason logged and counted in ``inflow_streams_held``, while every other stream keeps
delivering: its secrets do not decrypt (another INFLOW_SECRET_KEY, a corrupt record), a stored value is
refused (CR/LF in a header), its URL names a refused address, its workspace is disabled, or the schema
registry cannot be reached. It starts by itself once the cause is gone (checked every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.kafka.producer import KafkaProducer
from inflow.observability.health import Heartbeat
from inflow.schemas.exceptions import RegistryError
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import metrics
from inflow.sinks.streams.control import ControlView, control_view
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.destinations.registry import open_destination
from inflow.sinks.streams.exceptions import StreamDefinitionError
from inflow.sinks.streams.exporter import ExportLoop
from inflow.sinks.streams.retrier import RetryLoop
from inflow.sinks.streams.retry import DLQ_TOPIC, TIER_TOPICS
from inflow.sinks.streams.settings import SinkSettings
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
        settings: SinkSettings | None = None,
    ) -> None:
        self.kafka = kafka
        self.box = box
        self.serde = serde or AvroSerde(kafka.schema_registry_url)
        self.settings = settings or SinkSettings()
        self.view = ControlView(yaml={d.id: d for d in yaml_definitions})
        self.only = only
        self.running: dict[str, Running] = {}
        self.held: dict[str, str] = {}  # stream id -> why it does not run
        self.heartbeat = Heartbeat(60.0)  # /health: the reconcile loop turns every second

    def streams_check(self) -> tuple[bool, str]:
        """/health detail: streams running and held (a held stream is its definition's fault, not the
        process's: the sink stays healthy)."""
        return True, f"{len(self.running)} running, {len(self.held)} held"

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix="streams-control")
        # Control records are read on the executor and folded into the view here, on the event loop, so the
        # workers never see the view change under them.
        arrived: list[Message] = []
        control = control_view(self.kafka, self.serde, self.view, apply=arrived.append)
        try:
            await loop.run_in_executor(executor, lambda: control.open().catch_up())
            self._fold(arrived)
        except BaseException:
            await loop.run_in_executor(executor, control.close)
            executor.shutdown(wait=False)
            raise
        # Each parking topic's size limit is looked up once here (in a thread, not on the event loop), and
        # the producer's batches kept under the smallest.
        parking = [self.kafka.topic(short) for short in (*TIER_TOPICS, DLQ_TOPIC)]
        producer = await loop.run_in_executor(
            None, lambda: KafkaProducer(self.kafka, name="streams", background=True, batch_topics=parking)
        )
        try:
            while not stop.is_set():
                if producer.fatal is not None:
                    raise producer.fatal
                self.heartbeat.beat()
                await self._reconcile(producer)
                await loop.run_in_executor(executor, control.pump, RECONCILE_EVERY_S)
                self._fold(arrived)
        finally:
            await self._stop_all()
            await loop.run_in_executor(executor, control.close)
            executor.shutdown(wait=False)
            left = await loop.run_in_executor(None, producer.close)
            if left:
                log.error(
                    "%d parked batches unacknowledged at shutdown; their offsets stay uncommitted", left
                )

    def _fold(self, arrived: list[Message]) -> None:
        if self.view.unresolved:
            self.view.retry_unresolved(self.serde, self.kafka.topic_prefix)
        for msg in arrived:
            self.view.apply(msg, self.serde, self.kafka.topic_prefix)
        arrived.clear()

    def _selected(self, stream_id: str) -> bool:
        return self.only is None or stream_id in self.only

    async def _reconcile(self, producer: KafkaProducer) -> None:
        wanted = {k: v for k, v in self.view.definitions().items() if self._selected(k)}
        holds = {k: v for k, v in self.view.invalid_stored().items() if self._selected(k)}
        for stream_id, definition in wanted.items():
            workspace = definition.workspace_id
            if workspace is not None and workspace in self.view.disabled_workspaces:
                holds[stream_id] = f"workspace {workspace} disabled"
        for stream_id, running in list(self.running.items()):
            if (
                stream_id not in wanted
                or stream_id in holds
                or wanted[stream_id] != running.definition
                or running.task.done()
            ):
                running.stop.set()
                if running.task.done():
                    del self.running[stream_id]
        for stream_id, definition in wanted.items():
            if stream_id in self.running or stream_id in holds:
                continue
            reason = await self._start(stream_id, definition, producer)
            if reason is not None:
                holds[stream_id] = reason
        self._report_holds(holds)

    async def _start(
        self, stream_id: str, definition: StreamDefinition, producer: KafkaProducer
    ) -> str | None:
        """Start the stream's worker; returns why it cannot start (it is then held), else None."""
        try:
            destination = open_destination(definition, self.box, self.settings)
        except StreamDefinitionError as exc:
            return str(exc)
        try:
            # With a schema registry, parking needs the StreamBatch schema registered: an unreachable
            # registry holds the stream (and is tried again), it never stops the sink.
            await asyncio.get_running_loop().run_in_executor(None, self.serde.encoder, "StreamBatch")
        except RegistryError as exc:
            await destination.close()
            return f"schema registry: {exc}"
        worker = StreamWorker(
            definition, self.kafka, self.serde, producer, destination, self._state_getter(stream_id)
        )
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(run_stream(worker, stop), name=f"stream-{stream_id}")
        task.add_done_callback(_report_exit)
        self.running[stream_id] = Running(definition, stop, task)
        log.info("stream %s: started (%s)", stream_id, destination.safe_name)
        return None

    def _report_holds(self, holds: dict[str, str]) -> None:
        for stream_id, reason in holds.items():
            if self.held.get(stream_id) != reason:
                log.warning("stream %s: held, not delivering: %s", stream_id, reason)
                metrics.HELD.labels(stream_id).set(1)
        for stream_id in self.held.keys() - holds.keys():
            log.info("stream %s: no longer held", stream_id)
            metrics.HELD.labels(stream_id).set(0)
        self.held = holds

    def _state_getter(self, stream_id: str) -> Callable[[], dict[str, Any] | None]:
        return lambda: self.view.states.get(stream_id)

    async def _stop_all(self) -> None:
        for running in self.running.values():
            running.stop.set()
        tasks = [r.task for r in self.running.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()


async def run_stream(worker: StreamWorker, stop: asyncio.Event) -> None:
    """A stream's export loop and retry loop, side by side until ``stop``; then its destination closes.

    A loop that fails records its error on the worker, so the other loop stops too (both finish their
    in-flight work and commit what is done) before the error is raised."""

    async def guarded(run: Coroutine[Any, Any, None]) -> None:
        try:
            await run
        except BaseException as exc:
            if worker.failure is None:
                worker.failure = exc
            raise

    try:
        results = await asyncio.gather(
            guarded(ExportLoop(worker).run(stop)),
            guarded(RetryLoop(worker).run(stop)),
            return_exceptions=True,
        )
    finally:
        await worker.destination.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result


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

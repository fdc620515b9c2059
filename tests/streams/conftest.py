"""Fixtures of the Streams sink tests: real HTTP endpoints, EnrichedEvent producers, an in-process sink."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from inflow.cli import app
from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_producer
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import cli as streams_cli
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.settings import SinkSettings
from inflow.sinks.streams.sink import StreamSink
from tests.streams.endpoint import RecordingEndpoint


def enriched(**overrides: Any) -> dict[str, Any]:
    """A user-action EnrichedEvent; override any field."""
    now = datetime.now(UTC)
    uid = overrides.pop("uid", "u-1")
    event = {
        "workspace_id": "W1",
        "event_uuid": str(uuid.uuid4()),
        "event_name": "Purchase",
        "event_code": "Purchase",
        "event_time": 1580967474,
        "event_type": "USER_ACTION_EVENT",
        "event_source": "MOENGAGE",
        "uid": uid,
        "customer_id": "cust-1",
        "event_attributes_json": '{"amount":10}',
        "user_attributes_json": f'{{"moengage_user_id":"{uid}","city":"Paris"}}',
        "device_attributes_json": '{"moengage_device_id":"d-1","os":"android"}',
        "push_id": None,
        "email_id": None,
        "mobile_number": None,
        "platform": "ANDROID",
        "received_at": now,
        "ingested_at": now,
    }
    event.update(overrides)
    return event


class EventWriter:
    """Produces EnrichedEvents into the test's events topic, keyed workspace + uid."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.serde = AvroSerde()
        self.producer = new_producer(kafka)

    def write(self, events: list[dict[str, Any]]) -> list[str]:
        topic = self.kafka.topic("events")
        encode = self.serde.encoder("EnrichedEvent")
        for e in events:
            self.producer.produce(topic, key=f"{e['workspace_id']}:{e['uid']}".encode(), value=encode(e))
            self.producer.poll(0)
        assert self.producer.flush(30) == 0
        return [e["event_uuid"] for e in events]

    def write_raw(self, value: bytes, key: bytes = b"W1:bad") -> None:
        self.producer.produce(self.kafka.topic("events"), key=key, value=value)
        assert self.producer.flush(30) == 0


class SinkThread:
    """The real sink (StreamSink) on its own event loop in a background thread."""

    def __init__(
        self,
        kafka: KafkaSettings,
        definitions: list[StreamDefinition],
        box: SecretBox | None,
        serde: AvroSerde | None = None,
        settings: SinkSettings | None = None,
    ) -> None:
        self.sink = StreamSink(kafka, definitions, box, serde=serde, settings=settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await self.sink.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> SinkThread:
        self._thread.start()
        assert self._started.wait(30)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "sink did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def box(tmp_path) -> SecretBox:
    from cryptography.fernet import Fernet

    return SecretBox(Fernet.generate_key())


@pytest.fixture
def endpoint_factory() -> Iterator[Callable[..., RecordingEndpoint]]:
    made: list[RecordingEndpoint] = []

    def make(**kwargs: Any) -> RecordingEndpoint:
        ep = RecordingEndpoint(**kwargs).start()
        made.append(ep)
        return ep

    yield make
    for ep in made:
        ep.stop()


@pytest.fixture
def writer(catalogue_topics: KafkaSettings) -> Iterator[EventWriter]:
    made = EventWriter(catalogue_topics)
    yield made
    made.producer.flush(10)
    del made.producer  # librdkafka's threads end with the last reference, before the broker does


@pytest.fixture
def sink_factory(catalogue_topics: KafkaSettings, box: SecretBox) -> Iterator[Callable[..., SinkThread]]:
    made: list[SinkThread] = []

    def make(*definitions: StreamDefinition, **options: Any) -> SinkThread:
        runner = SinkThread(catalogue_topics, list(definitions), box, **options).start()
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.stop()


def stream(url: str, **kwargs: Any) -> StreamDefinition:
    """A definition with test-friendly defaults: short linger and retry delays, and a start in the past so
    the events a test wrote before starting its sink are sent (``start_at=None``: from the end)."""
    data = {
        "id": "s1",
        "url": url,
        "app_name": "Test App",
        "linger_s": 0.2,
        "retry_delays_s": [1, 1, 1],
        "start_at": "2000-01-01T00:00:00Z",
    } | kwargs
    return StreamDefinition.model_validate(data)


@pytest.fixture
def cli_env(catalogue_topics, tmp_path):
    return {
        "KAFKA_BOOTSTRAP_SERVERS": str(catalogue_topics.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": catalogue_topics.topic_prefix,
        "INFLOW_HOME": str(tmp_path / "home"),
        "INFLOW_CONFIG": "",
        "COLUMNS": "250",
        "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
    }


def invoke(env, *args: str, ok: bool = True):
    env = {k: v for k, v in env.items() if v != ""}
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


if not any(getattr(g, "name", None) == "streams" for g in app.registered_groups):
    streams_cli.register(app)

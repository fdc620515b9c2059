"""Session-wide real services and factory fixtures.

One Kafka broker and one S3 server per test run, started through the same code as ``inflow kafka start`` /
``inflow s3 start`` (or taken from ``KAFKA_BOOTSTRAP_SERVERS`` / ``S3_ENDPOINT_URL``, or from testcontainers
when ``INFLOW_TEST_DOCKER=1`` and a Docker engine answers). Each test gets fresh topics, groups and prefixes.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from inflow.config.settings import KafkaSettings, LocalKafkaSettings, LocalS3Settings, S3Settings
from inflow.config.topics import create_topics, load_catalogue
from inflow.local.kafka import LocalKafka
from inflow.local.process import free_port, free_ports

S3_ACCESS_KEY = "inflow-test"
S3_SECRET_KEY = "inflow-test-secret-key"


def _docker_requested() -> bool:
    return os.environ.get("INFLOW_TEST_DOCKER") == "1"


@pytest.fixture(scope="session")
def services_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inflow-services")


@pytest.fixture(scope="session")
def kafka_bootstrap(services_home: Path) -> Iterator[str]:
    """A real broker for the whole run."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_requested():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    cache = Path(os.environ.get("INFLOW_CACHE_DIR", Path.home() / ".cache" / "inflow"))
    ports = free_ports(2)  # two at once: never the same port twice
    local = LocalKafka(services_home, cache, LocalKafkaSettings(port=ports[0], controller_port=ports[1]))
    local.start()
    try:
        yield local.bootstrap_servers
    finally:
        # Let clients that tests dropped shut down while the broker still answers, so librdkafka does
        # not log reconnect attempts to a stopped broker after the summary.
        gc.collect()
        local.stop()
        assert local.process.pid() is None


@pytest.fixture(scope="session")
def s3_settings(services_home: Path) -> Iterator[S3Settings]:
    """A real S3 server for the whole run, with an access key and secret that it enforces."""
    if os.environ.get("S3_ENDPOINT_URL"):
        yield S3Settings()
        return
    if _docker_requested():
        from testcontainers.minio import MinioContainer

        with MinioContainer(access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY) as minio:
            host = minio.get_container_host_ip()
            port = minio.get_exposed_port(9000)
            yield S3Settings(
                endpoint_url=f"http://{host}:{port}",
                access_key_id=S3_ACCESS_KEY,
                secret_access_key=SecretStr(S3_SECRET_KEY),
            )
        return
    from inflow.local.s3 import LocalS3

    base = S3Settings(access_key_id=S3_ACCESS_KEY, secret_access_key=SecretStr(S3_SECRET_KEY))
    local = LocalS3(services_home, base, LocalS3Settings(port=free_port()))
    endpoint = local.start()
    try:
        yield base.model_copy(update={"endpoint_url": endpoint})
    finally:
        local.stop()


@pytest.fixture
def unique() -> str:
    """A short unique token for names in one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def _drop_test_topics(request: pytest.FixtureRequest, unique: str) -> Iterator[None]:
    """Delete every topic named with this test's token afterwards, so the shared broker stays small."""
    yield
    if "kafka_bootstrap" not in request.fixturenames:
        return
    admin = AdminClient({"bootstrap.servers": request.getfixturevalue("kafka_bootstrap")})
    names = [t for t in admin.list_topics(timeout=10).topics if unique in t]
    if names:
        for future in admin.delete_topics(names, operation_timeout=0, request_timeout=30).values():
            future.exception()  # already gone is fine; we only wait for the request to finish


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, unique: str) -> KafkaSettings:
    """Settings with a topic prefix of this test's own, so catalogue topics never collide across tests."""
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{unique}")


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


TEST_PARTITIONS = 6


def small_catalogue(prefix: str, partitions: int = TEST_PARTITIONS) -> list[Any]:
    """The catalogue with at most ``partitions`` per topic: tests share one broker, and the production
    counts (24 for ingest.records, with five changelogs of as many) only slow topic creation down."""
    return [
        replace(
            spec, entry=spec.entry.model_copy(update={"partitions": min(spec.entry.partitions, partitions)})
        )
        for spec in load_catalogue(prefix)
    ]


@pytest.fixture
def catalogue_topics(kafka_settings: KafkaSettings, admin: AdminClient) -> KafkaSettings:
    """Create the whole catalogue under this test's prefix; returns the settings that name them."""
    create_topics(admin, small_catalogue(kafka_settings.topic_prefix))
    return kafka_settings


@pytest.fixture
def topic_factory(admin: AdminClient, unique: str) -> Callable[..., str]:
    """Create a topic of this test's own: ``topic_factory(partitions=3, config={...})``."""
    counter = iter(range(1_000_000))

    def make(name: str | None = None, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        topic = name or f"test-{unique}-{next(counter)}"
        futures = admin.create_topics(
            [NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=30
        )
        futures[topic].result()
        return topic

    return make


@pytest.fixture
def producer_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Producer]]:
    """Durable producers (acks=all, idempotent), flushed at the end of the test."""
    made: list[Producer] = []

    def make(**overrides: Any) -> Producer:
        conf = {"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True} | overrides
        producer = Producer(conf)
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.flush(10)


@pytest.fixture
def consumer_factory(kafka_bootstrap: str, unique: str) -> Iterator[Callable[..., Consumer]]:
    """Consumers reading from the earliest offset, each in a fresh group unless one is given."""
    made: list[Consumer] = []
    counter = iter(range(1_000_000))

    def make(topics: list[str], group_id: str | None = None, **overrides: Any) -> Consumer:
        conf = {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group_id or f"test-{unique}-{next(counter)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        } | overrides
        consumer = Consumer(conf)
        consumer.subscribe(topics)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


@pytest.fixture
def service_env(kafka_settings: KafkaSettings, s3_settings: S3Settings, tmp_path: Path) -> dict[str, str]:
    """Environment for component subprocesses started by a test (``inflow gateway`` and friends)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))}
    env |= {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka_settings.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "S3_ENDPOINT_URL": str(s3_settings.endpoint_url),
        "S3_ACCESS_KEY_ID": s3_settings.access_key_id,
        "S3_SECRET_ACCESS_KEY": s3_settings.secret_access_key.get_secret_value(),
        "S3_REGION": s3_settings.region,
        "INFLOW_HOME": str(tmp_path / "home"),
        # Metrics and health servers on free ports: tests run several components at once.
        "INFLOW_POLLER_METRICS_PORT": "0",
        "INFLOW_WORKER_METRICS_PORT": "0",
        "INFLOW_SINK_METRICS_PORT": "0",
        # Pollers started without a worker end a run when its rows are written; the tests of the
        # created / updated split (which need the workers' outcomes) turn tracking on themselves.
        "INFLOW_POLLER_TRACK_OUTCOMES": "false",
        "PYTHONUNBUFFERED": "1",
    }
    return env

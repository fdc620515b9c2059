"""Every client of the Kafka layer logs in to a broker that requires SASL/PLAIN (a second local broker,
started for this module only); a wrong password is a clear typed error, never a hang."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from inflow.config.settings import KafkaSettings, LocalKafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin
from inflow.kafka.consumer import BatchConsumer
from inflow.kafka.errors import KafkaFault
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.local.kafka import LocalKafka
from inflow.local.process import free_ports

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) or os.environ.get("INFLOW_TEST_DOCKER") == "1",
    reason="needs the local broker code (the session broker comes from elsewhere in this run)",
)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    home = tmp_path_factory.mktemp("sasl-broker")
    cache = Path(os.environ.get("INFLOW_CACHE_DIR", Path.home() / ".cache" / "inflow"))
    port, controller_port = free_ports(2)  # two at once: never the same port twice
    settings = LocalKafkaSettings(
        port=port,
        controller_port=controller_port,
        heap="384m",
        sasl_username="inflow",
        sasl_password=SecretStr("inflow-sasl-secret"),
    )
    broker = LocalKafka(home, cache, settings)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_admin_producer_view_and_consumer_log_in_with_sasl_plain(
    sasl_broker: LocalKafka, unique: str
) -> None:
    kafka = sasl_broker.client_settings().model_copy(update={"topic_prefix": f"s{unique}"})
    assert kafka.security_protocol == "SASL_PLAINTEXT"
    report = create_topics(new_admin(kafka), load_catalogue(kafka.topic_prefix))
    assert kafka.topic("control.workspaces") in report.created

    producer = KafkaProducer(kafka, name="sasl")
    try:
        written = producer.publish_and_wait(kafka.topic("control.workspaces"), b"ws", b"credential")
    finally:
        producer.close()
    assert written.error() is None

    view = CompactedView.read(kafka, kafka.topic("control.workspaces"))
    assert view.data == {"ws": b"credential"}

    async def consume() -> list[bytes | None]:
        consumer = BatchConsumer(kafka, f"g-{unique}", [kafka.topic("control.workspaces")], name="sasl")
        try:
            for _ in range(120):
                batch = await consumer.consume(10, 0.5)
                if batch:
                    return [m.value() for m in batch]
            return []
        finally:
            await consumer.close()

    assert asyncio.run(consume()) == [b"credential"]


def test_a_wrong_password_is_a_typed_error(sasl_broker: LocalKafka, unique: str) -> None:
    wrong = sasl_broker.client_settings().model_copy(
        update={"sasl_password": SecretStr("not-the-password"), "topic_prefix": f"s{unique}"}
    )
    producer = KafkaProducer(wrong, name="sasl", topic_limits=False, **{"message.timeout.ms": 3000})
    try:
        producer.produce("anything", b"v")
        with pytest.raises(KafkaFault):
            producer.flush(30)
        assert producer.last_error is not None and "uthenticat" in producer.last_error
    finally:
        producer.close(1)
    with pytest.raises(KafkaFault):
        CompactedView.read(wrong, "anything", timeout=3)


def test_plaintext_clients_are_refused_by_the_sasl_listener(sasl_broker: LocalKafka) -> None:
    plain = KafkaSettings(bootstrap_servers=sasl_broker.bootstrap_servers)
    with pytest.raises(KafkaFault):
        CompactedView.read(plain, "anything", timeout=3)

"""Client settings built once from KafkaSettings for every librdkafka client (pure)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import consumer_config, producer_config


def test_producers_are_durable_and_consumers_commit_by_hand() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    conf = producer_config(kafka, **{"linger.ms": 0})
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True and conf["linger.ms"] == 0
    consumer = consumer_config(kafka, "g")
    assert consumer["group.id"] == "g" and consumer["enable.auto.commit"] is False


def test_sasl_ssl_settings_reach_every_librdkafka_client(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="inflow",
        sasl_password=SecretStr("s3cret"),
        ssl_ca_location=tmp_path / "ca.pem",
        socket_timeout_ms=5000,
    )
    for conf in (producer_config(kafka), consumer_config(kafka, "g")):
        assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["sasl.username"] == "inflow" and conf["sasl.password"] == "s3cret"
        assert conf["ssl.ca.location"] == str(tmp_path / "ca.pem") and conf["socket.timeout.ms"] == 5000

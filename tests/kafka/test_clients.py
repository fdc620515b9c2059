"""Client settings built once from KafkaSettings for every librdkafka client (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from inflow.config.settings import KafkaSettings, hostport, is_loopback
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


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        (None, "none"),  # the embedded broker
        ("127.0.0.1:9092", "none"),
        ("localhost:9092,127.0.0.2:9093", "none"),
        ("[::1]:9092", "none"),
        ("kafka-0.kafka:9092", "lz4"),  # a name may be another machine (no connection is made here)
        ("127.0.0.1:9092,10.0.0.5:9092", "lz4"),
        ("[2001:db8::1]:9092", "lz4"),
    ],
)
def test_compression_is_lz4_over_a_network_and_none_on_loopback(servers: str | None, expected: str) -> None:
    assert producer_config(KafkaSettings(bootstrap_servers=servers))["compression.type"] == expected
    chosen = KafkaSettings(bootstrap_servers=servers, compression="zstd")
    assert producer_config(chosen)["compression.type"] == "zstd"


def test_hostport_reads_names_addresses_and_bracketed_ipv6() -> None:
    assert hostport("broker:9092") == ("broker", "9092")
    assert hostport("[::1]:9092") == ("::1", "9092")
    assert hostport(" broker ") == ("broker", "")
    assert hostport("::1") == ("::1", "")
    assert is_loopback("LOCALHOST.") and is_loopback("127.9.9.9") and not is_loopback("localhost.example")

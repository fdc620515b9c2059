"""Typed settings, one object per external system; the environment is read here and nowhere else.

Library code takes these objects as arguments. ``load_settings()`` is the one entry point used by the CLI.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def hostport(server: str) -> tuple[str, str]:
    """``host:port`` (IPv6 in brackets, or a host alone) as (host, port); port may be empty."""
    server = server.strip()
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, rest.removeprefix(":")
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, port
    return server, ""  # a host alone (or a bare IPv6 address)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); any other name may be another machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KafkaSettings(BaseSettings):
    """The Kafka cluster to use. When ``bootstrap_servers`` is unset, the local broker is started."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="forbid")

    bootstrap_servers: str | None = Field(None, description="host:port list; unset starts the local broker")
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = Field(None, description="CA bundle that signs the brokers' certificates")
    ssl_certificate_location: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_key_location: Path | None = Field(None, description="client private key (mutual TLS)")
    socket_timeout_ms: int = Field(60_000, gt=0, description="librdkafka socket.timeout.ms of every client")
    topic_prefix: str = Field("inflow", description="prefix of every topic name")
    replication_factor: int | None = Field(
        None,
        gt=0,
        description="replication of created topics (catalogue value when unset; 3 in production)",
    )
    min_insync_replicas: int | None = Field(
        None,
        gt=0,
        description="min.insync.replicas of created topics (broker default when unset; 2 in production)",
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry; when set, values use Confluent framing"
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] | None = Field(
        None,
        description="producers' compression.type; unset: 'none' when every bootstrap server is on this "
        "machine (loopback: nothing to save on the wire, ≈ 8 µs of CPU per event to spend), else 'lz4'",
    )

    def client_config(self) -> dict[str, Any]:
        """librdkafka ``dot.case`` keys shared by producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers or "127.0.0.1:9092",
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if path is not None:
                conf[key] = str(path)
        if self.socket_timeout_ms != 60_000:
            conf["socket.timeout.ms"] = self.socket_timeout_ms
        return conf

    def loopback_only(self) -> bool:
        """Every bootstrap server is on this machine (the embedded broker's default included)."""
        hosts = [hostport(server)[0] for server in (self.bootstrap_servers or "127.0.0.1:9092").split(",")]
        return all(is_loopback(host) for host in hosts)

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Durable producer: acks=all and idempotence, batched for throughput."""
        conf = self.client_config() | {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": self.compression or ("none" if self.loopback_only() else "lz4"),
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
        return conf | overrides

    def consumer_config(self, group_id: str, **overrides: Any) -> dict[str, Any]:
        """Consumer with manual commits: callers commit only what is safely handled."""
        conf = self.client_config() | {
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
        return conf | overrides

    def topic(self, short_name: str) -> str:
        """Full topic name for a catalogue entry, e.g. ``ingest.users`` -> ``inflow.ingest.users``."""
        return f"{self.topic_prefix}.{short_name}"


class LocalKafkaSettings(BaseSettings):
    """The single-node KRaft broker that ``inflow kafka start`` runs from Maven Central jars."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_KAFKA_", extra="forbid")

    version: str = "4.1.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"
    start_timeout_s: float = 120.0
    sasl_username: str | None = Field(
        None, description="with a password: clients must log in with SASL/PLAIN (SASL_PLAINTEXT listener)"
    )
    sasl_password: SecretStr | None = None


class S3Settings(BaseSettings):
    """The S3 endpoint imports read from. When ``endpoint_url`` is unset, the local SeaweedFS is started."""

    model_config = SettingsConfigDict(env_prefix="S3_", extra="forbid")

    endpoint_url: str | None = None
    access_key_id: str = "inflow"
    secret_access_key: SecretStr = SecretStr("inflow-local-secret")
    region: str = "us-east-1"


class LocalS3Settings(BaseSettings):
    """The SeaweedFS S3 gateway that ``inflow s3 start`` runs."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_S3_", extra="forbid")

    port: int = 8333
    start_timeout_s: float = 60.0


class PathSettings(BaseSettings):
    """Where local state (broker data, pid files, logs) and the jar cache live."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_", extra="forbid")

    home: Path = Path(".inflow")
    cache_dir: Path = Path.home() / ".cache" / "inflow"
    config: Path | None = Field(None, description="YAML file of workspaces, imports and streams")
    secret_key: SecretStr | None = Field(
        None, description="Fernet key that encrypts secrets at rest; derived per home when unset"
    )


class ObservabilitySettings(BaseSettings):
    """Where each component serves ``/metrics`` and ``/health``, and how every component logs.

    The gateway serves both beside its API (``INFLOW_GATEWAY_PORT``); the other components on ports of
    their own, on ``metrics_host`` only.
    """

    model_config = SettingsConfigDict(env_prefix="INFLOW_", extra="ignore")

    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per log line (time, level, component, logger, message)"
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics and health servers bind")
    poller_metrics_port: int = Field(9101, ge=0, le=65535, description="the poller's /metrics and /health")
    worker_metrics_port: int = Field(9102, ge=0, le=65535, description="the worker's /metrics and /health")
    sink_metrics_port: int = Field(9103, ge=0, le=65535, description="the sink's /metrics and /health")
    lag_interval_s: float = Field(15.0, gt=0, description="how often consumer lag is read from the broker")

    def metrics_port(self, component: str) -> int:
        """The port of ``poller``, ``worker`` or ``sink``."""
        port: int = getattr(self, f"{component}_metrics_port")
        return port

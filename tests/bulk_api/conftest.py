"""Gateways for the Bulk Import API tests: in-process (real HTTP on loopback, real Kafka) or subprocesses."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka import Consumer

from inflow.config.file import RateLimits, WorkspaceConfig
from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from inflow.producers.bulk_api.gateway import Gateway
from inflow.producers.bulk_api.server import serve
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.schemas.packs import unpack
from inflow.schemas.serde import AvroSerde
from tests.support import wait_for

WS = "WS1"
KEY = "ws1-data-api-key"
IR_WS = "WSIR"
IR_KEY = "wsir-data-api-key"
NOKEY_WS = "WSNOKEY"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def seed_workspaces(users: int = 10_000, events: int = 30_000) -> list[WorkspaceConfig]:
    return [
        WorkspaceConfig(
            id=WS, api_key=KEY, rate_limits=RateLimits(users_per_minute=users, events_per_minute=events)
        ),
        WorkspaceConfig(id=IR_WS, api_key=IR_KEY, identifiers=["customer_id", "moe_mobile", "email"]),
        WorkspaceConfig(id=NOKEY_WS),
    ]


@dataclass
class RunningGateway:
    """An in-process gateway served on a loopback port by a thread of its own."""

    gateway: Gateway
    url: str
    session: requests.Session = field(default_factory=requests.Session)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        auth: tuple[str, str] | None = (WS, KEY),
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        hdrs = {"Content-Type": "application/json"}
        if auth is not None:
            hdrs["Authorization"] = basic(*auth)
        hdrs |= headers or {}
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        if data is None and body is not None:
            import json

            data = json.dumps(body).encode()
        return self.session.post(self.url + path, data=data, headers=hdrs, timeout=60)


def start_in_process(kafka: KafkaSettings, settings: GatewaySettings, seeds: list[WorkspaceConfig]) -> tuple:
    gateway = Gateway(kafka, settings, seeds)
    gateway.start()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(serve(gateway, stop, announce=False)), daemon=True
    )
    thread.start()

    def shutdown() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        gateway.stop()

    return gateway, shutdown


@pytest.fixture
def gateway_factory(catalogue_topics: KafkaSettings) -> Iterator[Callable[..., RunningGateway]]:
    """``gateway_factory(kafka=None, seeds=None, **settings)`` starts a gateway; all stop at the end."""
    stops: list[Callable[[], None]] = []

    def make(
        kafka: KafkaSettings | None = None,
        seeds: list[WorkspaceConfig] | None = None,
        wait_views: bool = True,
        **overrides: Any,
    ) -> RunningGateway:
        port = free_port()
        settings = GatewaySettings(port=port, **overrides)
        gateway, shutdown = start_in_process(
            kafka or catalogue_topics, settings, seed_workspaces() if seeds is None else seeds
        )
        stops.append(shutdown)
        running = RunningGateway(gateway, f"http://127.0.0.1:{port}")
        wait_for(lambda: _answers(running.url), 30, what="gateway to listen")
        if wait_views:
            wait_for(lambda: all(gateway.views().values()), 60, what="gateway views to catch up")
        return running

    yield make
    for stop in reversed(stops):
        stop()


def _answers(url: str) -> bool:
    try:
        requests.get(url + "/health", timeout=2)
        return True
    except requests.ConnectionError:
        return False


@pytest.fixture
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()


@pytest.fixture
def serde() -> AvroSerde:
    return AvroSerde()


@pytest.fixture
def read_topic(consumer_factory: Callable[..., Consumer], catalogue_topics: KafkaSettings, serde: AvroSerde):
    """``read_topic("profiles", n)`` -> list of (key, record) decoded from the topic of this test.

    ``ingest.users``, ``ingest.devices`` and ``ingest.events`` name the records of one type on
    ``ingest.records`` (where the gateway writes all three, in request order)."""

    def read(short: str, n: int, kafka: KafkaSettings | None = None) -> list[tuple[bytes, dict[str, Any]]]:
        kind = RECORD_OF.get(short)
        consumer = consumer_factory([(kafka or catalogue_topics).topic("ingest.records" if kind else short)])
        found: list[tuple[bytes, dict[str, Any]]] = []
        deadline = time.monotonic() + 60
        while len(found) < n and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.5):
                assert not m.error(), m.error()
                for item in unpack(serde, m.value()):  # a request's records of one user come as a pack
                    name, record = serde.decode(item)
                    if kind is None or name == kind:
                        found.append((m.key(), record))
        assert len(found) >= n, f"{len(found)} of {n} records of {short}"
        return found[:n]

    return read


RECORD_OF = {"ingest.users": "UserUpsert", "ingest.devices": "DeviceUpsert", "ingest.events": "EventRecord"}


def record_names(messages: list[Any]) -> list[str]:
    """The Avro record name of each record of the messages (what kind of ingest record it is), packs
    unpacked."""
    serde = AvroSerde()
    return [serde.decode(item)[0] for m in messages for item in unpack(serde, m.value())]


# --- subprocess gateways -------------------------------------------------------------------------------
@dataclass
class GatewayProcess:
    proc: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)


def gateway_env(kafka: KafkaSettings, home: Path, config: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))}
    env |= {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "INFLOW_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    if config is not None:
        env["INFLOW_CONFIG"] = str(config)
    return env | extra


def write_config(path: Path, users: int = 10_000, events: int = 30_000) -> Path:
    path.write_text(
        f"workspaces:\n  - id: {WS}\n    api_key: {KEY}\n"
        f"    rate_limits: {{users_per_minute: {users}, events_per_minute: {events}}}\n"
    )
    return path


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start ``inflow gateway`` subprocesses; each is SIGTERMed at the end of the test."""
    made: list[GatewayProcess] = []

    def make(env: dict[str, str], name: str = "gw") -> GatewayProcess:
        port = free_port()
        log = tmp_path / f"{name}-{port}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "inflow.cli", "gateway", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        running = GatewayProcess(proc, f"http://127.0.0.1:{port}", log)
        made.append(running)

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
            try:
                return requests.get(running.url + "/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(healthy, 90, what=f"gateway {name} to be healthy")
        return running

    yield make
    for running in made:
        if running.proc.poll() is None:
            running.stop()


@pytest.fixture(scope="module")
def shared_kafka(kafka_bootstrap: str) -> KafkaSettings:
    """A catalogue of this module's own, for a gateway shared by tests that do not read the topics."""
    from confluent_kafka.admin import AdminClient

    from inflow.config.topics import create_topics, load_catalogue

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"m{uuid.uuid4().hex[:10]}")
    create_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), load_catalogue(kafka.topic_prefix))
    return kafka


@pytest.fixture(scope="module")
def shared_gw(shared_kafka: KafkaSettings) -> Iterator[RunningGateway]:
    port = free_port()
    gateway, shutdown = start_in_process(shared_kafka, GatewaySettings(port=port), seed_workspaces())
    running = RunningGateway(gateway, f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: _answers(running.url), 30, what="gateway to listen")
        wait_for(lambda: all(gateway.views().values()), 60, what="gateway views to catch up")
        yield running
    finally:
        shutdown()

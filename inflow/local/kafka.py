"""A single-node Apache Kafka (KRaft, broker+controller) run from Maven Central jars with the machine's Java.

The jars are fetched once with Maven into ``<cache>/kafka-<version>/libs`` and reused; the storage directory
is formatted once; the process is tracked by pid file and stopped by its process id.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

from pydantic import SecretStr

from inflow.config.settings import KafkaSettings, LocalKafkaSettings
from inflow.errors import LocalServiceError
from inflow.kafka.clients import new_admin
from inflow.local.process import ManagedProcess, port_open

POM = Path(__file__).with_name("kafka-pom.xml")

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="out" target="SYSTEM_OUT">
    <PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers>
    <Logger name="kafka" level="WARN"/><Logger name="org.apache.kafka" level="WARN"/>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Root level="WARN"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


def fetch_jars(cache_dir: Path, version: str) -> Path:
    """Download the broker jars with Maven unless this version is already cached; return the libs dir."""
    libs = cache_dir / f"kafka-{version}" / "libs"
    marker = libs.parent / "complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalServiceError("Maven (mvn) is required to fetch the Kafka broker jars; install Maven")
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalServiceError(
            f"fetching Kafka {version} with Maven failed:\n{result.stdout[-3000:]}{result.stderr}"
        )
    marker.write_text(version)
    return libs


def server_properties(
    data_dir: Path, port: int, controller_port: int, sasl_user: tuple[str, str] | None = None
) -> str:
    """The broker's settings; with ``sasl_user`` (name, password) its client listener takes SASL/PLAIN
    logins only, the way a production cluster with authentication does."""
    listener = "SASL_PLAINTEXT" if sasl_user else "PLAINTEXT"
    security: list[str] = []
    if sasl_user:
        name, password = sasl_user
        security = [
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{name}" password="{password}" user_{name}="{password}";',
        ]
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners={listener}://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={listener}",
            *security,
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.segment.bytes=134217728",
            "log.cleaner.dedupe.buffer.size=33554432",
            "",
        ]
    )


class LocalKafka:
    """``inflow kafka start|stop|status`` for one state directory."""

    def __init__(self, home: Path, cache_dir: Path, settings: LocalKafkaSettings) -> None:
        self.dir = home.resolve() / "kafka"
        self.cache_dir = cache_dir.expanduser().resolve()
        self.settings = settings
        self.process = ManagedProcess("kafka", self.dir / "kafka.pid", self.dir / "kafka.log")

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    def _sasl_user(self) -> tuple[str, str] | None:
        if self.settings.sasl_username and self.settings.sasl_password:
            return self.settings.sasl_username, self.settings.sasl_password.get_secret_value()
        return None

    def client_settings(self) -> KafkaSettings:
        """Settings a client of this broker uses (its address and, with SASL on, the login)."""
        user = self._sasl_user()
        if user is None:
            return KafkaSettings(bootstrap_servers=self.bootstrap_servers)
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username=user[0],
            sasl_password=SecretStr(user[1]),
        )

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise LocalServiceError("Java 17+ is required to run the local Kafka broker")
        return java

    def _configure(self, libs: Path) -> Path:
        """Write server.properties and format storage once (a changed port keeps the formatted data)."""
        data = self.dir / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(
            server_properties(data, self.settings.port, self.settings.controller_port, self._sasl_user())
        )
        (self.dir / "log4j2.xml").write_text(LOG4J2)
        if not (data / "meta.properties").exists():
            data.mkdir(parents=True, exist_ok=True)
            cluster_id = uuid.uuid4().hex[:22]
            cmd = [
                self._java(),
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--ignore-formatted",
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise LocalServiceError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")
        return props

    def ready(self) -> bool:
        """True once the broker answers a metadata request."""
        if not port_open(self.settings.port):
            return False
        try:
            admin = new_admin(self.client_settings(), log_level=0)
            admin.list_topics(timeout=2.0)
        except Exception:  # noqa: BLE001 - any failure simply means "not yet"
            return False
        return True

    def start(self) -> str:
        """Start the broker unless it runs already; return its bootstrap address once it answers."""
        if self.process.pid() is not None:
            self.process.wait_ready(self.ready, self.settings.start_timeout_s)
            return self.bootstrap_servers
        libs = fetch_jars(self.cache_dir, self.settings.version)
        props = self._configure(libs)
        argv = [
            self._java(),
            f"-Xmx{self.settings.heap}",
            f"-Xms{self.settings.heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.xml'}",
            "-Djava.awt.headless=true",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(props),
        ]
        self.process.start(argv)
        started = time.monotonic()
        self.process.wait_ready(self.ready, self.settings.start_timeout_s)
        self.start_seconds = time.monotonic() - started
        return self.bootstrap_servers

    def stop(self) -> bool:
        return self.process.stop(timeout=30.0)

    def status(self) -> dict[str, object]:
        pid = self.process.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap_servers": self.bootstrap_servers,
            "answering": pid is not None and self.ready(),
            "data_dir": str(self.dir / "data"),
            "jars_cached": (self.cache_dir / f"kafka-{self.settings.version}" / "complete").exists(),
        }

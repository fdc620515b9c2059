"""Real ``inflow worker`` processes for tests, and reading their output topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_consumer
from inflow.producers.bulk_api.management import route
from inflow.schemas.serde import AvroSerde
from tests.support import transient

SERDE = AvroSerde()
TOPIC_OF = {
    name: "ingest.records"
    for name in ("UserUpsert", "DeviceUpsert", "EventRecord", "MergeRequest", "DeleteRequest", "DeviceOptOut")
}


def worker_env(kafka: KafkaSettings, home: Path, workspaces: list[dict[str, Any]]) -> dict[str, str]:
    """Environment of a worker process: this test's broker and prefix, its own home and YAML file."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "inflow.yaml"
    config.write_text(yaml.safe_dump({"workspaces": workspaces}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))}
    return env | {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "INFLOW_HOME": str(home),
        "INFLOW_CONFIG": str(config),
        "PYTHONUNBUFFERED": "1",
        "INFLOW_WORKER_LOG_LEVEL": "warn",
        # e.g. INFLOW_WORKER_LOG_LEVEL=info and INFLOW_WORKER_PROGRESS_LOG_S=5 to diagnose a run
        **{k: v for k, v in os.environ.items() if k.startswith("INFLOW_WORKER_")},
    }


@dataclass
class WorkerProcess:
    """One ``python -m inflow.cli worker`` subprocess; stopped by its own pid only."""

    name: str
    env: dict[str, str]
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "inflow.cli",
                    "worker",
                    "--name",
                    self.name,
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def assert_running(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.tail()}"

    def terminate(self, timeout: float = 90) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Outputs:
    """Everything read so far from profiles, events and rejected, decoded."""

    consumer: Consumer
    events: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    keys: list[tuple[str, bytes]] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    tombstones: list[bytes] = field(default_factory=list)  # keys of profiles deleted (Delete User)

    def poll(self) -> None:
        for msg in self.consumer.consume(2000, 0.3):
            if transient(msg.error()):
                continue
            assert not msg.error(), msg.error()
            if msg.value() is None:
                self.tombstones.append(msg.key())
                continue
            name, record = SERDE.decode(msg.value())
            {
                "EnrichedEvent": self.events,
                "UserProfile": self.profiles,
                "RejectedRecord": self.rejected,
                "AuditRecord": self.audits,
            }[name].append(record)
            self.keys.append((name, msg.key()))

    def until(self, predicate: Callable[[Outputs], bool], workers: list[WorkerProcess]) -> Callable[[], bool]:
        """A wait_for predicate that also fails fast when a worker died."""

        def check() -> bool:
            for worker in workers:
                worker.assert_running()
            self.poll()
            return predicate(self)

        return check

    def event_uids(self) -> dict[str, str]:
        """event_uuid -> uid, failing if a duplicate disagrees."""
        seen: dict[str, str] = {}
        for ev in self.events:
            assert seen.setdefault(ev["event_uuid"], ev["uid"]) == ev["uid"], ev
        return seen

    def latest_profiles(self) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for p in self.profiles:
            if p["uid"] not in latest or p["revision"] >= latest[p["uid"]]["revision"]:
                latest[p["uid"]] = p
        return latest


def output_reader(kafka: KafkaSettings, group: str | None = None, audit: bool = False) -> Outputs:
    """``audit``: control.audit is read too (Delete User requests)."""
    consumer = new_consumer(kafka, group or f"read-{uuid.uuid4().hex}")
    topics = ("profiles", "events", "processors.rejected") + (("control.audit",) if audit else ())
    consumer.subscribe([kafka.topic(t) for t in topics])
    return Outputs(consumer)


def produce(producer: Producer, kafka: KafkaSettings, records: list[tuple[str, dict[str, Any]]]) -> None:
    """Write ingest records the way the gateway does: Avro, keyed by workspace and customer id (a Merge
    User request by its merged user, a Device opt-out by its user identifier)."""
    for name, record in records:
        key = f"{record['workspace_id']}:{record.get('customer_id') or record.get('anonymous_id') or ''}"
        if name == "MergeRequest":
            key = route(record["workspace_id"], "customer_id", record["merged_user"])
        elif name == "DeviceOptOut":
            key = route(
                record["workspace_id"], record["user_identifier_type"], record["user_identifier_value"]
            )
        producer.produce(kafka.topic(TOPIC_OF[name]), key=key.encode(), value=SERDE.encode(name, record))
        producer.poll(0)
    assert producer.flush(30) == 0

"""The topic catalogue (``topics.yaml``) and its idempotent creation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import BaseModel, ConfigDict, Field

from inflow.config.file import validate_section

CATALOGUE_PATH = Path(__file__).with_name("topics.yaml")


class TopicEntry(BaseModel):
    """One catalogue entry."""

    model_config = ConfigDict(extra="forbid")

    key: str
    value: str
    partitions: int = Field(6, gt=0)
    replication: int = Field(1, gt=0)
    cleanup_policy: str = Field("delete", pattern="^(delete|compact|compact,delete)$")
    retention_ms: int | None = None


@dataclass(frozen=True)
class TopicSpec:
    """A catalogue entry resolved to its full name."""

    short_name: str
    name: str
    entry: TopicEntry

    def kafka_config(self, min_insync_replicas: int | None = None) -> dict[str, str]:
        conf = {"cleanup.policy": self.entry.cleanup_policy}
        if min_insync_replicas is not None:
            conf["min.insync.replicas"] = str(min_insync_replicas)
        if self.entry.retention_ms is not None:
            conf["retention.ms"] = str(self.entry.retention_ms)
        return conf


@dataclass
class CreateReport:
    """What ``create_topics`` did: created, already there, and those with fewer partitions than declared."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    under_partitioned: dict[str, tuple[int, int]] = field(default_factory=dict)


def load_catalogue(prefix: str = "inflow", path: Path = CATALOGUE_PATH) -> list[TopicSpec]:
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    specs = []
    for short, body in raw["topics"].items():
        entry = validate_section(TopicEntry, body, f"{path.name}: {short}")
        specs.append(TopicSpec(short, f"{prefix}.{short}", entry))
    return specs


def create_topics(
    admin: AdminClient,
    specs: list[TopicSpec],
    replication: int | None = None,
    timeout: float = 30.0,
    min_insync_replicas: int | None = None,
) -> CreateReport:
    """Create missing topics; report existing ones and any with fewer partitions than declared.

    ``replication`` and ``min_insync_replicas`` (from ``KAFKA_REPLICATION_FACTOR`` /
    ``KAFKA_MIN_INSYNC_REPLICAS``) apply to every topic created; production runs 3 and 2, so a write
    acknowledged with acks=all survives the loss of one broker."""
    if replication is not None and min_insync_replicas is not None and min_insync_replicas > replication:
        raise ValueError(
            f"min.insync.replicas {min_insync_replicas} is above the replication factor {replication}: "
            "no write could ever be acknowledged"
        )
    report = CreateReport()
    metadata = admin.list_topics(timeout=timeout)
    missing = []
    for spec in specs:
        existing = metadata.topics.get(spec.name)
        if existing is None or existing.error is not None:
            missing.append(spec)
        else:
            _note_existing(report, spec, len(existing.partitions))
    if missing:
        new = [
            NewTopic(
                s.name,
                num_partitions=s.entry.partitions,
                replication_factor=replication or s.entry.replication,
                config=s.kafka_config(min_insync_replicas),
            )
            for s in missing
        ]
        for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                fut.result()
                report.created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                # Created meanwhile (or metadata was stale): ask for this topic alone.
                spec = next(s for s in missing if s.name == name)
                _note_existing(report, spec, _partition_count(admin, name, timeout))
    return report


def _partition_count(admin: AdminClient, name: str, timeout: float) -> int:
    """Partitions of a topic the controller has but this broker's metadata may not show yet."""
    deadline = time.monotonic() + timeout
    while True:
        found = admin.list_topics(topic=name, timeout=timeout).topics[name]
        if (found.error is None and found.partitions) or time.monotonic() > deadline:
            return len(found.partitions)
        time.sleep(0.1)


def _note_existing(report: CreateReport, spec: TopicSpec, partitions: int) -> None:
    report.existing.append(spec.name)
    if partitions < spec.entry.partitions:
        report.under_partitioned[spec.name] = (partitions, spec.entry.partitions)

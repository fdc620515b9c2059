"""``inflow topics grow NAME PARTITIONS``: which topics may grow while the pipeline runs, and how.

- ``ingest.records`` holds the identity state's routing: it grows through the protocol of
  :mod:`~inflow.processors.growth` — its five changelogs first, then the layout record in
  ``control.layout``, then the topic; the workers move every key to its new partition and announce each
  partition complete (``control.layout``, key ``<topic>#<partition>``), which this command follows.
- Topics whose consumers keep no state per partition (events, profiles, rejected records, retry topics,
  the DLQ, auxiliary data) simply grow: from the growth on, a key's new records go to its new partition,
  and its records from before stay where they are (per-key order holds from the growth on).
- Control topics and changelogs are refused, with the reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka.admin import NewPartitions

from inflow.config.settings import KafkaSettings
from inflow.config.topics import TopicSpec, load_catalogue
from inflow.kafka.clients import new_admin, topic_partitions
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.processors.changelog import changelog_topic
from inflow.processors.exceptions import ProcessorError
from inflow.processors.outputs import INGEST
from inflow.processors.store import TABLES
from inflow.processors.worker import LAYOUT_TOPIC as LAYOUT
from inflow.processors.worker import app_id

SAFE = frozenset(
    {
        "events",
        "profiles",
        "processors.rejected",
        "streams.retry.30s",
        "streams.retry.60s",
        "streams.retry.120s",
        "streams.dlq",
        "ingest.aux",
    }
)
REFUSED = {
    "control.import-ledger": "its keys are owned per partition by the pollers (group mode): growing would "
    "hand files already claimed to another poller",
    "control.gateway-rates": "gateways read it whole; more partitions add nothing",
}
Progress = Callable[[int, int], None]


class GrowthRefused(ProcessorError):
    """A growth that cannot be done, with the reason."""


@dataclass(frozen=True)
class Growth:
    topic: str
    before: int
    after: int


def announcement_key(topic: str, partition: int) -> str:
    return f"{topic}#{partition}"


def find(kafka: KafkaSettings, name: str) -> TopicSpec:
    """The catalogue entry named as ``inflow topics list`` shows it (full name) or by its short name."""
    for spec in load_catalogue(kafka.topic_prefix):
        if name in (spec.name, spec.short_name):
            return spec
    if "-changelog" in name:
        raise GrowthRefused(f"{name} is a changelog: it grows with {kafka.topic(INGEST)}, grow that instead")
    raise GrowthRefused(f"{name} is not a topic of the catalogue (see `inflow topics list`)")


def grow(
    kafka: KafkaSettings,
    name: str,
    partitions: int,
    wait_s: float = 600.0,
    progress: Progress | None = None,
) -> Growth:
    """Grow a topic to ``partitions``; for ingest.records, wait up to ``wait_s`` for the workers to move the
    state (0: do not wait). Raises :class:`GrowthRefused` with the reason when it cannot be done."""
    spec = find(kafka, name)
    admin = new_admin(kafka)
    before = len(topic_partitions(admin, spec.name))
    if partitions <= before:
        raise GrowthRefused(f"{spec.name} has {before} partitions already; Kafka can only add partitions")
    if spec.short_name in REFUSED or spec.short_name.startswith("control."):
        reason = REFUSED.get(spec.short_name, "control topics are read whole by every component")
        raise GrowthRefused(f"{spec.name} is not grown: {reason}")
    if spec.short_name not in SAFE and spec.short_name != INGEST:
        raise GrowthRefused(f"{spec.name} is not grown: no growth procedure is known for it")
    if spec.short_name == INGEST:
        _grow_ingest(kafka, admin, spec.name, before, partitions)
        if wait_s > 0:
            wait_complete(kafka, spec.name, partitions, wait_s, progress)
    else:
        _add_partitions(admin, spec.name, partitions)
    return Growth(spec.name, before, partitions)


def _grow_ingest(kafka: KafkaSettings, admin: object, topic: str, before: int, after: int) -> None:
    layouts = _layouts(kafka).catch_up(30.0)
    try:
        previous = layouts.get(topic)
        if previous is not None:
            pending = [
                p
                for p in range(before)
                if (layouts.get(announcement_key(topic, p)) or {}).get("partitions") != before
            ]
            if pending:
                raise GrowthRefused(
                    f"the growth of {topic} to {before} partitions is still moving state (partitions "
                    f"{pending[:10]} not complete): wait for it before growing again"
                )
    finally:
        layouts.close()
    group = app_id(kafka)
    metadata = admin.list_topics(timeout=30)  # type: ignore[attr-defined]
    for table in TABLES:
        changelog = changelog_topic(group, table)
        if changelog in metadata.topics:
            _add_partitions(admin, changelog, after)
    producer = KafkaProducer(kafka, name="topics-grow")
    try:
        value = json.dumps({"partitions": after, "previous": before}).encode()
        producer.publish_and_wait(kafka.topic(LAYOUT), topic.encode(), value)
    finally:
        producer.close()
    _add_partitions(admin, topic, after)


def _add_partitions(admin: object, topic: str, partitions: int) -> None:
    futures = admin.create_partitions([NewPartitions(topic, partitions)])  # type: ignore[attr-defined]
    for future in futures.values():
        future.result(timeout=60)


def wait_complete(
    kafka: KafkaSettings, topic: str, partitions: int, wait_s: float, progress: Progress | None = None
) -> None:
    """Until every partition's worker announced the new layout complete (raises when ``wait_s`` passes)."""
    layouts = _layouts(kafka).start()
    try:
        deadline = time.monotonic() + wait_s
        while True:
            done = sum(
                (layouts.get(announcement_key(topic, p)) or {}).get("partitions") == partitions
                for p in range(partitions)
            )
            if progress is not None:
                progress(done, partitions)
            if done == partitions:
                return
            if time.monotonic() > deadline:
                raise GrowthRefused(
                    f"{topic}: {done} of {partitions} partitions have their state in the new layout after "
                    f"{wait_s:.0f}s; are workers running (`inflow worker`)? They finish on their own."
                )
            time.sleep(0.5)
    finally:
        layouts.close()


def _layouts(kafka: KafkaSettings) -> CompactedView:
    return CompactedView(kafka, kafka.topic(LAYOUT), decode=json.loads, name="layout").open(30.0)

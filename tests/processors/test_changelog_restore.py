"""Lane state rebuilt from its changelog topics against the real broker: everything on a fresh disk, only
the records after the offset a database reflects on a kept one, and everything again when the database
claims more than the changelog holds (a recreated topic)."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.admin import AdminClient

from inflow.config.settings import KafkaSettings
from inflow.config.topics import TopicEntry, TopicSpec, create_topics
from inflow.processors import bundles
from inflow.processors.changelog import ChangelogRestorer, changelog_specs, changelog_topic
from inflow.processors.store import SEEN, TABLES, LaneStores
from tests.support import wait_for

USERS = TABLES.index("users")


def test_restore_reads_the_changelog_after_the_offset_the_database_reflects(
    kafka_settings: KafkaSettings, admin: AdminClient, producer_factory, tmp_path: Path
):
    app_id = f"{kafka_settings.topic_prefix}.processors"
    lanes = TopicSpec("processors.lanes", "lanes", TopicEntry(key="workspace", value="pack", partitions=2))
    specs = changelog_specs(app_id, lanes, dedup_window_s=3600)
    create_topics(admin, specs)
    assert [s.entry.cleanup_policy for s in specs] == ["compact"] * 4 + ["compact,delete"]
    users = changelog_topic(app_id, "users")
    producer = producer_factory()
    for i in range(5):
        producer.produce(users, key=f"u{i}".encode(), value=f"v{i}".encode(), partition=1)
    producer.produce(users, key=b"u0", value=None, partition=1)  # deleted
    producer.produce(users, key=b"elsewhere", value=b"p0", partition=0)
    producer.flush(30)

    stores = LaneStores(tmp_path / "state", 1 << 20, 1 << 20, 3600)
    restorer = ChangelogRestorer(kafka_settings, app_id)
    done: list[int] = []

    def restore(partition: int) -> None:
        done.clear()
        restorer.start(partition, stores.open(partition))
        wait_for(lambda: bool(done.extend(restorer.step(0.5)) or partition in done), 60, what="restored")

    try:
        restore(1)
        store = stores.open(1)[USERS]
        assert [store.get(f"u{i}".encode()) for i in range(5)] == [None, b"v1", b"v2", b"v3", b"v4"]
        assert store.get(b"elsewhere") is None  # another lane partition's state
        assert store.changelog_offset() == 5

        # Kept disk: a local value the changelog does not repeat survives, later records are applied.
        store.stage([(b"u2", b"local")])
        store.persist(store.changelog_offset())
        stores.close(1)
        producer.produce(users, key=b"u1", value=b"v1b", partition=1)
        producer.flush(30)
        restore(1)
        store = stores.open(1)[USERS]
        assert (store.get(b"u1"), store.get(b"u2"), store.changelog_offset()) == (b"v1b", b"local", 6)

        # A database ahead of its changelog is not a prefix of it: rebuilt from the beginning.
        store.persist(100)
        stores.close(1)
        restore(1)
        store = stores.open(1)[USERS]
        assert (store.get(b"u1"), store.get(b"u2"), store.changelog_offset()) == (b"v1b", b"v2", 6)
    finally:
        restorer.close()
        stores.close_all()


def test_seen_marks_restore_from_bundles_and_from_single_mark_records_written_before_them(
    kafka_settings: KafkaSettings, admin: AdminClient, producer_factory, tmp_path: Path
):
    app_id = f"{kafka_settings.topic_prefix}.processors"
    lanes = TopicSpec("processors.lanes", "lanes", TopicEntry(key="workspace", value="pack", partitions=2))
    create_topics(admin, changelog_specs(app_id, lanes, dedup_window_s=3600))
    seen = changelog_topic(app_id, "seen")
    producer = producer_factory()
    producer.produce(seen, key=b"W\x1fs\x1fold", value=b"[0,1,0]", partition=0)  # one mark per record
    marks = [(f"W\x1fs\x1fe{i}".encode(), f"[0,9,{i}]".encode()) for i in range(300)]
    for n, part in enumerate(bundles.chunks([*marks, (b"W\x1fs\x1fold", None)], 4_000)):
        producer.produce(seen, key=bundles.bundle_key(0, n), value=part, partition=0)
    producer.flush(30)

    stores = LaneStores(tmp_path / "state", 1 << 20, 1 << 20, 3600)
    restorer = ChangelogRestorer(kafka_settings, app_id)
    done: list[int] = []
    try:
        restorer.start(0, stores.open(0))
        wait_for(lambda: bool(done.extend(restorer.step(0.5)) or 0 in done), 60, what="restored")
        store = stores.open(0)[SEEN]
        assert [store.get(key) for key, _ in marks] == [value for _, value in marks]
        assert store.get(b"W\x1fs\x1fold") is None  # deleted by a later bundle
        assert store.get(bundles.bundle_key(0, 0)) is None  # a bundle is never a state key
    finally:
        restorer.close()
        stores.close_all()

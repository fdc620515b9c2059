"""The topic catalogue and its idempotent creation against the real broker."""

from __future__ import annotations

from inflow.config.topics import create_topics, load_catalogue


def test_catalogue_declares_every_design_topic():
    names = {s.short_name for s in load_catalogue()}
    assert {
        "ingest.users",
        "ingest.devices",
        "ingest.events",
        "profiles",
        "events",
        "streams.retry.30s",
        "streams.retry.60s",
        "streams.retry.120s",
        "streams.dlq",
    } <= names
    profiles = next(s for s in load_catalogue() if s.short_name == "profiles")
    assert profiles.kafka_config()["cleanup.policy"] == "compact"


def test_create_is_idempotent_and_applies_config(admin, unique):
    specs = load_catalogue(f"t{unique}")
    first = create_topics(admin, specs)
    assert sorted(first.created) == sorted(s.name for s in specs)
    second = create_topics(admin, specs)
    assert second.created == []
    assert sorted(second.existing) == sorted(s.name for s in specs)
    assert second.under_partitioned == {}
    metadata = admin.list_topics(timeout=10)
    for spec in specs:
        assert len(metadata.topics[spec.name].partitions) == spec.entry.partitions


def test_existing_topic_with_fewer_partitions_is_reported(admin, topic_factory, unique):
    prefix = f"t{unique}"
    specs = [s for s in load_catalogue(prefix) if s.short_name == "events"]
    topic_factory(specs[0].name, partitions=2)
    report = create_topics(admin, specs)
    assert report.under_partitioned == {specs[0].name: (2, specs[0].entry.partitions)}
    assert report.created == []

"""The topic catalogue and its idempotent creation against the real broker."""

from __future__ import annotations

from inflow.config.topics import create_topics, load_catalogue


def test_catalogue_declares_every_design_topic():
    names = {s.short_name for s in load_catalogue()}
    assert {
        "ingest.records",
        "control.layout",
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


def test_replication_and_min_insync_replicas_from_the_settings_reach_every_created_topic(admin, unique):
    from confluent_kafka.admin import ConfigResource

    specs = [s for s in load_catalogue(f"t{unique}") if s.short_name in ("events", "control.workspaces")]
    report = create_topics(admin, specs, replication=1, min_insync_replicas=1)
    assert sorted(report.created) == sorted(s.name for s in specs)
    for spec in specs:
        resource = ConfigResource("topic", spec.name)
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
        assert configs["min.insync.replicas"].value == "1"
        assert (
            configs["min.insync.replicas"].source == ConfigResource.Type.TOPIC.value
            or configs["min.insync.replicas"].is_default is False
        )


def test_min_insync_above_the_replication_factor_is_refused_with_the_reason(admin, unique):
    import pytest

    specs = load_catalogue(f"t{unique}")[:1]
    with pytest.raises(ValueError, match="min.insync.replicas 2 is above the replication factor 1"):
        create_topics(admin, specs, replication=1, min_insync_replicas=2)


def test_replication_settings_come_from_the_environment(monkeypatch):
    from inflow.config.settings import KafkaSettings

    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("KAFKA_MIN_INSYNC_REPLICAS", "2")
    kafka = KafkaSettings()
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)

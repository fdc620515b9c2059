"""Hostile input and faults against real worker processes: an oversized profile, a worker killed mid-batch,
a disabled workspace, and the changelogs' durability settings."""

from __future__ import annotations

import json
import time
from pathlib import Path

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
)

from inflow.schemas.serde import AvroSerde
from inflow.workspaces.registry import Workspace
from inflow.workspaces.registry import WorkspaceRegistry as Credentials
from tests.processors import records as r
from tests.processors.workers import Outputs, WorkerProcess, output_reader, produce, worker_env
from tests.support import wait_for

WORKSPACES = [{"id": "W", "identifiers": ["customer_id", "email"]}]
BLOB = 96_000  # ten of these fit in a Kafka record of 1 MB, eleven do not


def drain(out: Outputs, workers: list[WorkerProcess], quiet: float = 3.0, timeout: float = 60.0) -> None:
    """Read the outputs until nothing new came for ``quiet`` seconds: later copies would show up here."""
    deadline = time.monotonic() + timeout
    last, count = time.monotonic(), -1
    while time.monotonic() - last < quiet:
        assert time.monotonic() < deadline, "the outputs never went quiet"
        for worker in workers:
            worker.assert_running()
        out.poll()
        total = len(out.events) + len(out.profiles) + len(out.rejected)
        if total != count:
            last, count = time.monotonic(), total


def test_twelve_large_updates_then_another_users_events_nothing_lost(
    worker_topics, producer_factory, tmp_path: Path
):
    """Twelve ~96 KB attribute updates of one user: the ones that would make its profile larger than a
    Kafka record are rejected with the reason, the profile keeps its last good state, the worker stays up,
    and the ten events of another user sent right after all come out, once each. The profile guard is
    raised here (test_workers has it at its default) so the broker's record limit is what stops them."""
    kafka = worker_topics
    env = worker_env(kafka, tmp_path / "home", WORKSPACES) | {"INFLOW_WORKER_MAX_PROFILE_BYTES": "8000000"}
    worker = WorkerProcess("heavy", env, tmp_path / "data", tmp_path / "heavy.log").start()
    out = output_reader(kafka)
    producer = producer_factory()
    try:
        updates = [r.user("W", "heavy", at=i, attributes={f"blob{i}": "x" * BLOB}) for i in range(1, 13)]
        produce(producer, kafka, [("UserUpsert", update) for update in updates])
        events = [r.event("W", "light", at=20 + i) for i in range(10)]
        produce(producer, kafka, [("EventRecord", e) for e in events])
        wanted = {e["event_uuid"] for e in events}
        too_big = {u["event_uuid"] for u in updates[10:]}
        wait_for(
            out.until(
                lambda o: (
                    wanted <= {e["event_uuid"] for e in o.events}
                    and too_big <= {x["event_uuid"] for x in o.rejected}
                ),
                [worker],
            ),
            180,
            what="the other user's events and the rejections of the oversized updates",
        )
        drain(out, [worker])
        # Exactly the two updates that do not fit are rejected, with the reason; nothing else is.
        assert sorted(x["event_uuid"] for x in out.rejected) == sorted(too_big)
        for rejected in out.rejected:
            assert rejected["record_name"] == "UserUpsert" and rejected["outcome"] == "rejected"
            assert "too large" in rejected["reason"] and "limit" in rejected["reason"], rejected["reason"]
        # Every event of the other user, exactly once.
        assert sorted(e["event_uuid"] for e in out.events) == sorted(wanted)
        assert len({e["uid"] for e in out.events}) == 1
        # The heavy user's profile: one snapshot per accepted update, the last with the ten blobs that fit.
        heavy = [p for p in out.profiles if p["customer_id"] == "heavy"]
        assert len(heavy) == 10
        last = json.loads(max(heavy, key=lambda p: p["revision"])["attributes_json"])
        assert {k for k in last if k.startswith("blob")} == {f"blob{i}" for i in range(1, 11)}
        worker.assert_running()
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0, worker.tail()


def test_a_worker_killed_mid_batch_and_restarted_loses_nothing(
    worker_topics, producer_factory, tmp_path: Path
):
    """kill -9 while batches are being applied, restart on the same disk: every event comes out, every
    copy of an event agrees with the others (event_uuid de-duplication removes them), no user is made
    twice, and no merge event is missing."""
    kafka = worker_topics
    spaces = [f"ks{i}" for i in range(6)]
    env = worker_env(
        kafka, tmp_path / "home", [{"id": ws, "identifiers": ["customer_id", "email"]} for ws in spaces]
    )
    # Small batches: many of them are in flight (applied, flushing, committing) when the kill comes.
    env |= {"INFLOW_WORKER_BATCH_SIZE": "100", "INFLOW_WORKER_LANE_BATCH_PACKS": "2"}
    worker = WorkerProcess("k1", env, tmp_path / "data", tmp_path / "k1.log").start()
    out = output_reader(kafka)
    producer = producer_factory()
    customers = [f"c{i}" for i in range(20)]
    try:
        produce(producer, kafka, [("UserUpsert", r.user(ws, c, at=1)) for ws in spaces for c in customers])
        # In every workspace c0 and c1 merge on a shared e-mail, in the same stream as the events.
        merges = [
            ("UserUpsert", r.user(ws, c, at=2, attributes={"email": f"m@{ws}"}))
            for ws in spaces
            for c in ("c0", "c1")
        ]
        events = [r.event(ws, c, at=10 + i) for i in range(15) for ws in spaces for c in customers]
        stream = [("EventRecord", e) for e in events]
        stream[len(stream) // 4 : len(stream) // 4] = merges
        produce(producer, kafka, stream)
        wait_for(
            out.until(lambda o: len(o.events) >= 50, [worker]), 180, what="events flowing before the kill"
        )
        worker.kill()
        assert len({e["event_uuid"] for e in out.events}) < len(events), "killed too late to test anything"
        worker = WorkerProcess("k1", env, tmp_path / "data", tmp_path / "k1b.log").start()
        wanted = {e["event_uuid"] for e in events}
        wait_for(
            out.until(lambda o: wanted <= {e["event_uuid"] for e in o.events}, [worker]),
            300,
            what="every event after the restart",
        )
        wait_for(
            out.until(lambda o: sum(e["event_code"] == "MOE_USER_MERGED" for e in o.events) >= 6, [worker]),
            60,
            what="a merge event in every workspace",
        )
        drain(out, [worker])
        assert not out.rejected, out.rejected[:3]
        sent = {e["event_uuid"] for e in out.events if not e["event_code"].startswith("MOE_")}
        assert sent == wanted  # every event, and no event that was not sent
        merged = {e["workspace_id"] for e in out.events if e["event_code"] == "MOE_USER_MERGED"}
        assert merged == set(spaces)
        # Copies of one event agree on its user, and no user was made twice: one uid per customer id.
        # (c0 and c1 merge mid-stream: an event replayed over state that has the merge may name the
        # retained user where its first copy named the merged one, so they are left out here.)
        by_customer: dict[tuple[str, str], set[str]] = {}
        for e in out.events:
            if e["customer_id"] not in ("c0", "c1") and not e["event_code"].startswith("MOE_"):
                by_customer.setdefault((e["workspace_id"], e["customer_id"]), set()).add(e["uid"])
        assert len(by_customer) == len(spaces) * (len(customers) - 2)
        assert all(len(found) == 1 for found in by_customer.values()), by_customer
        latest = out.latest_profiles()
        live = {(p["workspace_id"], p["customer_id"]) for p in latest.values() if p["merged_into"] is None}
        assert len(live) == len([p for p in latest.values() if p["merged_into"] is None])
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0, worker.tail()


def test_records_of_a_disabled_workspace_are_rejected_and_change_nothing(
    worker_topics, producer_factory, tmp_path: Path
):
    """Records accepted before `inflow workspaces disable` (or imported) are rejected with the reason by
    the worker; other workspaces go on; enabled again, the workspace's new records are applied."""
    kafka = worker_topics
    credentials = Credentials(kafka, AvroSerde()).load()
    credentials.create(Workspace(id="OFF", key_hash="-"))
    credentials.create(Workspace(id="ON", key_hash="-"))
    producer = producer_factory()
    blocked = [
        ("UserUpsert", r.user("OFF", "u1", at=1, attributes={"city": "Oslo"})),
        ("EventRecord", r.event("OFF", "u1", at=2)),
        ("EventRecord", r.event("OFF", "u2", at=3)),
    ]
    produce(producer, kafka, blocked)
    credentials.set_disabled("OFF", True)
    env = worker_env(kafka, tmp_path / "home", [])
    worker = WorkerProcess("off", env, tmp_path / "data", tmp_path / "off.log").start()
    out = output_reader(kafka)
    try:
        allowed = [r.event("ON", "u1", at=4), r.event("ON", "u1", at=5)]
        produce(producer, kafka, [("EventRecord", e) for e in allowed])
        expected = {rec["event_uuid"] for _, rec in blocked}
        wait_for(
            out.until(
                lambda o: (
                    expected <= {x["event_uuid"] for x in o.rejected}
                    and {e["event_uuid"] for e in allowed} <= {e["event_uuid"] for e in o.events}
                ),
                [worker],
            ),
            120,
            what="the disabled workspace's rejections and the other workspace's events",
        )
        drain(out, [worker])
        assert sorted(x["event_uuid"] for x in out.rejected) == sorted(expected)
        assert {x["reason"] for x in out.rejected} == {"workspace disabled"}
        assert {x["workspace_id"] for x in out.rejected} == {"OFF"}
        assert not [p for p in out.profiles if p["workspace_id"] == "OFF"]
        assert not [e for e in out.events if e["workspace_id"] == "OFF"]
        # Enabled again (the worker follows control.workspaces): a new record of it is applied.
        credentials.set_disabled("OFF", False)
        later = r.event("OFF", "u1", at=6)

        def applied() -> bool:
            # Until the worker has read the change, a probe may still be rejected: send another.
            nonlocal later
            out.poll()
            if any(e["event_uuid"] == later["event_uuid"] for e in out.events):
                return True
            if any(x["event_uuid"] == later["event_uuid"] for x in out.rejected):
                later = r.event("OFF", "u1", at=6)
                produce(producer, kafka, [("EventRecord", later)])
            return False

        produce(producer, kafka, [("EventRecord", later)])
        wait_for(out.until(lambda o: applied(), [worker]), 120, interval=0.5, what="the enabled workspace")
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0, worker.tail()


def test_changelogs_take_replication_and_min_insync_replicas_from_the_settings(
    worker_topics, admin: AdminClient, tmp_path: Path
):
    kafka = worker_topics
    env = worker_env(kafka, tmp_path / "home", WORKSPACES)
    env |= {"KAFKA_REPLICATION_FACTOR": "1", "KAFKA_MIN_INSYNC_REPLICAS": "1"}
    worker = WorkerProcess("isr", env, tmp_path / "data", tmp_path / "isr.log").start()
    app_id = f"{kafka.topic_prefix}.processors"
    names = [f"{app_id}-{t}-changelog" for t in ("identity", "users", "devices", "device_index", "seen")]
    try:

        def created() -> bool:
            worker.assert_running()
            topics = admin.list_topics(timeout=10).topics
            return all(name in topics for name in names)

        wait_for(created, 120, interval=0.5, what="the changelog topics")
        for name in names:
            resource = ConfigResource(ConfigResource.Type.TOPIC, name)
            entry = admin.describe_configs([resource])[resource].result(timeout=30)["min.insync.replicas"]
            # Set on the topic when it was created, not the broker's default.
            assert (entry.value, entry.source) == ("1", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), name
            partitions = admin.list_topics(name, timeout=10).topics[name].partitions
            assert partitions and all(len(p.replicas) == 1 for p in partitions.values())
    finally:
        code = worker.terminate()
    assert code == 0, worker.tail()


def test_records_over_the_output_or_changelog_limits_are_rejected_and_the_worker_goes_on(
    worker_topics, producer_factory, admin: AdminClient, tmp_path: Path
):
    """Every record the worker writes is size-checked: a profile snapshot over its topic's limit, and a
    changelog record of any table (here an identity index key longer than its changelog's limit)."""
    kafka = worker_topics
    app_id = f"{kafka.topic_prefix}.processors"
    profiles = kafka.topic("profiles")
    ingest = kafka.topic("ingest.records")
    small = AlterConfigOpType.SET
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        profiles,
        incremental_configs=[ConfigEntry("max.message.bytes", "20000", incremental_operation=small)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    partitions = wait_for(  # a just-created topic can take a moment to show its partitions
        lambda: len(admin.list_topics(ingest, timeout=10).topics[ingest].partitions), 30, what="partitions"
    )
    identity = f"{app_id}-identity-changelog"
    config = {"cleanup.policy": "compact", "max.message.bytes": "4000"}
    for future in admin.create_topics([NewTopic(identity, partitions, 1, config=config)]).values():
        future.result(timeout=30)
    env = worker_env(kafka, tmp_path / "home", WORKSPACES)
    worker = WorkerProcess("limits", env, tmp_path / "data", tmp_path / "limits.log").start()
    out = output_reader(kafka)
    producer = producer_factory()
    try:
        long_id = r.user("W", "a" * 3_500, at=1)  # its index entry: a 3.5 kB key and a 3.5 kB slot
        long_email = r.user("W", "a2", at=1, attributes={"email": "e" * 6_000 + "@x.io"})
        too_big_for_profiles = r.user("W", "b", at=2, attributes={"blob": "x" * 30_000})
        produce(
            producer,
            kafka,
            [("UserUpsert", long_id), ("UserUpsert", long_email), ("UserUpsert", too_big_for_profiles)],
        )
        events = [r.event("W", "c", at=3 + i) for i in range(5)]
        produce(producer, kafka, [("EventRecord", e) for e in events])
        wanted = {e["event_uuid"] for e in events}
        wait_for(
            out.until(
                lambda o: wanted <= {e["event_uuid"] for e in o.events} and len(o.rejected) >= 3, [worker]
            ),
            120,
            what="the other user's events and three rejections",
        )
        drain(out, [worker])
        assert len(out.rejected) == 3, out.rejected
        by_uuid = {x["event_uuid"]: x for x in out.rejected}
        assert "over the 4096-byte limit of an identifier" in by_uuid.pop(long_email["event_uuid"])["reason"]
        stored = by_uuid[long_id["event_uuid"]]
        assert stored["record_name"] == "UserUpsert"
        assert "stored identity value" in stored["reason"] and "limit" in stored["reason"]
        snapshot = by_uuid[too_big_for_profiles["event_uuid"]]
        assert "UserProfile it produces would be too large" in snapshot["reason"], snapshot["reason"]
        assert not [p for p in out.profiles if p["customer_id"] in ("a" * 3_500, "a2", "b")]
        assert sorted(e["event_uuid"] for e in out.events) == sorted(wanted)
        worker.assert_running()
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0, worker.tail()

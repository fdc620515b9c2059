"""Real worker processes against the real broker: merges, enrichment, duplicates, restarts, two workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from inflow.processors.lanes import owned_in_log
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.registry import Workspace
from inflow.workspaces.registry import WorkspaceRegistry as Credentials
from tests.processors import records as r
from tests.processors.workers import WorkerProcess, output_reader, produce, worker_env
from tests.support import wait_for


def lanes_owned(worker: WorkerProcess) -> list[int]:
    """Lane partitions the worker logged as its own at its last rebalance."""
    return owned_in_log(worker.log.read_text())


WORKSPACES = [{"id": "W", "identifiers": ["customer_id", "email"]}]


def changelog_config(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {name: entry.value for name, entry in entries.items()}


def test_worker_merges_users_enriches_events_and_drops_duplicates(
    worker_topics, producer_factory, admin: AdminClient, tmp_path: Path
):
    kafka = worker_topics
    env = worker_env(kafka, tmp_path / "home", WORKSPACES)
    # A workspace only in control.workspaces (as `inflow workspaces create CLI --identifiers email` makes it).
    Credentials(kafka, AvroSerde()).load().create(Workspace(id="CLI", key_hash="-", identifiers=("email",)))
    worker = WorkerProcess("solo", env, tmp_path / "data", tmp_path / "solo.log").start()
    out = output_reader(kafka)
    producer = producer_factory(**{"compression.type": "lz4", "linger.ms": 5})  # as the gateway produces
    try:
        produce(
            producer,
            kafka,
            [
                ("UserUpsert", r.user("W", "alice", at=1, attributes={"email": "a@x.io", "city": "Oslo"})),
                ("UserUpsert", r.user("W", "bob", at=2, attributes={"name": "Bob"})),
                ("UserUpsert", r.user("W", "guest", at=2)),
            ],
        )
        wait_for(
            out.until(lambda o: len(o.profiles) >= 2 and o.rejected, [worker]), 120, what="first profiles"
        )
        assert "blocked" in out.rejected[0]["reason"]
        produce(
            producer,
            kafka,
            [("DeviceUpsert", r.device("W", "alice", "dev-a", at=3, platform="ANDROID", push_id="t"))],
        )
        wait_for(
            out.until(lambda o: any(json.loads(p["devices_json"]) for p in o.profiles), [worker]),
            60,
            what="device",
        )
        produce(producer, kafka, [("UserUpsert", r.user("W", "bob", at=4, attributes={"email": "a@x.io"}))])
        wait_for(
            out.until(lambda o: any(e["event_code"] == "MOE_USER_MERGED" for e in o.events), [worker]),
            60,
            what="merge events",
        )
        retained = next(e["uid"] for e in out.events if e["event_code"] == "MOE_USER_MERGED")
        merged = next(e["uid"] for e in out.events if e["event_code"] == "MOE_USER_MERGE_EVENT")
        # After the merge: events of either customer id, one sent twice, resolve to the retained user.
        dup = r.event("W", "alice", "NOTIFICATION_CLICKED_MOE", at=5, device_id="dev-a")
        batch = [
            ("EventRecord", dup),
            ("EventRecord", dup),
            ("EventRecord", r.event("W", "bob", at=6)),
            ("EventRecord", r.event("W", None, at=7, user_identifiers={"email": "a@x.io"})),
        ]
        produce(producer, kafka, batch)
        wanted = {rec["event_uuid"] for _, rec in batch}
        wait_for(
            out.until(lambda o: wanted <= {e["event_uuid"] for e in o.events}, [worker]), 60, what="events"
        )
        out.poll()
        uids = out.event_uids()
        assert {uids[u] for u in wanted} == {retained}
        assert sum(e["event_uuid"] == dup["event_uuid"] for e in out.events) == 1  # duplicate dropped
        push = next(e for e in out.events if e["event_uuid"] == dup["event_uuid"])
        assert push["event_type"] == "CAMPAIGN_EVENT" and push["push_id"] == "t"
        assert json.loads(push["user_attributes_json"])["moengage_user_id"] == retained
        assert json.loads(push["device_attributes_json"])["push_id"] == "t"
        profiles = out.latest_profiles()
        assert profiles[merged]["merged_into"] == retained
        assert (
            json.loads(profiles[retained]["attributes_json"])["city"] == "Oslo"
        )  # copied from the merged user
        assert [d["device_id"] for d in json.loads(profiles[retained]["devices_json"])] == ["dev-a"]
        assert ("UserProfile", f"W:{retained}".encode()) in out.keys
        # The CLI workspace's identifiers come from control.workspaces: a shared e-mail merges there too.
        produce(
            producer,
            kafka,
            [
                ("UserUpsert", r.user("CLI", "c1", at=1, attributes={"email": "s@x.io"})),
                ("UserUpsert", r.user("CLI", "c2", at=2, attributes={"email": "s@x.io"})),
            ],
        )
        wait_for(
            out.until(
                lambda o: any(
                    e["workspace_id"] == "CLI" and e["event_code"] == "MOE_USER_MERGED" for e in o.events
                ),
                [worker],
            ),
            60,
            what="a merge in the workspace configured through control.workspaces",
        )
        # Seen marks live for the de-duplication window (7 days); the other tables' changelogs are compacted.
        app_id = f"{kafka.topic_prefix}.processors"
        seen = changelog_config(admin, f"{app_id}-seen-changelog")
        assert seen["cleanup.policy"] == "compact,delete" and seen["retention.ms"] == str(7 * 86_400_000)
        assert changelog_config(admin, f"{app_id}-users-changelog")["cleanup.policy"] == "compact"
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0, worker.tail()


# Two worker processes, a rebalance, a kill -9 and a restart on a fresh disk on a shared 2-core machine: one
# rerun stays as a margin for slower machines; a rerun must still see every event. INFLOW_TEST_RERUNS=0
# turns it off.
@pytest.mark.flaky(reruns=int(os.environ.get("INFLOW_TEST_RERUNS", "1")))
def test_two_workers_six_partitions_and_a_killed_worker_lose_nothing(
    worker_topics, producer_factory, admin: AdminClient, tmp_path: Path
):
    kafka = worker_topics
    spaces = [f"ws{i}" for i in range(12)]
    env = worker_env(
        kafka, tmp_path / "home", [{"id": ws, "identifiers": ["customer_id", "email"]} for ws in spaces]
    )
    workers = [
        WorkerProcess(f"w{i}", env, tmp_path / f"data{i}", tmp_path / f"w{i}.log").start() for i in (1, 2)
    ]
    out = output_reader(kafka)
    producer = producer_factory()
    try:
        # Phase 1: in every workspace c1 and c2 share an e-mail and merge (lanes spread over both workers).
        produce(
            producer,
            kafka,
            [("UserUpsert", r.user(ws, "c1", at=1, attributes={"email": f"e@{ws}"})) for ws in spaces],
        )
        produce(
            producer,
            kafka,
            [("UserUpsert", r.user(ws, "c2", at=2, attributes={"email": f"e@{ws}"})) for ws in spaces],
        )
        wait_for(
            out.until(lambda o: sum(e["event_code"] == "MOE_USER_MERGED" for e in o.events) >= 12, workers),
            180,
            what="a merge in each workspace",
        )
        retained = {e["workspace_id"]: e["uid"] for e in out.events if e["event_code"] == "MOE_USER_MERGED"}
        group = admin.describe_consumer_groups([f"{kafka.topic_prefix}.processors"])
        assert len(group[f"{kafka.topic_prefix}.processors"].result().members) == 2
        wait_for(lambda: all(lanes_owned(w) for w in workers), 60, what="both workers owning lanes")

        # Phase 2: events of both customer ids while worker 1 is killed and restarted with an empty data dir.
        events = [r.event(ws, cid, at=10 + i) for i in range(60) for ws in spaces for cid in ("c1", "c2")]
        produce(producer, kafka, [("EventRecord", e) for e in events[: len(events) // 3]])
        wait_for(out.until(lambda o: len(o.events) > 24 + 50, workers), 120, what="events flowing")
        workers[0].kill()
        produce(producer, kafka, [("EventRecord", e) for e in events[len(events) // 3 :]])
        workers[0] = WorkerProcess("w1", env, tmp_path / "data1-fresh", tmp_path / "w1b.log").start()
        wanted = {e["event_uuid"] for e in events}
        wait_for(
            out.until(lambda o: wanted <= {e["event_uuid"] for e in o.events}, workers),
            240,
            what="every event after the restart",
        )
        uids = out.event_uids()
        for e in events:  # state rebuilt from the changelogs: both ids still resolve to the retained user
            assert uids[e["event_uuid"]] == retained[e["workspace_id"]]
        new_users = [
            p
            for p in out.latest_profiles().values()
            if p["customer_id"] in ("c1", "c2")
            and p["uid"] not in retained.values()
            and p["merged_into"] is None
        ]
        assert not new_users
    except AssertionError:
        print("\n".join(f"--- {w.name}\n{w.tail()}" for w in workers))
        raise
    finally:
        codes = [w.terminate() for w in workers]
        out.consumer.close()
    assert codes == [0, 0], "\n".join(w.tail() for w in workers)


def test_a_profile_grown_past_the_size_limit_is_rejected_and_the_worker_goes_on(
    worker_topics, producer_factory, tmp_path: Path
):
    """The poison profile: twelve updates of ~96 kB to one user. Those that would take the profile past
    its limit (256 kB by default) are rejected with the reason, the profile keeps its last good state, and
    other users' records keep flowing on the same partition and worker."""
    kafka = worker_topics
    env = worker_env(kafka, tmp_path / "home", WORKSPACES)
    worker = WorkerProcess("big", env, tmp_path / "data", tmp_path / "big.log").start()
    out = output_reader(kafka)
    producer = producer_factory()
    try:
        updates = [r.user("W", "big", at=i, attributes={f"blob{i}": "x" * 96_000}) for i in range(12)]
        produce(producer, kafka, [("UserUpsert", update) for update in updates])
        produce(producer, kafka, [("UserUpsert", r.user("W", "small", at=13, attributes={"city": "Oslo"}))])
        events = [r.event("W", "small", at=14 + i) for i in range(3)] + [r.event("W", "big", at=20)]
        produce(producer, kafka, [("EventRecord", e) for e in events])
        wanted = {e["event_uuid"] for e in events}
        wait_for(
            out.until(
                lambda o: wanted <= {e["event_uuid"] for e in o.events} and len(o.rejected) >= 10, [worker]
            ),
            120,
            what="every event and ten rejections",
        )
        rejected = {x["event_uuid"]: x for x in out.rejected}
        for update in updates[2:]:  # two fit (192 kB); every later one would pass 256 kB
            reason = rejected[update["event_uuid"]]["reason"]
            assert "over the limit of 262144 bytes" in reason, reason
        assert updates[0]["event_uuid"] not in rejected and updates[1]["event_uuid"] not in rejected
        big = [p for p in out.profiles if p["customer_id"] == "big"]
        assert {"blob0", "blob1"} <= set(json.loads(big[-1]["attributes_json"]))
        assert all("blob2" not in json.loads(p["attributes_json"]) for p in big)
        (event,) = [e for e in out.events if e["event_uuid"] == events[-1]["event_uuid"]]
        assert {"blob0", "blob1"} <= set(json.loads(event["user_attributes_json"]))  # the last good state
        worker.assert_running()
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0, worker.tail()

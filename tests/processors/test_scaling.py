"""The partitioned identity core with real worker processes on the real broker: one workspace over two
workers and twelve partitions, merges whose identifiers live on different partitions, racing merges, a
worker killed in the middle of merging, and ``inflow topics grow`` under load."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from confluent_kafka.admin import AdminClient

from inflow.config.settings import KafkaSettings
from inflow.config.topics import create_topics
from inflow.local.process import free_port
from inflow.processors.lanes import owned_in_log
from inflow.processors.routing import partition_of
from inflow.processors.topic_growth import GrowthRefused, grow
from tests.conftest import small_catalogue
from tests.processors import records as r
from tests.processors.workers import Outputs, WorkerProcess, output_reader, produce, worker_env
from tests.support import wait_for

WORKSPACES = [{"id": "W", "identifiers": ["customer_id", "email"]}]


@pytest.fixture
def twelve(kafka_settings: KafkaSettings, admin: AdminClient) -> Iterator[KafkaSettings]:
    """The catalogue with 12 partitions per topic (ingest.records and its changelogs follow)."""
    create_topics(admin, small_catalogue(kafka_settings.topic_prefix, 12))
    yield kafka_settings


def spans(ws: str, *routes: str, partitions: int = 12) -> int:
    return len({partition_of(f"{ws}:{route}", partitions) for route in routes})


def survivors(out: Outputs) -> dict[str, dict]:
    return {uid: p for uid, p in out.latest_profiles().items() if p["merged_into"] is None}


def start(env: dict[str, str], tmp_path: Path, *names: str) -> list[WorkerProcess]:
    """Workers with their own /metrics port each (``INFLOW_WORKER_METRICS_PORT`` in their env)."""
    return [
        WorkerProcess(
            n,
            env | {"INFLOW_WORKER_METRICS_PORT": str(free_port())},
            tmp_path / f"data-{n}",
            tmp_path / f"{n}.log",
        ).start()
        for n in names
    ]


def applied(worker: WorkerProcess, workspace: str, kind: str) -> float:
    """``inflow_worker_records_applied_total`` of a workspace and record type, from a worker's /metrics."""
    url = f"http://127.0.0.1:{worker.env['INFLOW_WORKER_METRICS_PORT']}/metrics"
    try:
        text = requests.get(url, timeout=5).text
    except requests.RequestException:
        return 0.0
    for line in text.splitlines():
        if line.startswith("inflow_worker_records_applied_total{") and f'workspace="{workspace}"' in line:
            if f'type="{kind}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_one_workspace_spreads_over_two_workers_and_merges_across_partitions(
    twelve: KafkaSettings, producer_factory, tmp_path: Path
):
    kafka = twelve
    env = worker_env(kafka, tmp_path / "home", WORKSPACES)
    workers = start(env, tmp_path, "a", "b")
    out = output_reader(kafka)
    producer = producer_factory()
    try:
        wait_for(
            lambda: all(owned_in_log(w.log.read_text()) for w in workers), 90, what="both own partitions"
        )
        owned = [set(owned_in_log(w.log.read_text())) for w in workers]
        assert not owned[0] & owned[1] and len(owned[0] | owned[1]) == 12
        # 120 users of one workspace: their partitions are owned by both workers.
        users = [r.user("W", f"u{i}", at=1, attributes={"tier": i}) for i in range(120)]
        assert {partition_of(f"W:u{i}", 12) for i in range(120)} & owned[0]
        assert {partition_of(f"W:u{i}", 12) for i in range(120)} & owned[1]
        produce(producer, kafka, [("UserUpsert", u) for u in users])
        wait_for(out.until(lambda o: len(o.profiles) >= 120, workers), 120, what="120 profiles")
        # Pairs linked by an e-mail whose index entry is on a third partition: a merge by messages.
        pairs = [
            (f"u{2 * k}", f"u{2 * k + 1}", f"m{k}@x.io")
            for k in range(60)
            if spans("W", f"u{2 * k}", f"u{2 * k + 1}", f"email=m{k}@x.io") == 3
        ][:8]
        assert len(pairs) >= 4
        # Racing merges: three users claim one e-mail at once, from three partitions.
        racers = ["u100", "u101", "u102"]
        links = [r.user("W", a, at=2, attributes={"email": e}) for a, _, e in pairs]
        links += [r.user("W", b, at=3, attributes={"email": e}) for _, b, e in pairs]
        links += [r.user("W", c, at=4, attributes={"email": "race@x.io"}) for c in racers]
        produce(producer, kafka, [("UserUpsert", u) for u in links])
        merged_pairs = len(pairs) + 2
        wait_for(
            out.until(
                lambda o: sum(e["event_code"] == "MOE_USER_MERGED" for e in o.events) >= merged_pairs, workers
            ),
            120,
            what="every merge",
        )
        # Events of both sides of each merge, and of the racers, resolve to one user with both histories.
        names = [n for a, b, _ in pairs for n in (a, b)] + racers
        events = [r.event("W", n, at=10) for n in names]
        produce(producer, kafka, [("EventRecord", e) for e in events])
        wanted = {e["event_uuid"] for e in events}
        wait_for(
            out.until(lambda o: wanted <= {e["event_uuid"] for e in o.events}, workers), 120, what="events"
        )
        by_uuid = {e["event_uuid"]: e for e in out.events}
        uid_of = {n: by_uuid[e["event_uuid"]]["uid"] for n, e in zip(names, events, strict=True)}
        live = survivors(out)
        for a, b, _ in pairs:
            assert uid_of[a] == uid_of[b] and uid_of[a] in live
            tiers = json.loads(by_uuid[events[names.index(a)]["event_uuid"]]["user_attributes_json"])
            assert "tier" in tiers
        assert len({uid_of[c] for c in racers}) == 1 and uid_of["u100"] in live
        assert len(live) == 120 - len(pairs) - 2
        # Both workers applied records of the one workspace (their /metrics say so).
        for worker in workers:
            assert applied(worker, "W", "user") > 0 and applied(worker, "W", "event") > 0
    except AssertionError:
        print("\n".join(f"--- {w.name}\n{w.tail()}" for w in workers))
        raise
    finally:
        codes = [w.terminate() for w in workers]
        out.consumer.close()
    assert codes == [0, 0]


def test_a_worker_killed_while_merging_and_restarted_converges(
    twelve: KafkaSettings, producer_factory, tmp_path: Path
):
    kafka = twelve
    env = worker_env(kafka, tmp_path / "home", WORKSPACES)
    workers = start(env, tmp_path, "k1", "k2")
    out = output_reader(kafka)
    producer = producer_factory()
    try:
        wait_for(
            lambda: all(owned_in_log(w.log.read_text()) for w in workers), 90, what="both own partitions"
        )
        produce(producer, kafka, [("UserUpsert", r.user("W", f"v{i}", at=1)) for i in range(80)])
        wait_for(out.until(lambda o: len(o.profiles) >= 80, workers), 120, what="80 profiles")
        # 40 merges in flight, then a kill -9 of one worker, then a fresh start of it.
        links = [r.user("W", f"v{i}", at=2, attributes={"email": f"k{i // 2}@x.io"}) for i in range(80)]
        produce(producer, kafka, [("UserUpsert", u) for u in links])
        wait_for(
            out.until(lambda o: any(e["event_code"] == "MOE_USER_MERGED" for e in o.events), workers), 60
        )
        workers[0].kill()
        workers[0] = WorkerProcess("k1", env, tmp_path / "data-k1", tmp_path / "k1-again.log").start()

        def merged_pairs(o: Outputs) -> int:
            """Distinct merges (a replay after the kill may publish a merge's events twice)."""
            merges = {e["event_uuid"] for e in o.events if e["event_code"] == "MOE_USER_MERGED"}
            return len(merges)

        # Merges run asynchronously, by messages: the events are sent once every merge has completed.
        wait_for(out.until(lambda o: merged_pairs(o) >= 40, workers), 180, what="all 40 merges")
        events = [r.event("W", f"v{i}", at=20) for i in range(80)]
        produce(producer, kafka, [("EventRecord", e) for e in events])
        wanted = {e["event_uuid"] for e in events}
        wait_for(
            out.until(lambda o: wanted <= {e["event_uuid"] for e in o.events}, workers), 180, what="events"
        )
        uid_of = {}
        for i, event in enumerate(events):
            uid_of[i] = next(e["uid"] for e in out.events if e["event_uuid"] == event["event_uuid"])
        for k in range(40):  # each pair is one user, whatever the kill interrupted
            assert uid_of[2 * k] == uid_of[2 * k + 1], k
        assert len(set(uid_of.values())) == 40
    except AssertionError:
        print("\n".join(f"--- {w.name}\n{w.tail()}" for w in workers))
        raise
    finally:
        codes = [w.terminate() for w in workers]
        out.consumer.close()
    assert codes == [0, 0]


def test_grow_ingest_records_under_load_keeps_identity_state(
    worker_topics: KafkaSettings, producer_factory, admin: AdminClient, tmp_path: Path
):
    """Users created on 6 partitions, the topic grown to 12 while records keep coming, then events of those
    users are enriched with the attributes set before the growth, and merges across old and new
    partitions are still right."""
    kafka = worker_topics
    env = worker_env(kafka, tmp_path / "home", WORKSPACES)
    workers = start(env, tmp_path, "g1", "g2")
    out = output_reader(kafka)
    producer = producer_factory()
    try:
        users = [r.user("W", f"g{i}", at=1, attributes={"before": f"b{i}"}) for i in range(150)]
        produce(producer, kafka, [("UserUpsert", u) for u in users])
        wait_for(out.until(lambda o: len(o.profiles) >= 150, workers), 120, what="150 profiles")
        uid_before = {p["customer_id"]: p["uid"] for p in out.profiles}
        with pytest.raises(GrowthRefused, match="control topics"):
            grow(kafka, "control.workspaces", 3, wait_s=0)
        with pytest.raises(GrowthRefused, match="only add"):
            grow(kafka, kafka.topic("ingest.records"), 4, wait_s=0)
        # Load during the growth: events of every user, sent from another thread.
        during = [r.event("W", f"g{i}", at=30) for i in range(150)]
        sender = threading.Thread(
            target=produce, args=(producer, kafka, [("EventRecord", e) for e in during])
        )
        sender.start()
        result = grow(kafka, kafka.topic("ingest.records"), 12, wait_s=180)
        sender.join(60)
        assert (result.before, result.after) == (6, 12)
        moved = [i for i in range(150) if partition_of(f"W:g{i}", 12) != partition_of(f"W:g{i}", 6)]
        assert len(moved) > 30  # many users now live on a partition that did not exist
        after = [r.event("W", f"g{i}", at=40) for i in range(150)]
        # Merges across old and new partitions: pairs of moved and unmoved users share an e-mail.
        stayed = [i for i in range(150) if i not in moved]
        pairs = list(zip(moved[:10], stayed[:10], strict=True))
        links = [r.user("W", f"g{a}", at=50, attributes={"email": f"p{a}@x.io"}) for a, _ in pairs]
        links += [r.user("W", f"g{b}", at=51, attributes={"email": f"p{a}@x.io"}) for a, b in pairs]
        produce(producer, kafka, [("EventRecord", e) for e in after] + [("UserUpsert", u) for u in links])
        probes = [r.event("W", f"g{i}", at=60) for pair in pairs for i in pair]
        wanted = {e["event_uuid"] for e in during + after}
        wait_for(
            out.until(lambda o: wanted <= {e["event_uuid"] for e in o.events}, workers), 180, what="events"
        )
        wait_for(
            out.until(lambda o: sum(e["event_code"] == "MOE_USER_MERGED" for e in o.events) >= 10, workers),
            120,
            what="ten merges",
        )
        produce(producer, kafka, [("EventRecord", e) for e in probes])
        wanted |= {e["event_uuid"] for e in probes}
        wait_for(
            out.until(lambda o: wanted <= {e["event_uuid"] for e in o.events}, workers), 120, what="probes"
        )
        by_uuid = {}
        for e in out.events:
            assert by_uuid.setdefault(e["event_uuid"], e)["uid"] == e["uid"]  # a duplicate agrees
        for i, event in enumerate(after):
            got = by_uuid[event["event_uuid"]]
            assert got["uid"] == uid_before[f"g{i}"], f"g{i} became another user after the growth"
            assert json.loads(got["user_attributes_json"])["before"] == f"b{i}"
        for i, event in enumerate(during):
            assert by_uuid[event["event_uuid"]]["uid"] == uid_before[f"g{i}"]
        probe_uid = {p["customer_id"]: by_uuid[p["event_uuid"]]["uid"] for p in probes}
        for a, b in pairs:
            assert probe_uid[f"g{a}"] == probe_uid[f"g{b}"]
        assert not [
            p for p in survivors(out).values() if p["customer_id"] and p["uid"] not in uid_before.values()
        ]
    except AssertionError:
        print("\n".join(f"--- {w.name}\n{w.tail()}" for w in workers))
        raise
    finally:
        codes = [w.terminate() for w in workers]
        out.consumer.close()
    assert codes == [0, 0]

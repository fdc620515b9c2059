"""The identity core over many partitions (in memory, every interleaving a seed picks): forwarding,
claims, merges across partitions, racing merges, and the same result as one partition."""

from __future__ import annotations

import json
import random
import zlib

import pytest

from inflow.processors import growth, keys, protocol
from inflow.processors.routing import identifier_route, partition_of
from tests.processors import records as r
from tests.processors.cluster import Cluster, grow


def components(cluster: Cluster) -> set[frozenset[str]]:
    """Which customer ids ended up as one user: the live users' customer ids and merged ones."""
    live = cluster.live_users()
    by_uid = {uid: {p["customer_id"]} - {None} for uid, p in cluster.latest_profiles().items()}
    groups = []
    for uid, profile in live.items():
        ids = set(by_uid[uid])
        for merged in profile["merged_uids"]:
            ids |= by_uid.get(merged, set())
        groups.append(frozenset(ids))
    return set(groups)


def test_route_partition_is_librdkafkas_consistent_partitioner():
    assert partition_of("W:alice", 12) == zlib.crc32(b"W:alice") % 12
    assert identifier_route("W", "customer_id", "alice") == "W:alice"
    assert identifier_route("W", "email", "a@x") == "W:email=a@x"


def test_protocol_frames_round_trip_and_refuse_garbage():
    data = protocol.encode(protocol.FORWARD, {"ws": "W", "slot": None}, b"\xc3\x01record")
    message = protocol.decode(data)
    assert (message.kind, message.header, message.payload) == (
        "fwd",
        {"ws": "W", "slot": None},
        b"\xc3\x01record",
    )
    writes = [(0, b"k", b"v"), (3, b"\x00" * 3, b"{}")]
    assert protocol.unpack_writes(protocol.pack_writes(writes)) == writes
    for bad in (b"\xf0IPR1", protocol.MAGIC + b"\x00\x00\x00\x09{}", protocol.encode("fwd", {})[:-1] + b"!"):
        with pytest.raises(Exception, match="protocol"):
            protocol.decode(bad)


def test_single_identifier_workspace_needs_no_second_hop():
    cluster = Cluster(12)
    for i in range(60):
        cluster.send("UserUpsert", r.user("D", f"u{i}", attributes={"name": f"n{i}"}))
        cluster.send("EventRecord", r.event("D", f"u{i}", at=1))
    cluster.run()
    assert cluster.messages == {}  # nothing forwarded, nothing claimed
    events = cluster.events()
    assert len(events) == 60 and all(json.loads(e["user_attributes_json"])["u_n"] for e in events)
    spread = {partition_of(f"D:u{i}", 12) for i in range(60)}
    assert len(spread) > 6  # one workspace over many partitions


def test_event_keyed_by_email_is_forwarded_to_its_users_partition():
    cluster = Cluster(12)
    cluster.send("UserUpsert", r.user("W", "alice", attributes={"email": "a@x.io", "name": "Alice"}))
    cluster.run()
    cluster.send("EventRecord", r.event("W", None, user_identifiers={"email": "a@x.io"}, at=5))
    cluster.run()
    (event,) = cluster.events()
    assert json.loads(event["user_attributes_json"])["u_n"] == "Alice"
    assert event["customer_id"] == "alice"


@pytest.mark.parametrize("seed", range(8))
def test_merge_across_partitions_with_racing_claims_converges(seed: int):
    """Three users created separately, then linked by two records each naming two of them, applied in an
    order the seed picks: one user remains, with every attribute and identifier."""
    cluster = Cluster(12, seed)
    emails = {}
    for name in ("ann", "bob", "cy"):
        emails[name] = f"{name}@x.io"
        cluster.send("UserUpsert", r.user("W", name, attributes={"email": emails[name], f"from_{name}": 1}))
    cluster.run()
    # anonymous visitors that carry two users' emails link them (records keyed by the anonymous id)
    cluster.send("UserUpsert", r.user("W", None, anonymous_id="v1", user_identifiers={"email": "ann@x.io"}))
    cluster.send("UserUpsert", r.user("W", "bob", attributes={"moe_mobile": "+100"}))
    cluster.send("UserUpsert", r.user("W", "cy", attributes={"moe_mobile": "+100"}))
    cluster.send("UserUpsert", r.user("W", "ann", attributes={"moe_mobile": "+100"}))
    cluster.run()
    live = cluster.live_users()
    assert len(live) == 1, components(cluster)
    (survivor,) = live.values()
    attributes = json.loads(survivor["attributes_json"])
    assert {"from_ann", "from_bob", "from_cy"} <= set(attributes)
    # every identifier now resolves (following pointers) to the same stored user
    slots = set()
    for name in ("ann", "bob", "cy"):
        cluster.send("EventRecord", r.event("W", name, at=9))
    cluster.run()
    for event in cluster.events()[-3:]:
        slots.add(event["uid"])
    assert slots == {survivor["uid"]}
    merged = [e for e in cluster.events() if e["event_code"] == "MOE_USER_MERGED"]
    assert len(merged) == 2 + ("v1" in str(merged))  # two merges into the survivor (plus the visitor's)


@pytest.mark.parametrize("seed", range(6))
def test_many_partitions_agree_with_one(seed: int):
    """Random users linked by shared emails and mobiles: who ends up merged with whom is the same on 1
    partition as on 12 with any interleaving."""
    rng = random.Random(seed)
    plan = []
    for i in range(40):
        attributes = {f"a{i}": i}
        if rng.random() < 0.5:
            attributes["email"] = f"e{rng.randrange(12)}@x.io"
        if rng.random() < 0.4:
            attributes["moe_mobile"] = f"+{rng.randrange(10)}"
        plan.append(r.user("W", f"c{rng.randrange(25)}", attributes=attributes))
    results = []
    for n in (1, 12):
        cluster = Cluster(n, seed)
        for record in plan:
            cluster.send("UserUpsert", dict(record))
            if n == 1:
                cluster.run()
        cluster.run()
        results.append(components(cluster))
    assert results[0] == results[1]


def test_replayed_protocol_messages_change_nothing():
    cluster = Cluster(12, seed=3)
    cluster.send("UserUpsert", r.user("W", "p1", attributes={"email": "same@x.io"}))
    cluster.send("UserUpsert", r.user("W", "p2", attributes={"email": "same@x.io"}))
    # Apply, duplicating every protocol message once (a worker that crashed after its outputs were
    # flushed and before its commit sends them again).
    for _ in range(1000):
        busy = [p for p in range(12) if cluster.logs[p]]
        if not busy:
            break
        p = busy[0]
        head = cluster.logs[p][0]
        if protocol.is_protocol(head):
            cluster.logs[p].insert(1, head)
        cluster.step(p)
    assert len(cluster.live_users()) == 1
    (survivor,) = cluster.live_users().values()
    assert survivor["revision"] <= 4  # a replayed CARRY is not merged twice


def test_seen_marks_live_with_the_user_slot():
    assert keys.seen_key("W", "W:alice", "e1") == b"W\x1fW:alice\x1fe1"


def test_growth_moves_every_key_to_its_new_partition_and_keeps_users():
    cluster = Cluster(6, seed=5)
    for state in cluster.states:  # partitions that applied records know their layout
        growth.check_layout(state, cluster.states.index(state), 6, None)
    for i in range(80):
        cluster.send("UserUpsert", r.user("W", f"g{i}", attributes={"before": i, "email": f"g{i}@x.io"}))
    cluster.run()
    uids = {p["customer_id"]: p["uid"] for p in cluster.live_users().values()}
    grow(cluster, 12)
    cluster.run()
    assert cluster.messages["mark"] == 6 * 12 and cluster.messages["move"] >= 6
    assert not any(growth.waiting(state, p) for p, state in enumerate(cluster.states))
    for partition, state in enumerate(cluster.states):  # every key now lives where it routes
        for index, table in enumerate(state.tables):
            for key in list(table.backing):
                route = growth.route_of(index, key, table.backing[key])
                assert route is None or partition_of(route, 12) == partition, (partition, key)
    for i in range(80):
        cluster.send("EventRecord", r.event("W", f"g{i}", at=3))
        cluster.send("EventRecord", r.event("W", None, user_identifiers={"email": f"g{i}@x.io"}, at=4))
    cluster.run()
    for event in cluster.events():
        assert event["uid"] == uids[event["customer_id"]]
        assert "before" in json.loads(event["user_attributes_json"])


def test_a_protocol_message_sent_to_the_wrong_partition_is_passed_on():
    """A worker that still counted fewer partitions sends a CLAIM where the value no longer lives."""
    cluster = Cluster(12)
    route = identifier_route("W", "email", "x@y.io")
    home = partition_of(route, 12)
    wrong = (home + 1) % 12
    claim = {"ws": "W", "name": "email", "value": "x@y.io", "slot": "W:someone"}
    cluster.logs[wrong].append(protocol.encode(protocol.CLAIM, claim))
    cluster.run()
    assert cluster.states[home].identity.get(keys.identity_key("W", "email", "x@y.io")) == "W:someone"
    assert cluster.states[wrong].identity.get(keys.identity_key("W", "email", "x@y.io")) is None

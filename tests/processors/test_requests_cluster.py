"""Merge User, Delete User and Device opt-out requests over many partitions (in memory, the interleaving a
seed picks): the retained user is the one the request names, replays change nothing, unknown users are
rejected with the reason, erased users are tombstoned and their identifiers freed, and LTV sums on merge."""

from __future__ import annotations

import json
from itertools import count

import pytest

from inflow.processors import keys, protocol
from inflow.processors.routing import identifier_route, partition_of
from tests.processors import records as r
from tests.processors.cluster import SERDE, Cluster

N = 12


def two_users(same_partition: bool, retained_smaller: bool) -> tuple[str, str]:
    """(merged, retained) customer ids of workspace D, on one partition or two, in the slot order asked."""
    for i in count():
        a, b = f"a{i}", f"b{i}"
        if (partition_of(f"D:{a}", N) == partition_of(f"D:{b}", N)) == same_partition:
            return (b, a) if retained_smaller else (a, b)  # slot "D:a.." < "D:b.."
    raise AssertionError("unreachable")


def rejections(cluster: Cluster) -> list[dict]:
    return [o.record for o in cluster.outputs if o.topic == "processors.rejected"]


def setup(cluster: Cluster, merged: str, retained: str) -> None:
    # The merged user is seen later: MoEngage's automatic rule (latest last seen) would retain it.
    cluster.send("UserUpsert", r.user("D", retained, at=1, attributes={"name": "Ret", "t_rev": 10.0}))
    cluster.send("UserUpsert", r.user("D", merged, at=50, attributes={"name": "Mer", "city": "Pune"}))
    cluster.send("DeviceUpsert", r.device("D", merged, "dev-m", push_id="p-m", platform="ANDROID"))
    cluster.run()


@pytest.mark.parametrize("same_partition", [False, True])
@pytest.mark.parametrize("retained_smaller", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_merge_request_retains_the_named_user(same_partition: bool, retained_smaller: bool, seed: int):
    merged, retained = two_users(same_partition, retained_smaller)
    cluster = Cluster(N, seed)
    setup(cluster, merged, retained)
    before = {p["customer_id"]: uid for uid, p in cluster.live_users().items()}
    cluster.send("MergeRequest", r.merge("D", merged, retained, at=60))
    cluster.run()
    (uid, profile), *more = cluster.live_users().items()
    assert more == [] and uid == before[retained]
    assert profile["customer_id"] == retained and profile["merged_uids"] == [before[merged]]
    attributes = json.loads(profile["attributes_json"])
    assert attributes["u_n"] == "Ret" and attributes["city"] == "Pune"
    assert [d["device_id"] for d in json.loads(profile["devices_json"])] == ["dev-m"]
    by_code = {e["event_code"]: e for e in cluster.events()}
    assert by_code["MOE_USER_MERGED"]["uid"] == before[retained]
    assert by_code["MOE_USER_MERGE_EVENT"]["uid"] == before[merged]
    assert json.loads(by_code["MOE_USER_MERGED"]["event_attributes_json"])["merged_user"] == before[merged]
    assert cluster.latest_profiles()[before[merged]]["merged_into"] == before[retained]
    assert rejections(cluster) == []
    # Later records of either customer id are the retained user's.
    cluster.send("EventRecord", r.event("D", merged, at=70))
    cluster.send("EventRecord", r.event("D", retained, at=71))
    cluster.run()
    assert {e["uid"] for e in cluster.events() if e["event_code"] == "Purchase"} == {before[retained]}


@pytest.mark.parametrize("seed", range(4))
def test_merge_request_replayed_changes_nothing(seed: int):
    """Every protocol message delivered twice, the request sent twice (a replay at another position is a
    duplicate) and once more with a new id: one merge, one pair of merge events, no rejection."""
    merged, retained = two_users(same_partition=False, retained_smaller=False)
    cluster = Cluster(N, seed, replay=True)
    setup(cluster, merged, retained)
    request = r.merge("D", merged, retained, at=60)
    cluster.send("MergeRequest", request)
    cluster.send("MergeRequest", request)
    cluster.run()
    cluster.send("MergeRequest", r.merge("D", merged, retained, at=61))
    cluster.run()
    codes = [e["event_code"] for e in cluster.events()]
    assert sorted(codes) == ["MOE_USER_MERGED", "MOE_USER_MERGE_EVENT"]
    assert len(cluster.live_users()) == 1 and rejections(cluster) == []


def test_merge_request_of_unknown_users_is_rejected_with_the_reason():
    merged, retained = two_users(same_partition=False, retained_smaller=False)
    cluster = Cluster(N)
    cluster.send("UserUpsert", r.user("D", retained))
    cluster.send("MergeRequest", r.merge("D", "nobody", retained))
    cluster.run()
    cluster.send("UserUpsert", r.user("D", merged))
    cluster.send("MergeRequest", r.merge("D", merged, "ghost"))  # its entry is on another partition
    cluster.run()
    reasons = sorted(
        (x["record_name"], x["outcome"], x["reason"], x["request_id"]) for x in rejections(cluster)
    )
    assert reasons == [
        ("MergeRequest", "rejected", "merged_user 'nobody' is not a known user", "req-merge"),
        ("MergeRequest", "rejected", "retained_user 'ghost' is not a known user", "req-merge"),
    ]
    assert len(cluster.live_users()) == 2 and not [e for e in cluster.events() if "MERGE" in e["event_code"]]


@pytest.mark.parametrize("seed", range(3))
def test_ltv_from_imports_is_kept_and_summed_on_merge(seed: int):
    merged, retained = two_users(same_partition=False, retained_smaller=True)
    cluster = Cluster(N, seed)
    imported = {"source": "s3_import"}
    cluster.send("UserUpsert", r.user("D", retained, attributes={"t_rev": 120.5, "t_trans": 3}) | imported)
    cluster.send("UserUpsert", r.user("D", merged, attributes={"t_rev": 79.5, "t_trans": 2}) | imported)
    cluster.send("UserUpsert", r.user("D", "api-user", attributes={"t_rev": 5.0, "name": "A"}))
    cluster.run()
    by_cid = {p["customer_id"]: json.loads(p["attributes_json"]) for p in cluster.live_users().values()}
    assert by_cid[retained]["t_rev"] == 120.5 and "t_rev" not in by_cid["api-user"]  # read-only via API
    cluster.send("MergeRequest", r.merge("D", merged, retained))
    cluster.run()
    (profile,) = [p for p in cluster.live_users().values() if p["customer_id"] == retained]
    attributes = json.loads(profile["attributes_json"])
    assert (attributes["t_rev"], attributes["t_trans"]) == (200.0, 5)


def test_ltv_summed_on_an_automatic_merge_across_partitions():
    cluster = Cluster(N)
    imported = {"source": "s3_import"}
    cluster.send("UserUpsert", r.user("W", "x1", attributes={"email": "x@y.io", "t_rev": 1.5}) | imported)
    cluster.send("UserUpsert", r.user("W", None, user_identifiers={"email": "x@y.io"}))
    cluster.send("UserUpsert", r.user("W", "x2", attributes={"t_rev": 2.0, "email": "x@y.io"}) | imported)
    cluster.run()
    (profile,) = cluster.live_users().values()
    assert json.loads(profile["attributes_json"])["t_rev"] == 3.5


# -- Delete User --------------------------------------------------------------------------------------


def audits(cluster: Cluster) -> list[dict]:
    return [o.record for o in cluster.outputs if o.topic == "control.audit"]


@pytest.mark.parametrize("seed", range(3))
def test_delete_user_erases_profile_identifiers_and_devices(seed: int):
    """A user of an IR workspace with identifiers on several partitions, merged from two: deleted, its
    profile keys tombstoned, every index entry and device freed; the same ids later make a new user."""
    cluster = Cluster(N, seed)
    cluster.send("UserUpsert", r.user("W", "zed", attributes={"email": "z@x.io", "name": "Zed"}))
    cluster.send("UserUpsert", r.user("W", "yan", attributes={"moe_mobile": "9188", "email": "z@x.io"}))
    cluster.send("DeviceUpsert", r.device("W", "zed", "dev-z", push_id="p-z", platform="ANDROID"))
    cluster.run()
    (uid, profile), *more = cluster.live_users().items()
    assert more == [] and len(profile["merged_uids"]) == 1
    cluster.send("DeleteRequest", r.delete("W", profile["customer_id"]))
    cluster.run()
    assert cluster.erased() == {f"W:{uid}", f"W:{profile['merged_uids'][0]}"}
    for state in cluster.states:  # nothing of the user is left in any partition's index or device book
        assert all(
            not k.startswith(b"W" + keys.SEP.encode()) for k in state.identity.backing if b"merged" not in k
        )
        assert not state.devices.backing and not state.device_index.backing
    (audit,) = audits(cluster)
    assert (audit["action"], audit["outcome"], audit["request_id"]) == ("user.delete", "ok", "req-delete")
    detail = json.loads(audit["detail_json"])
    assert detail["uid"] == uid and detail["devices_removed"] == 1 and detail["identifiers_freed"] == 4
    # The same identifiers make new users with new uids; the device id can be registered again.
    cluster.send("UserUpsert", r.user("W", "zed", at=5, attributes={"email": "z@x.io"}))
    cluster.send("UserUpsert", r.user("W", "yan", at=6))
    cluster.send("DeviceUpsert", r.device("W", "yan", "dev-z", push_id="p-z", platform="ANDROID"))
    cluster.run()
    fresh = cluster.live_users()
    new = {p["customer_id"]: u for u, p in fresh.items() if f"W:{u}" not in cluster.erased()}
    assert set(new) == {"zed", "yan"} and not {uid, *profile["merged_uids"]} & set(new.values())
    assert json.loads(fresh[new["yan"]]["devices_json"])[0]["device_id"] == "dev-z"
    assert rejections(cluster) == []


def test_delete_user_on_another_partition_than_its_slot_and_replays():
    """The request keyed by a customer id whose user lives at another slot (merged into a smaller one) is
    forwarded there (every message delivered twice); a second request is refused."""
    merged, retained = two_users(same_partition=False, retained_smaller=False)  # data lands at merged's slot
    cluster = Cluster(N, replay=True)
    setup(cluster, merged, retained)
    cluster.send("MergeRequest", r.merge("D", merged, retained))
    cluster.run()
    (uid,) = cluster.live_users()
    request = r.delete("D", retained)
    cluster.send("DeleteRequest", request)
    cluster.run()
    assert len(cluster.erased()) == 2 and [a["outcome"] for a in audits(cluster)] == ["ok"]
    cluster.send("DeleteRequest", r.delete("D", merged))
    cluster.send("DeleteRequest", r.delete("D", retained))
    cluster.run()
    outcomes = sorted(a["outcome"] for a in audits(cluster))
    assert outcomes == ["ok", "rejected", "rejected"]
    assert sorted(x["reason"] for x in rejections(cluster)) == [
        f"no user has customer_id {merged!r}",
        f"no user has customer_id {retained!r}",
    ]
    cluster.send("EventRecord", r.event("D", retained, at=90))
    cluster.run()
    (event,) = [e for e in cluster.events() if e["event_code"] == "Purchase"]
    assert event["uid"] != uid and json.loads(event["user_attributes_json"]).get("u_n") is None


def test_delete_user_applied_again_at_its_position_publishes_the_same_outputs():
    """After a crash the same message is applied again over state that has the erasure: the tombstone and
    the audit record again, not a refusal."""
    cluster = Cluster(N)
    cluster.send("UserUpsert", r.user("D", "solo", attributes={"name": "S"}))
    cluster.send("DeleteRequest", r.delete("D", "solo", event_uuid="del-1"))
    cluster.run()
    home = partition_of("D:solo", N)
    position = cluster.states[home].seen.get(keys.seen_key("D", "D:solo", "del-1"))
    record = SERDE.decode(SERDE.encode("DeleteRequest", r.delete("D", "solo", event_uuid="del-1")))[1]
    again = cluster.processors[home].process("DeleteRequest", record, position, b"")
    assert [(o.topic, o.tombstone) for o in again] == [("profiles", True), ("control.audit", False)]
    assert again[1].record["outcome"] == "ok" and rejections(cluster) == []
    assert cluster.processors[home].process("DeleteRequest", record, [home, 999, 0], b"") == []  # a duplicate


# -- Device opt-out -----------------------------------------------------------------------------------


def test_device_opt_out_blocks_and_unblocks_devices_and_rejects_unknown_ones():
    cluster = Cluster(N)
    cluster.send("UserUpsert", r.user("W", "opt", attributes={"email": "o@x.io"}))
    cluster.send("DeviceUpsert", r.device("W", "opt", "d1", push_id="p1", platform="ANDROID"))
    cluster.send("DeviceUpsert", r.device("W", "opt", "d2", moe_gaid="g2", platform="ANDROID"))
    cluster.run()
    cluster.send(
        "DeviceOptOut", r.opt_out("W", "o@x.io", [{"push_id": "p1"}, {"moe_gaid": "g2"}], kind="email")
    )
    cluster.run()
    (profile,) = cluster.live_users().values()
    devices = {d["device_id"]: d for d in json.loads(profile["devices_json"])}
    assert [devices[d]["moe_push_opted"] for d in ("d1", "d2")] == [False, False]
    assert devices["d1"]["opted_out"] is True
    cluster.send(
        "DeviceOptOut", r.opt_out("W", "opt", [{"unique_id": "d1"}, {"unique_id": "nope"}], action="unblock")
    )
    cluster.send("DeviceOptOut", r.opt_out("W", "opt", [{"push_id": "p9"}]))
    cluster.send("DeviceOptOut", r.opt_out("W", "nobody", [{"push_id": "p1"}]))
    cluster.send("DeviceOptOut", r.opt_out("W", "x", [{"push_id": "p1"}], kind="city"))
    cluster.run()
    (profile,) = cluster.live_users().values()
    devices = {d["device_id"]: d for d in json.loads(profile["devices_json"])}
    assert (devices["d1"]["moe_push_opted"], devices["d1"]["opted_out"]) == (True, False)
    assert devices["d2"]["moe_push_opted"] is False
    assert sorted(x["reason"] for x in rejections(cluster)) == [
        'no device of the user matches [{"push_id": "p9"}]',
        'no device of the user matches [{"unique_id": "nope"}]; the other devices were applied',
        "no user has customer_id 'nobody'",
        "user_identifier_type 'city' is not an identifier of the workspace (customer_id, email, moe_mobile)",
    ]


def test_merge_and_release_messages_sent_to_the_wrong_partition_are_passed_on():
    """As every protocol message: a worker that counted fewer partitions may send them elsewhere."""
    merged, retained = two_users(same_partition=False, retained_smaller=True)
    cluster = Cluster(N)
    setup(cluster, merged, retained)
    route = identifier_route("D", "customer_id", retained)
    wrong = (partition_of(route, N) + 1) % N
    entry = keys.identity_key("D", "customer_id", retained)
    slot = f"D:{retained}"
    request = {"event_uuid": "m-1", "workspace_id": "D", "request_id": "r", "received_at": 1}
    request |= {"merged_user": merged, "retained_user": retained}
    header = {"ws": "D", "value": retained, "slot": f"D:{merged}", "request": request}
    cluster.logs[wrong].append(protocol.encode(protocol.MERGE, header))
    cluster.run()
    assert len(cluster.live_users()) == 1 and rejections(cluster) == []
    release = {"ws": "D", "name": "customer_id", "value": retained, "slots": [slot]}
    cluster.logs[wrong].append(protocol.encode(protocol.RELEASE, release))
    cluster.run()
    assert all(state.identity.get(entry) is None for state in cluster.states)


@pytest.mark.parametrize("seed", range(3))
def test_a_uid_is_never_given_twice_through_deletes_and_merges(seed: int):
    """A slot's user deleted and made again, merged away into a user retained at that slot, that user
    deleted, and made again (on one or two partitions): every user ever made has a uid of its own."""
    small, big = "a0", next(f"z{i}" for i in count() if partition_of(f"D:z{i}", N) != partition_of("D:a0", N))
    cluster = Cluster(N, seed)
    made: list[str] = []

    def new_users() -> None:
        cluster.run()
        for uid in cluster.latest_profiles():
            if uid not in made:
                made.append(uid)

    cluster.send("UserUpsert", r.user("D", small, at=1))
    new_users()
    cluster.send("DeleteRequest", r.delete("D", small))
    cluster.send("UserUpsert", r.user("D", small, at=2))  # slot D:a0, generation 1
    cluster.send("UserUpsert", r.user("D", big, at=3))
    new_users()
    cluster.send("MergeRequest", r.merge("D", small, big))  # big retained, stored at D:a0
    new_users()
    cluster.send("DeleteRequest", r.delete("D", big))
    new_users()
    cluster.send("UserUpsert", r.user("D", small, at=4))
    cluster.send("UserUpsert", r.user("D", big, at=5))
    new_users()
    assert len(made) == 5 and len(set(made)) == 5
    assert len(cluster.erased()) == 3 and rejections(cluster) == []
    live = {p["customer_id"] for u, p in cluster.live_users().items() if f"D:{u}" not in cluster.erased()}
    assert live == {small, big}

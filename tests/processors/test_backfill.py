"""Identifier backfill (§2.8 "Existing users merge ... after activation") on in-memory partitions: the
profiles stored before an identifier was switched on are indexed by it and users sharing a value merge
through the ordinary protocol. Real workers: ``test_backfill_workers.py``."""

from __future__ import annotations

import json
from typing import Any

from inflow.processors.backfill import Backfill, identifier_value, meta_key
from inflow.processors.workspaces import IdentityRulesDirectory
from tests.processors import records as r
from tests.processors.cluster import Cluster, grow

WS = "B"


def cluster_with(listed: dict[str, tuple[str, ...]], partitions: int = 6) -> tuple[Cluster, list[Backfill]]:
    cluster = Cluster(partitions)
    directory = IdentityRulesDirectory([], listed.get)
    for processor in cluster.processors:
        processor.directory = directory
    clock = [0.0]
    backfills = [
        Backfill(p, lambda: [WS], batch=2, clock=lambda: clock.__setitem__(0, clock[0] + 10) or clock[0])
        for p in cluster.processors
    ]
    return cluster, backfills


def backfill_until_done(cluster: Cluster, backfills: list[Backfill]) -> list[dict[str, Any]]:
    """Every partition steps its backfill, the protocol messages it causes are applied, until no job is
    left; returns the progress records (control.backfill)."""
    progress = []
    for _ in range(100):
        for partition, backfill in enumerate(backfills):
            cluster.processors[partition].at(partition, cluster.n)
            for output in backfill.step(partition):
                if output.topic == "control.backfill":
                    progress.append(json.loads(output.raw or b"{}"))
                elif output.raw is not None:
                    assert output.partition is not None
                    cluster.logs[output.partition].append(output.raw)
                else:
                    cluster.outputs.append(output)
            cluster.states[partition].flush()
        cluster.run()
        if not any((s.identity.get(meta_key(p)) or {}).get("jobs") for p, s in enumerate(cluster.states)):
            return progress
    raise AssertionError("the backfill did not end")


def test_users_sharing_an_email_merge_once_email_is_switched_on_and_others_are_indexed() -> None:
    listed: dict[str, tuple[str, ...]] = {WS: ()}
    cluster, backfills = cluster_with(listed)
    for i, (cid, email) in enumerate([("old", "same@x.io"), ("new", "same@x.io"), ("solo", "solo@x.io")]):
        cluster.send(
            "UserUpsert", r.user(WS, cid, at=i + 1, attributes={"email": email, "moe_spam": cid == "old"})
        )
    cluster.send("UserUpsert", r.user(WS, "nomail", at=9, attributes={"name": "No Mail"}))
    cluster.run()
    assert cluster.messages == {}  # one identifier: no protocol message
    assert backfill_until_done(cluster, backfills) == []  # nothing to backfill while only customer_id is on
    assert len(cluster.live_users()) == 4

    listed[WS] = ("email",)
    progress = backfill_until_done(cluster, backfills)
    live = {p["customer_id"]: p for p in cluster.live_users().values()}
    assert set(live) == {"new", "solo", "nomail"}  # old merged into new (seen last)
    kept = live["new"]
    assert json.loads(kept["attributes_json"])["moe_spam"] is True  # true on a conflict
    merged = next(p for p in cluster.latest_profiles().values() if p["customer_id"] == "old")
    assert merged["merged_into"] == kept["uid"] and kept["merged_uids"] == [merged["uid"]]
    assert live["solo"]["identifiers"] == {"email": "solo@x.io"} and live["solo"]["merged_uids"] == []
    assert live["nomail"]["identifiers"] == {}
    codes = {e["event_code"]: e["uid"] for e in cluster.events()}
    assert codes == {"MOE_USER_MERGED": kept["uid"], "MOE_USER_MERGE_EVENT": merged["uid"]}
    # Every partition reports its scan, ending done; three profiles held an e-mail.
    final = {p["partition"]: p for p in progress}
    assert set(final) == set(range(cluster.n)) and all(p["done"] for p in final.values())
    assert sum(p["scanned"] for p in final.values()) == 4 and sum(p["claimed"] for p in final.values()) == 3
    # The next record by e-mail resolves to the retained user; a second activation pass changes nothing.
    cluster.send("EventRecord", r.event(WS, None, at=20, user_identifiers={"email": "same@x.io"}))
    cluster.run()
    assert cluster.events()[-1]["uid"] == kept["uid"]
    before = len(cluster.outputs)
    assert backfill_until_done(cluster, backfills) == []
    assert len(cluster.outputs) == before


def test_an_identifier_switched_off_and_on_again_is_backfilled_again() -> None:
    listed: dict[str, tuple[str, ...]] = {WS: ("email",)}
    cluster, backfills = cluster_with(listed, partitions=2)
    backfill_until_done(cluster, backfills)  # nothing stored yet
    listed[WS] = ()
    backfill_until_done(cluster, backfills)
    cluster.send("UserUpsert", r.user(WS, "a", at=1, attributes={"email": "e@x"}))
    cluster.send("UserUpsert", r.user(WS, "b", at=2, attributes={"email": "e@x"}))
    cluster.run()
    assert len(cluster.live_users()) == 2  # email was off
    listed[WS] = ("email",)
    backfill_until_done(cluster, backfills)
    assert [p["customer_id"] for p in cluster.live_users().values()] == ["b"]


def test_identifier_value_reads_the_attribute_or_its_standard_key() -> None:
    profile = {"attributes": {"u_em": "a@x", "n": 5}, "identifiers": {"moe_mobile": "+1"}}
    assert identifier_value(profile, "email") == "a@x"
    assert identifier_value(profile, "n") == "5"  # identifiers are strings
    assert identifier_value(profile, "moe_mobile") == "+1"
    assert identifier_value({"attributes": {"email": "  "}, "identifiers": {}}, "email") is None  # blank


def test_profiles_moved_by_a_growth_onto_a_partition_that_finished_its_scan_are_indexed() -> None:
    """A growth moves profiles onto old partitions too: one whose scan had already ended (or passed their
    keys) scans again, so the profiles that arrive are indexed and users sharing a value still merge."""
    listed: dict[str, tuple[str, ...]] = {WS: ()}
    cluster, backfills = cluster_with(listed, partitions=2)
    for i in range(40):
        email = "twin@x.io" if i in (0, 1) else f"u{i}@x.io"  # two users with one e-mail: a merge
        cluster.send("UserUpsert", r.user(WS, f"c{i}", at=i + 1, attributes={"email": email}))
    cluster.run()
    listed[WS] = ("email",)
    # Partition 1 finishes its scan; partition 0 has not stepped yet when the topic grows.
    for _ in range(100):
        cluster.processors[1].at(1, cluster.n)
        for output in backfills[1].step(1):
            if output.raw is not None and output.partition is not None:
                cluster.logs[output.partition].append(output.raw)
            elif output.topic != "control.backfill":
                cluster.outputs.append(output)
        cluster.states[1].flush()
        cluster.run()
        if not (cluster.states[1].identity.get(meta_key(1)) or {}).get("jobs"):
            break
    moved = {key for key in cluster.states[0].users.backing if not key.startswith(b"\x00")}
    grow(cluster, 3)
    cluster.run()
    arrived_at_1 = moved & set(cluster.states[1].users.backing)
    assert arrived_at_1, "the seed moves no profile from partition 0 to partition 1: pick other users"
    backfills.append(Backfill(cluster.processors[2], lambda: [WS], batch=2, clock=backfills[0].clock))
    backfill_until_done(cluster, backfills)
    live = {p["customer_id"]: p for p in cluster.live_users().values()}
    assert len(live) == 39  # c0 and c1 merged, wherever the growth put them
    assert all(
        p["identifiers"] == {"email": "twin@x.io" if c in ("c0", "c1") else f"u{c[1:]}@x.io"}
        for c, p in live.items()
    )

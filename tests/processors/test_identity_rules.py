"""MoEngage's identity resolution rules on the lane processor with in-memory state."""

from __future__ import annotations

import json

import pytest

from inflow.config.file import WorkspaceConfig
from inflow.processors.identity import BLOCKED_CUSTOMER_IDS, choose_retained
from inflow.processors.workspaces import IdentityRulesDirectory
from tests.processors import records as r
from tests.processors.conftest import Lane, attrs


def test_two_users_sharing_an_email_are_merged_into_the_latest_seen(lane: Lane):
    a = lane.uid_of(
        lane.feed("UserUpsert", r.user("W", "alice", at=1, attributes={"email": "a@x.io", "city": "Oslo"}))
    )
    lane.feed("DeviceUpsert", r.device("W", "alice", "dev-a", at=2, platform="ANDROID", push_id="tok-a"))
    b = lane.uid_of(lane.feed("UserUpsert", r.user("W", "bob", at=3, attributes={"first_name": "Bob"})))
    out = lane.feed("UserUpsert", r.user("W", "bob", at=4, attributes={"email": "a@x.io", "city": "Rome"}))

    merges = {e["event_code"]: e for e in lane.events(out)}
    assert merges["MOE_USER_MERGED"]["uid"] == b  # bob was seen last: retained
    assert merges["MOE_USER_MERGE_EVENT"]["uid"] == a
    assert json.loads(merges["MOE_USER_MERGED"]["event_attributes_json"])["merged_user"] == a
    retained = lane.profile("W", b)
    assert attrs(retained)["city"] == "Rome"  # retained attributes win
    assert attrs(retained)["u_fn"] == "Bob"
    assert attrs(retained)["u_em"] == "a@x.io"
    assert retained["merged_uids"] == [a]
    assert retained["customer_id"] == "bob"
    assert [d["device_id"] for d in json.loads(retained["devices_json"])] == ["dev-a"]  # devices move
    assert retained["first_seen"] == r.BASE_MS + 1000  # earliest first seen of the two
    merged = lane.profile("W", a)
    assert merged["merged_into"] == b
    assert json.loads(merged["devices_json"]) == []
    # Later events of either identifier resolve to the retained user, device included.
    for who in ("alice", "bob"):
        (ev,) = lane.events(lane.feed("EventRecord", r.event("W", who, at=5, device_id="dev-a")))
        assert ev["uid"] == b
        assert json.loads(ev["device_attributes_json"])["push_id"] == "tok-a"
    (ev,) = lane.events(
        lane.feed("EventRecord", r.event("W", None, at=6, user_identifiers={"email": "a@x.io"}))
    )
    assert ev["uid"] == b


def test_attribute_presence_rule_beats_latest_last_seen(lane: Lane):
    kept = lane.uid_of(
        lane.feed("UserUpsert", r.user("P", "c1", at=1, attributes={"email": "e@x", "loyalty_id": "L1"}))
    )
    lane.uid_of(lane.feed("UserUpsert", r.user("P", "c2", at=5, attributes={"name": "Newer"})))
    out = lane.feed("UserUpsert", r.user("P", "c2", at=6, attributes={"email": "e@x"}))
    (merged_event,) = [e for e in lane.events(out) if e["event_code"] == "MOE_USER_MERGED"]
    assert merged_event["uid"] == kept
    assert attrs(lane.profile("P", kept))["u_n"] == "Newer"  # missing attribute copied from the merged user
    (ev,) = lane.events(lane.feed("EventRecord", r.event("P", "c2", at=7)))
    assert ev["uid"] == kept and ev["customer_id"] == "c1"


def test_anonymous_user_merges_into_registered_user(lane: Lane):
    anon = lane.uid_of(
        lane.feed(
            "UserUpsert",
            r.user("W", None, at=1, anonymous_id="anon-1", attributes={"email": "z@x", "seen_ad": True}),
        )
    )
    reg = lane.uid_of(lane.feed("UserUpsert", r.user("W", "zed", at=2, attributes={"moe_mobile": "+4711"})))
    assert anon != reg
    out = lane.feed("UserUpsert", r.user("W", "zed", at=3, attributes={"email": "z@x"}))
    codes = {e["event_code"]: e["uid"] for e in lane.events(out)}
    assert codes == {"MOE_USER_MERGED": reg, "MOE_USER_MERGE_EVENT": anon}
    profile = lane.profile("W", reg)
    assert profile["anonymous_ids"] == ["anon-1"]
    assert attrs(profile)["seen_ad"] is True
    (ev,) = lane.events(lane.feed("EventRecord", r.event("W", None, at=4, anonymous_id="anon-1")))
    assert ev["uid"] == reg


def test_anonymous_user_becomes_registered_when_only_it_holds_the_identifier(lane: Lane):
    anon = lane.uid_of(
        lane.feed("UserUpsert", r.user("W", None, at=1, anonymous_id="anon-2", attributes={"email": "y@x"}))
    )
    out = lane.feed("UserUpsert", r.user("W", "yan", at=2, attributes={"email": "y@x"}))
    assert lane.uid_of(out) == anon and not lane.events(out)
    assert lane.profile("W", anon)["customer_id"] == "yan"


def test_conflicting_customer_ids_sharing_an_email_merge_and_both_ids_resolve(lane: Lane):
    first = lane.uid_of(lane.feed("UserUpsert", r.user("W", "c-1", at=1, attributes={"email": "s@x"})))
    out = lane.feed("UserUpsert", r.user("W", "c-2", at=2, attributes={"email": "s@x", "plan": "pro"}))
    second = next(e["uid"] for e in lane.events(out) if e["event_code"] == "MOE_USER_MERGED")
    assert second != first
    assert lane.profile("W", first)["merged_into"] == second
    assert lane.profile("W", second)["customer_id"] == "c-2"
    for cid in ("c-1", "c-2"):
        assert lane.events(lane.feed("EventRecord", r.event("W", cid, at=3)))[0]["uid"] == second


def test_three_users_merged_by_one_record(lane: Lane):
    u1 = lane.uid_of(lane.feed("UserUpsert", r.user("W", "m1", at=1)))
    u2 = lane.uid_of(lane.feed("UserUpsert", r.user("W", None, at=2, attributes={"email": "m@x"})))
    u3 = lane.uid_of(lane.feed("UserUpsert", r.user("W", None, at=3, attributes={"moe_mobile": "+1"})))
    out = lane.feed("UserUpsert", r.user("W", "m1", at=9, attributes={"email": "m@x", "moe_mobile": "+1"}))
    merged = sorted(e["uid"] for e in lane.events(out) if e["event_code"] == "MOE_USER_MERGE_EVENT")
    assert merged == sorted([u2, u3])
    assert sorted(lane.profile("W", u1)["merged_uids"]) == sorted([u2, u3])


@pytest.mark.parametrize("blocked", ["guest", "NULL", " unknown ", "0", "-1", "customer_id", "n/a"])
def test_blocked_customer_id_is_rejected_with_its_reason(lane: Lane, blocked: str):
    out = lane.feed("UserUpsert", r.user("W", blocked, attributes={"name": "x"}))
    (rej,) = lane.rejected(out)
    assert "blocked value" in rej["reason"] and rej["outcome"] == "rejected"
    assert json.loads(rej["record_json"])["customer_id"] == blocked
    assert not [o for o in out if o.topic == "profiles"]
    (rej_event,) = lane.rejected(lane.feed("EventRecord", r.event("W", blocked)))
    assert "blocked" in rej_event["reason"]


def test_blocked_list_is_the_reference_list():
    assert len(BLOCKED_CUSTOMER_IDS) == 22 and "dummy_seller_code" in BLOCKED_CUSTOMER_IDS


def test_blank_null_and_inactive_identifiers_are_ignored(lane: Lane):
    u = lane.uid_of(lane.feed("UserUpsert", r.user("W", "keep", attributes={"email": "k@x"})))
    # blank email, null mobile and an identifier the workspace does not use never match anything
    out = lane.feed(
        "UserUpsert", r.user("W", "other", attributes={"email": "  ", "moe_mobile": None, "phone": "k@x"})
    )
    assert lane.uid_of(out) != u and not lane.events(out)
    (rej,) = lane.rejected(lane.feed("UserUpsert", r.user("W", "", attributes={"email": ""})))
    assert "no active identifier" in rej["reason"]


def test_identifier_match_is_exact_and_numbers_become_strings(lane: Lane):
    u = lane.uid_of(lane.feed("UserUpsert", r.user("W", "n1", attributes={"moe_mobile": 4711})))
    assert (
        lane.events(lane.feed("EventRecord", r.event("W", None, user_identifiers={"moe_mobile": "4711"})))[0][
            "uid"
        ]
        == u
    )
    other = lane.events(
        lane.feed("EventRecord", r.event("W", None, user_identifiers={"moe_mobile": "04711"}))
    )
    assert other[0]["uid"] != u


def test_update_existing_only_never_creates(lane: Lane):
    (rej,) = lane.rejected(
        lane.feed("UserUpsert", r.user("W", "ghost", update_existing_only=True, attributes={"a": 1}))
    )
    assert rej["outcome"] == "skipped" and "update_existing_only" in rej["reason"]
    lane.feed("UserUpsert", r.user("W", "real"))
    out = lane.feed("UserUpsert", r.user("W", "real", update_existing_only=True, attributes={"a": 2}))
    assert attrs(lane.profile("W", lane.uid_of(out)))["a"] == 2


def test_choose_retained_tiebreaks_deterministically():
    a = {"uid": "b", "last_seen": 5, "first_seen": 1, "attributes": {}}
    b = {"uid": "a", "last_seen": 5, "first_seen": 1, "attributes": {}}
    c = {"uid": "c", "last_seen": 5, "first_seen": 0, "attributes": {}}
    assert choose_retained([a, b], None)["uid"] == "a"
    assert choose_retained([a, b, c], None)["uid"] == "c"
    assert choose_retained([a, {**b, "attributes": {"vip": " "}}], "vip")["uid"] == "a"  # blank is absent


def test_values_on_an_identifiers_exception_list_never_merge(lane: Lane):
    a = lane.uid_of(lane.feed("UserUpsert", r.user("W", "ex1", attributes={"email": "test@example.com"})))
    out = lane.feed("UserUpsert", r.user("W", "ex2", attributes={"email": "test@example.com"}))
    b = lane.uid_of(out)
    assert a != b and not lane.events(out)  # no merge: the shared value is on the exception list
    assert attrs(lane.profile("W", b))["u_em"] == "test@example.com"  # still an attribute
    assert "email" not in lane.profile("W", b)["identifiers"]
    # an event carrying only that value identifies nobody
    (rej,) = lane.rejected(
        lane.feed("EventRecord", r.event("W", None, user_identifiers={"email": "test@example.com"}))
    )
    assert "no active identifier" in rej["reason"]


def test_only_the_first_50_users_with_one_identifier_value_are_merged(lane: Lane):
    first = lane.uid_of(lane.feed("UserUpsert", r.user("W", "cap-0", at=1, attributes={"email": "f@x"})))
    merges = 0
    for n in range(1, 50):  # users 2..50 share the value: each merges
        out = lane.feed("UserUpsert", r.user("W", f"cap-{n}", at=1, attributes={"email": "f@x"}))
        merges += sum(e["event_code"] == "MOE_USER_MERGED" for e in lane.events(out))
    assert merges == 49
    out = lane.feed("UserUpsert", r.user("W", "cap-50", at=2, attributes={"email": "f@x", "city": "Oslo"}))
    assert not lane.events(out)  # the 51st user is not merged ...
    late = lane.profile("W", lane.uid_of(out))
    assert late["customer_id"] == "cap-50" and late["merged_into"] is None
    assert attrs(late) == {"city": "Oslo"} | {k: attrs(late)[k] for k in ("cr_t", "u_l_a")}
    assert "email" not in late["identifiers"]  # ... and the value is dropped from its profile
    # the value still resolves to the merged group, the 51st user keeps its own customer_id
    (by_mail,) = lane.events(lane.feed("EventRecord", r.event("W", None, user_identifiers={"email": "f@x"})))
    (by_id,) = lane.events(lane.feed("EventRecord", r.event("W", "cap-50")))
    assert by_id["uid"] == late["uid"] != by_mail["uid"]
    group = lane.profile("W", by_mail["uid"])
    assert {group["uid"], *group["merged_uids"]} >= {first} and len(group["merged_uids"]) == 49


def test_identifiers_from_control_workspaces_win_and_changes_apply_to_the_next_record():
    listed: dict[str, tuple[str, ...]] = {"W": ("email",)}
    config = WorkspaceConfig(
        id="W", identifiers=["customer_id", "moe_mobile"], identifier_exceptions={"email": ["x@x"]}
    )
    directory = IdentityRulesDirectory([config], listed.get)
    rules = directory.rules("W")
    assert rules.identifiers == ("customer_id", "email")  # the topic's list, ID always first
    assert rules.is_exception("email", "x@x")  # exceptions stay the file's
    assert directory.rules("W") is rules  # cached while unchanged
    listed["W"] = ("email", "moe_mobile")
    assert directory.rules("W").identifiers == ("customer_id", "email", "moe_mobile")
    del listed["W"]  # unknown to the topic: the file's list
    assert directory.rules("W").identifiers == ("customer_id", "moe_mobile")
    assert directory.rules("other").identifiers == ("customer_id",)  # known to neither: the default


@pytest.mark.parametrize("flag", ["moe_hard_bounce", "moe_spam", "moe_unsubscribe"])
@pytest.mark.parametrize("merged_value", [True, "true"])
def test_opt_out_flag_true_on_the_merged_user_makes_the_retained_one_true(
    lane: Lane, flag: str, merged_value: object
):
    """§2.8: hard_bounce / spam / unsubscribe become true when the merged profiles disagree, also when the
    retained (latest seen) user has false."""
    merged = lane.uid_of(
        lane.feed(
            "UserUpsert", r.user("W", "flag-a", at=1, attributes={"email": "f@x.io", flag: merged_value})
        )
    )
    kept = lane.uid_of(lane.feed("UserUpsert", r.user("W", "flag-b", at=2, attributes={flag: False})))
    out = lane.feed("UserUpsert", r.user("W", "flag-b", at=3, attributes={"email": "f@x.io"}))
    codes = {e["event_code"]: e["uid"] for e in lane.events(out)}
    assert codes == {"MOE_USER_MERGED": kept, "MOE_USER_MERGE_EVENT": merged}
    assert attrs(lane.profile("W", kept))[flag] is True


@pytest.mark.parametrize(
    ("retained", "merged", "expected"),
    [
        (False, True, True),
        (True, False, True),
        (False, "true", True),
        ("false", False, "false"),  # no conflict (both false): the retained value stays as it was
        (False, "false", False),
        (False, None, False),
    ],
)
def test_merge_attributes_opt_out_flags_are_true_when_either_side_is_true(retained, merged, expected):
    from inflow.processors.attributes import merge_attributes

    result = merge_attributes({"moe_spam": retained}, {"moe_spam": merged})
    assert result["moe_spam"] == expected

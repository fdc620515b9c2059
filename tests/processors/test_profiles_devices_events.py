"""Profiles, devices and enriched events on the lane processor with in-memory state."""

from __future__ import annotations

import json

import pytest

from inflow.config.file import WorkspaceConfig
from inflow.processors import keys
from inflow.processors.devices import MAX_DEVICES_PER_USER
from inflow.processors.engine import LaneProcessor, enriched_events
from inflow.processors.routing import identifier_route
from inflow.processors.state import State
from inflow.processors.workspaces import IdentityRules, IdentityRulesDirectory, rules_from_config
from tests.processors import records as r
from tests.processors.conftest import Lane, attrs


def test_profile_upsert_maps_standard_attributes_and_keeps_seen_times(lane: Lane):
    uid = lane.uid_of(
        lane.feed(
            "UserUpsert",
            r.user(
                "W",
                "u1",
                at=10,
                attributes={
                    "name": "Ann Lee",
                    "first_name": "Ann",
                    "last_name": "Lee",
                    "email": "ann@x",
                    "mobile": "4711",
                    "gender": "F",
                    "birthday": "1990-01-02",
                    "tier": "gold",
                    "platforms": [{"platform": "android", "active": "true"}],
                    "publisher_name": "ads",
                    "t_rev": 99,
                },
            ),
        )
    )
    lane.feed(
        "UserUpsert",
        r.user(
            "W",
            "u1",
            at=20,
            attributes={
                "publisher_name": "other",
                "tier": "silver",
                "platforms": [
                    {"platform": "ANDROID", "active": "false"},
                    {"platform": "web", "active": "true"},
                ],
            },
        ),
    )
    snap = lane.profile("W", uid)
    a = attrs(snap)
    assert {k: a[k] for k in ("u_n", "u_fn", "u_ln", "u_em", "u_mb", "u_gd", "u_bd")} == {
        "u_n": "Ann Lee",
        "u_fn": "Ann",
        "u_ln": "Lee",
        "u_em": "ann@x",
        "u_mb": "4711",
        "u_gd": "F",
        "u_bd": "1990-01-02",
    }
    assert a["tier"] == "silver"
    assert a["publisher_name"] == "ads"  # create-only
    assert "t_rev" not in a  # read-only, derived
    assert snap["platforms"] == ["web"]
    assert snap["first_seen"] == r.BASE_MS + 10_000 and snap["last_seen"] == r.BASE_MS + 20_000
    assert a["cr_t"] == snap["first_seen"] and a["u_l_a"] == snap["last_seen"]
    assert snap["revision"] == 2


def test_array_operators_add_and_remove_values_once(lane: Lane):
    uid = lane.uid_of(lane.feed("UserUpsert", r.user("W", "arr", attributes={"tags": ["a"]})))
    lane.feed(
        "UserUpsert",
        r.user("W", "arr", attributes={"addValueToArrayField": {"tags": ["b", "a"], "new": "x"}}),
    )
    lane.feed("UserUpsert", r.user("W", "arr", attributes={"removeValueFromArrayField": {"tags": "a"}}))
    assert attrs(lane.profile("W", uid))["tags"] == ["b"]
    assert attrs(lane.profile("W", uid))["new"] == ["x"]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            {"addValueToArrayField": {"t": 1}, "removeValueFromArrayField": {"t": 2}},
            "Cannot add and remove 't'",
        ),
        ({"t": [1], "addValueToArrayField": {"t": 2}}, "Cannot set 't'"),
        ({"addValueToArrayField": {"platforms": "web"}}, "Reserved attribute 'platforms'"),
        ({"id": 3}, "attribute name 'id'"),
        ({"platforms": [{"platform": "fridge"}]}, "not one of ANDROID"),
    ],
)
def test_bad_attribute_updates_are_rejected_and_change_nothing(lane: Lane, attributes, message):
    uid = lane.uid_of(lane.feed("UserUpsert", r.user("W", "bad", attributes={"t": [0]})))
    (rej,) = lane.rejected(lane.feed("UserUpsert", r.user("W", "bad", attributes=attributes)))
    assert message in rej["reason"]
    assert attrs(lane.profile("W", uid))["t"] == [0]


def test_unset_attributes_removes_custom_but_not_system_attributes(lane: Lane):
    uid = lane.uid_of(
        lane.feed(
            "UserUpsert",
            r.user("W", "un", attributes={"promo_a": 1, "promo_b": 2, "Keep": 3, "email": "q@x"}),
        )
    )
    unset = json.dumps(
        [{"type": "prefix", "attr": "PROMO_", "case_sensitive": False}, {"type": "equals", "attr": "u_em"}]
    )
    lane.feed("UserUpsert", r.user("W", "un", unset=unset))
    a = attrs(lane.profile("W", uid))
    assert "promo_a" not in a and "promo_b" not in a and a["Keep"] == 3 and a["u_em"] == "q@x"


def test_devices_keep_reference_attributes_and_drop_custom_ones(lane: Lane):
    uid = lane.uid_of(lane.feed("UserUpsert", r.user("W", "d1")))
    lane.feed(
        "DeviceUpsert", r.device("W", "d1", "phone", platform="ios", push_id="p1", model="X", colour="red")
    )
    (device,) = json.loads(lane.profile("W", uid)["devices_json"])
    assert device["platform"] == "iOS" and device["model"] == "X" and "colour" not in device
    assert len(device["moengage_device_id"]) == 32


def test_device_of_unknown_user_is_rejected(lane: Lane):
    (rej,) = lane.rejected(lane.feed("DeviceUpsert", r.device("W", "nobody", "dev", platform="web")))
    assert "existing users only" in rej["reason"]


def test_new_device_with_a_taken_push_id_replaces_the_old_device(lane: Lane):
    u1 = lane.uid_of(lane.feed("UserUpsert", r.user("W", "p1")))
    u2 = lane.uid_of(lane.feed("UserUpsert", r.user("W", "p2")))
    lane.feed("DeviceUpsert", r.device("W", "p1", "old", platform="ANDROID", push_id="shared"))
    lane.feed("DeviceUpsert", r.device("W", "p2", "new", platform="ANDROID", push_id="shared"))
    assert json.loads(lane.profile("W", u1)["devices_json"]) == []
    assert [d["device_id"] for d in json.loads(lane.profile("W", u2)["devices_json"])] == ["new"]


def test_at_most_1000_devices_per_user(lane: Lane):
    lane.uid_of(lane.feed("UserUpsert", r.user("W", "many")))
    book = {
        f"d{i}": {"device_id": f"d{i}", "moengage_device_id": str(i)} for i in range(MAX_DEVICES_PER_USER)
    }
    lane.state.devices.put(keys.user_key("W", identifier_route("W", "customer_id", "many")), book)
    lane.state.flush()
    (rej,) = lane.rejected(lane.feed("DeviceUpsert", r.device("W", "many", "one-more", platform="web")))
    assert "1000 devices" in rej["reason"]
    assert not lane.rejected(
        lane.feed("DeviceUpsert", r.device("W", "many", "d7", platform="web"))
    )  # update ok


def test_events_are_enriched_classified_and_deduplicated(lane: Lane):
    uid = lane.uid_of(
        lane.feed("UserUpsert", r.user("W", "ev", attributes={"email": "ev@x", "mobile": "555"}))
    )
    lane.feed("DeviceUpsert", r.device("W", "ev", "tab", platform="android", push_id="tok"))
    push = r.event(
        "W",
        "ev",
        "NOTIFICATION_RECEIVED_MOE",
        at=100,
        device_id="tab",
        attributes={"campaign_id": "c9", "email_subject": "hidden"},
        platform="ANDROID",
    )
    (ev,) = lane.events(lane.feed("EventRecord", push))
    assert ev["event_type"] == "CAMPAIGN_EVENT" and ev["event_name"] == "Notification Received Android"
    assert ev["push_id"] == "tok" and ev["email_id"] is None
    assert ev["event_time"] == (r.BASE_MS + 100_000) // 1000
    assert json.loads(ev["event_attributes_json"]) == {"campaign_id": "c9"}
    user = json.loads(ev["user_attributes_json"])
    assert user["moengage_user_id"] == uid and user["u_em"] == "ev@x"
    device = json.loads(ev["device_attributes_json"])
    assert device["push_id"] == "tok" and device["moengage_device_id"]
    assert lane.feed("EventRecord", push) == []  # same event_uuid again: dropped
    (mail,) = lane.events(lane.feed("EventRecord", r.event("W", "ev", "MOE_EMAIL_OPEN")))
    assert mail["email_id"] == "ev@x" and mail["event_type"] == "CAMPAIGN_EVENT"
    (sms,) = lane.events(lane.feed("EventRecord", r.event("W", "ev", "SMS_DELIVERED")))
    assert sms["mobile_number"] == "555"
    (own,) = lane.events(lane.feed("EventRecord", r.event("W", "ev", "Song Played")))
    assert own["event_type"] == "USER_ACTION_EVENT" and own["event_name"] == "Song Played"
    assert json.loads(own["device_attributes_json"]) == {}  # no device "ev": empty object


def test_event_of_unknown_user_creates_the_user_and_updates_last_seen(lane: Lane):
    out = lane.feed("EventRecord", r.event("W", "fresh", at=50))
    uid = lane.uid_of(out)
    assert lane.profile("W", uid)["customer_id"] == "fresh"
    lane.feed("EventRecord", r.event("W", "fresh", at=70))  # within a minute: not written
    assert (
        lane.state.users.get(keys.user_key("W", identifier_route("W", "customer_id", "fresh")))["last_seen"]
        == r.BASE_MS + 50_000
    )
    lane.feed("EventRecord", r.event("W", "fresh", at=200))
    assert (
        lane.state.users.get(keys.user_key("W", identifier_route("W", "customer_id", "fresh")))["last_seen"]
        == r.BASE_MS + 200_000
    )


def test_duplicate_user_records_are_applied_once(lane: Lane):
    rec = r.user("W", "dup", attributes={"addValueToArrayField": {"n": 1}})
    first = lane.feed("UserUpsert", rec)
    assert lane.feed("UserUpsert", rec) == []
    assert lane.processor.duplicates == 1
    assert attrs(lane.profile("W", lane.uid_of(first)))["n"] == [1]


def test_customer_id_is_always_the_first_active_identifier():
    rules = rules_from_config(WorkspaceConfig(id="x", identifiers=["email", "customer_id", "email"]))
    assert rules == IdentityRules(("customer_id", "email"))
    assert rules.order[-1] == "anonymous_id"


def test_replayed_message_is_applied_again_but_an_upstream_duplicate_is_dropped(lane: Lane):
    lane.feed("UserUpsert", r.user("W", "rp"))
    rec = r.event("W", "rp", at=5)
    serde = lane.serde
    name, decoded = serde.decode(serde.encode("EventRecord", rec))
    assert len(lane.processor.process(name, decoded, [2, 40, 0])) == 1
    lane.state.flush()
    # the same lane message read again after a crash: its output may have been lost, so it is re-emitted
    assert len(lane.processor.process(name, decoded, [2, 40, 0])) == 1
    lane.state.flush()
    # the same event_uuid in another lane message (a client retry): dropped
    assert lane.processor.process(name, decoded, [2, 41, 0]) == []


@pytest.mark.parametrize(
    ("written", "published"),
    [
        # standard JSON is passed on as it was written, spacing and all (the gateway writes it compact)
        ('{"plan": "gold", "n": [1, 2]}', '{"plan": "gold", "n": [1, 2]}'),
        # an integer beyond 64 bits would be rounded to a float if it were written again
        ('{"n":123456789012345678901234567890}', '{"n":123456789012345678901234567890}'),
        # NaN is not JSON: the event's attributes are written again, NaN as null
        ('{"x":NaN,"y":1}', '{"x":null,"y":1}'),
    ],
)
def test_a_users_own_event_keeps_its_attributes_text(lane: Lane, written: str, published: str):
    serde = lane.serde
    processor = LaneProcessor(
        State.in_memory(),
        IdentityRulesDirectory([WorkspaceConfig(id="W")]),
        enriched_events=enriched_events(serde, None),  # a run's events through its bound encoder
    )
    first, second = r.event("W", "txt", "Song Played"), r.event("W", "txt", "Song Played", at=1)
    first["attributes_json"] = second["attributes_json"] = written
    texts = []
    for index, record in enumerate((r.user("W", "txt"), first, second)):
        name, decoded = serde.decode(serde.encode("EventRecord" if index else "UserUpsert", record))
        position = [0, 0, index]
        outputs = processor.next_event(decoded, position) if index == 2 else None
        assert outputs is not None or index < 2  # the second event is taken by the first one's run
        outputs = outputs or processor.process(name, decoded, position)
        processor.state.stage()
        for output in outputs:
            if output.topic == "events":
                event = serde.decode(output.encoded)[1] if output.encoded else output.record
                texts.append(event["event_attributes_json"])
    assert texts == [published, published]


def test_event_attributes_that_are_not_a_json_object_are_rejected(lane: Lane):
    lane.feed("UserUpsert", r.user("W", "bad"))
    for text, reason in (("[1, 2]", "must be a JSON object"), ('{"a":', "is not valid JSON")):
        record = r.event("W", "bad", "Song Played")
        record["attributes_json"] = text
        (rejection,) = lane.rejected(lane.feed("EventRecord", record))
        assert reason in rejection["reason"]

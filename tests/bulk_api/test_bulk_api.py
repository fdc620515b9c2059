"""Bulk Import and the single-record APIs against a real broker: what is accepted lands on the topics."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from tests.bulk_api.conftest import IR_KEY, IR_WS, WS, record_names
from tests.support import consume_until_quiet

ACCEPTED = "Your request has been accepted and will be processed soon."

CUSTOMER = {
    "type": "customer",
    "customer_id": "john@example.com",
    "update_existing_only": False,
    "attributes": {
        "name": "John Doe",
        "first_name": "John",
        "platforms": [{"platform": "ANDROID", "active": "true"}],
        "Array_attributeName": ["abc", "123"],
        "addValueToArrayField": {"hobbies": ["chess"]},
    },
}
EVENT = {
    "type": "event",
    "customer_id": "john@example.com",
    "device_id": "dev-1",
    "actions": [
        {
            "action": "ProductAdded",
            "attributes": {"product": "Accessories", "color": "Black"},
            "platform": "Android",
            "app_version": "1.2.3",
            "user_time": "1708939453396",
            "current_time": "1708939453396",
        },
        {"action": "Viewed", "user_time": 1590404615, "user_timezone_offset": 19800},
    ],
}
DEVICE = {
    "type": "device",
    "customer_id": "john@example.com",
    "device_id": "dev-1",
    "attributes": {"platform": "iOS", "push_id": "tok", "model": "iPhone", "brand": "Apple"},
}


def bulk(*elements):
    return {"type": "transition", "elements": list(elements)}


def test_bulk_request_lands_on_the_three_topics_with_request_facts(gateway_factory, read_topic):
    # X-Forwarded-For names the client only through trusted proxies (here: the whole chain).
    gw = gateway_factory(trusted_proxies=["127.0.0.1/32", "70.41.3.18/32", "150.172.238.178/32"])
    resp = gw.post(
        f"/v1/transition/{WS}",
        bulk(CUSTOMER, EVENT, DEVICE),
        headers={"X-Forwarded-For": "203.0.113.195, 70.41.3.18, 150.172.238.178"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body == {"status": "success", "message": ACCEPTED, "request_id": body["request_id"]}
    rid = body["request_id"]
    assert len(rid) == 8 and rid.isalnum()

    [(ukey, user)] = read_topic("ingest.users", 1)
    assert ukey == f"{WS}:john@example.com".encode()
    assert user["workspace_id"] == WS and user["request_id"] == rid and user["source"] == "api"
    assert user["client_ip"] == "203.0.113.195"
    assert user["customer_id"] == "john@example.com"
    assert uuid.UUID(user["event_uuid"])
    assert abs((datetime.now(UTC) - user["received_at"]).total_seconds()) < 120
    attrs = json.loads(user["attributes_json"])
    assert attrs["platforms"] == [{"platform": "ANDROID", "active": "true"}]
    assert attrs["addValueToArrayField"] == {"hobbies": ["chess"]}
    assert attrs["Array_attributeName"] == ["abc", "123"]

    events = read_topic("ingest.events", 2)
    assert {k for k, _ in events} == {f"{WS}:john@example.com".encode()}
    by_action = {e["action"]: e for _, e in events}
    added = by_action["ProductAdded"]
    assert (
        added["platform"] == "ANDROID" and added["app_version"] == "1.2.3" and added["device_id"] == "dev-1"
    )
    assert added["user_time"] == datetime.fromtimestamp(1708939453.396, UTC)  # current_time wins
    assert added["current_time"] == datetime.fromtimestamp(1708939453.396, UTC)
    assert json.loads(added["attributes_json"]) == {"product": "Accessories", "color": "Black"}
    viewed = by_action["Viewed"]  # local time 1590404615 at +05:30 -> UTC is 19800 s earlier
    assert viewed["user_time"] == datetime.fromtimestamp(1590404615 - 19800, UTC)
    assert viewed["current_time"] is None and viewed["user_timezone_offset"] == 19800
    assert len({e["event_uuid"] for _, e in events} | {user["event_uuid"]}) == 3

    [(dkey, device)] = read_topic("ingest.devices", 1)
    assert dkey == f"{WS}:john@example.com".encode()
    assert device["device_id"] == "dev-1" and json.loads(device["attributes_json"])["push_id"] == "tok"
    assert device["request_id"] == rid and device["client_ip"] == "203.0.113.195"


def test_app_id_query_form_and_socket_peer_as_client_ip(gw, read_topic):
    resp = gw.post(f"/v1/transition?app_id={WS}", bulk(CUSTOMER))
    assert resp.status_code == 200, resp.text
    [(_, user)] = read_topic("ingest.users", 1)
    assert user["client_ip"] == "127.0.0.1"


def test_one_users_records_share_a_key_and_keep_their_order(gw, read_topic):
    elements = [
        {"type": "event", "customer_id": f"u{i % 3}", "actions": [{"action": f"a{i}"}]} for i in range(30)
    ]
    assert gw.post(f"/v1/transition/{WS}", bulk(*elements)).status_code == 200
    events = read_topic("ingest.events", 30)
    by_key: dict[bytes, list[int]] = {}
    for key, rec in events:
        assert key == f"{WS}:{rec['customer_id']}".encode()
        by_key.setdefault(key, []).append(int(rec["action"][1:]))
    assert all(seq == sorted(seq) for seq in by_key.values()) and len(by_key) == 3


def test_single_record_apis(gw, read_topic):
    user = {"type": "customer", "customer_id": "jane", "attributes": {"first_name": "Jane"}}
    event = {"type": "event", "customer_id": "jane", "actions": [{"action": "Login"}]}
    device = {"type": "device", "customer_id": "jane", "device_id": "d9", "attributes": {"platform": "web"}}
    for path, body in (("customer", user), ("event", event), ("device", device)):
        resp = gw.post(f"/v1/{path}/{WS}", body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["message"] == ACCEPTED
    assert read_topic("ingest.users", 1)[0][1]["customer_id"] == "jane"
    [(_, ev)] = read_topic("ingest.events", 1)
    assert ev["action"] == "Login" and ev["current_time"] is None
    assert abs((ev["user_time"] - ev["received_at"]).total_seconds()) < 1  # no time given: receive time
    assert read_topic("ingest.devices", 1)[0][1]["device_id"] == "d9"


def test_single_api_rejects_an_element_of_another_type(gw):
    resp = gw.post(f"/v1/customer/{WS}", {"type": "event", "customer_id": "x1", "actions": [{"action": "a"}]})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "type should be customer"


def test_identity_resolution_workspace_accepts_users_and_events_without_customer_id(gw, read_topic):
    user = {"type": "customer", "attributes": {"moe_mobile": "+919876500000", "email": " ", "name": "N"}}
    event = {
        "type": "event",
        "user_identifiers": {"moe_mobile": 919876500000},
        "actions": [{"action": "Paid"}],
    }
    resp = gw.post(f"/v1/transition/{IR_WS}", bulk(user, event), auth=(IR_WS, IR_KEY))
    assert resp.status_code == 200, resp.text
    [(ukey, urec)] = read_topic("ingest.users", 1)
    assert urec["customer_id"] is None and urec["user_identifiers"] == {"moe_mobile": "+919876500000"}
    assert ukey == f"{IR_WS}:moe_mobile=+919876500000".encode()
    [(_, erec)] = read_topic("ingest.events", 1)
    assert erec["user_identifiers"] == {"moe_mobile": "919876500000"} and erec["customer_id"] is None


def test_without_identity_resolution_customer_id_stays_mandatory(gw):
    resp = gw.post(f"/v1/transition/{WS}", bulk({"type": "customer", "attributes": {"moe_mobile": "+91"}}))
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "'customer_id not found in the payload"


def test_good_elements_are_accepted_and_bad_ones_reported(gw, read_topic, consumer_factory, catalogue_topics):
    bad_event = {"type": "event", "customer_id": "x1", "actions": [{"action": ""}]}
    resp = gw.post(f"/v1/transition/{WS}", bulk(CUSTOMER, {"type": "Customer"}, bad_event, DEVICE))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success" and body["accepted_elements"] == 2
    assert body["failed_elements"] == [
        {
            "index": 1,
            "error": {
                "attribute": "type",
                "message": "'type in elements should be customer/event/device",
                "type": "AttributeError",
            },
        },
        {
            "index": 2,
            "error": {
                "attribute": "action",
                "message": "'action cannot be empty Unicode string",
                "type": "MissingAttributeError",
            },
        },
    ]
    assert len(read_topic("ingest.users", 1)) == 1 and len(read_topic("ingest.devices", 1)) == 1
    records = consumer_factory([catalogue_topics.topic("ingest.records")])
    assert "EventRecord" not in record_names(consume_until_quiet(records, quiet=2.0))


def test_reject_request_policy_stores_nothing_when_one_element_is_bad(
    gateway_factory, consumer_factory, catalogue_topics
):
    gw = gateway_factory(bad_elements="reject_request")
    resp = gw.post(f"/v1/transition/{WS}", bulk(CUSTOMER, {"type": "customer", "attributes": {}}))
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "'customer_id not found in the payload"
    users = consumer_factory([catalogue_topics.topic("ingest.records")])
    assert consume_until_quiet(users, quiet=2.0) == []


def test_idempotency_key_repeats_event_uuids_so_a_retry_deduplicates(gw, read_topic):
    headers = {"Idempotency-Key": "retry-123"}
    for _ in range(2):
        assert gw.post(f"/v1/transition/{WS}", bulk(CUSTOMER, EVENT), headers=headers).status_code == 200
    assert gw.post(f"/v1/transition/{WS}", bulk(CUSTOMER, EVENT)).status_code == 200
    users = [r["event_uuid"] for _, r in read_topic("ingest.users", 3)]
    events = [r["event_uuid"] for _, r in read_topic("ingest.events", 6)]
    assert len(set(users)) == 2 and len(set(events)) == 4


def test_moe_appkey_header_is_accepted_but_not_required(gw):
    assert gw.post(f"/v1/customer/{WS}", CUSTOMER, headers={"MOE-APPKEY": WS}).status_code == 200
    assert gw.post(f"/v1/customer/{WS}", CUSTOMER).status_code == 200

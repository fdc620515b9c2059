"""Merge User, Delete User, Device opt-out, Test connection and portfolio routing over real HTTP; the
request records read back from the ingest topic of this test."""

from __future__ import annotations

import json

from tests.bulk_api.conftest import IR_KEY, IR_WS, KEY, WS
from tests.support import consume_until_quiet

TOPIC = "ingest.records"
ACCEPTED = "Your request has been accepted and will be processed soon."


def merge_body(*pairs: tuple[str, str]) -> dict:
    return {"merge_data": [{"merged_user": m, "retained_user": r} for m, r in pairs]}


def test_merge_user_is_its_own_route_and_lands_one_record_per_pair(gw, read_topic, serde):
    resp = gw.post(f"/v1/customer/merge?app_id={WS}", merge_body(("old-1", "keep-1"), ("old-2", "keep-2")))
    assert resp.status_code == 200, resp.text  # was 409 "App key mismatch": taken for Track User of "merge"
    body = resp.json()
    assert body["status"] == "success" and body["message"] == ACCEPTED
    records = read_topic(TOPIC, 2)
    by_merged = {rec["merged_user"]: (key, rec) for key, rec in records}
    key, first = by_merged["old-1"]
    assert key == f"{WS}:old-1".encode()
    assert first["retained_user"] == "keep-1" and first["workspace_id"] == WS
    assert (
        first["request_id"] == body["request_id"]
        and by_merged["old-2"][1]["request_id"] == body["request_id"]
    )
    assert first["event_uuid"] != by_merged["old-2"][1]["event_uuid"]
    assert list(first)[:2] == ["event_uuid", "workspace_id"]  # what the processors read first


def test_track_user_still_works_beside_the_merge_route(gw, read_topic):
    resp = gw.post(f"/v1/customer/{WS}", {"type": "customer", "customer_id": "merge"})
    assert resp.status_code == 200, resp.text
    [(_, rec)] = read_topic(TOPIC, 1)
    assert rec["customer_id"] == "merge" and "merged_user" not in rec


def test_merge_user_reports_bad_pairs_and_accepts_the_good_ones(gw, read_topic):
    body = {
        "merge_data": [
            {"merged_user": "a1", "retained_user": "a1"},
            {"merged_user": "b1"},
            {"merged_user": "c1", "retained_user": "c2"},
            "not an object",
            {"merged_user": "null", "retained_user": "d2"},
            {"merged_user": 7, "retained_user": "e2"},
        ]
    }
    resp = gw.post(f"/v1/customer/merge?app_id={WS}", body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["accepted_elements"] == 1
    errors = {f["index"]: f["error"] for f in out["failed_elements"]}
    assert errors[0]["message"] == "merged_user and retained_user must be different users"
    assert errors[1] == {
        "attribute": "retained_user",
        "message": "retained_user is not found in the payload",
        "type": "MissingAttributeError",
    }
    assert errors[3]["type"] == "TypeError"
    assert errors[4]["type"] == "BlockedValueError"
    assert errors[5]["message"] == "merged_user is expected to be string"
    [(_, rec)] = read_topic(TOPIC, 1)
    assert (rec["merged_user"], rec["retained_user"]) == ("c1", "c2")


def test_merge_user_refuses_bad_bodies_with_the_reason(gw, consumer_factory, catalogue_topics):
    cases = [
        ({}, 400, "merge_data is not found in the payload"),
        ({"merge_data": []}, 400, "merge_data can not be empty Array"),
        ({"merge_data": {"merged_user": "a"}}, 400, "merge_data is expected to be list"),
        ({"merge_data": [{"merged_user": "a", "retained_user": "b"}] * 101}, 400, "max limit allowed is 100"),
        ([1, 2], 400, "A valid JSON document is required."),
    ]
    for body, status, message in cases:
        resp = gw.post(f"/v1/customer/merge?app_id={WS}", body)
        assert (resp.status_code, resp.json()["error"]["message"]) == (status, message), body
    missing_app = gw.post("/v1/customer/merge", merge_body(("a", "b")))
    assert missing_app.status_code == 400 and missing_app.json()["error"]["type"] == "ParamsRequired"
    wrong_key = gw.post(f"/v1/customer/merge?app_id={WS}", merge_body(("a", "b")), auth=(WS, "nope"))
    assert wrong_key.status_code == 401
    other = gw.post(f"/v1/customer/merge?app_id={IR_WS}", merge_body(("a", "b")))
    assert other.status_code == 409 and other.json()["error"]["type"] == "Authentication Mismatch"
    assert consume_until_quiet(consumer_factory([catalogue_topics.topic(TOPIC)]), quiet=1.0) == []


def test_merge_user_is_refused_while_identity_resolution_is_on(gw, consumer_factory, catalogue_topics):
    resp = gw.post(f"/v1/customer/merge?app_id={IR_WS}", merge_body(("a", "b")), auth=(IR_WS, IR_KEY))
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "MergeNotAllowed" and "Identity Resolution is enabled" in error["message"]
    assert "moe_mobile" in error["message"]
    assert consume_until_quiet(consumer_factory([catalogue_topics.topic(TOPIC)]), quiet=1.0) == []


def test_delete_user_lands_a_delete_request_with_the_request_id(gw, read_topic):
    resp = gw.post(f"/v1/customer/delete?app_id={WS}", {"customer_id": "gone-1"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success" and body["message"] == ACCEPTED
    [(key, rec)] = read_topic(TOPIC, 1)
    assert key == f"{WS}:gone-1".encode()
    assert rec["customer_id"] == "gone-1" and rec["request_id"] == body["request_id"]
    assert list(rec)[:2] == ["event_uuid", "workspace_id"] and rec["workspace_id"] == WS


def test_delete_user_refuses_bad_bodies(gw):
    cases = [
        ({}, "customer_id is not found in the payload"),
        ({"customer_id": ""}, "customer_id can not be empty Unicode String"),
        ({"customer_id": 12}, "customer_id is expected to be string"),
        ({"customer_id": "guest"}, "customer_id value 'guest' is blocked"),
    ]
    for body, message in cases:
        resp = gw.post(f"/v1/customer/delete?app_id={WS}", body)
        assert (resp.status_code, resp.json()["error"]["message"]) == (400, message), body


OPT_OUT = {
    "user_identifier_type": "customer_id",
    "user_identifier_value": "u-77",
    "action_type": "block",
    "reason": "user asked",
    "client_reference_id": "ref-1",
    "device_identifiers": [{"push_id": "tok-1"}, {"moe_gaid": "gaid-1", "unique_id": "dev-1"}],
}


def test_device_opt_out_lands_a_device_opt_out_record(gw, read_topic):
    resp = gw.post(f"/v1/devices/manage?app_id={WS}", OPT_OUT)
    assert resp.status_code == 200, resp.text
    [(key, rec)] = read_topic(TOPIC, 1)
    assert key == f"{WS}:u-77".encode()
    assert rec["action_type"] == "block" and rec["reason"] == "user asked"
    assert rec["client_reference_id"] == "ref-1" and rec["request_id"] == resp.json()["request_id"]
    assert json.loads(rec["device_identifiers_json"]) == OPT_OUT["device_identifiers"]


def test_device_opt_out_by_another_identifier_is_keyed_by_it(gw, read_topic):
    body = OPT_OUT | {
        "user_identifier_type": "email",
        "user_identifier_value": "a@x.io",
        "action_type": "unblock",
    }
    assert gw.post(f"/v1/devices/manage?app_id={WS}", body).status_code == 400  # not an identifier of WS
    resp = gw.post(f"/v1/devices/manage?app_id={IR_WS}", body, auth=(IR_WS, IR_KEY))
    assert resp.status_code == 200, resp.text
    [(key, rec)] = read_topic(TOPIC, 1)
    assert key == f"{IR_WS}:email=a@x.io".encode() and rec["action_type"] == "unblock"


def test_device_opt_out_refuses_bad_bodies(gw):
    cases = [
        ({k: v for k, v in OPT_OUT.items() if k != "action_type"}, "action_type is not found in the payload"),
        (OPT_OUT | {"action_type": "mute"}, "action_type should be block/unblock"),
        (OPT_OUT | {"device_identifiers": []}, "device_identifiers can not be empty Array"),
        (OPT_OUT | {"device_identifiers": [{"imei": "1"}]}, "unknown device identifier 'imei'"),
        (OPT_OUT | {"device_identifiers": [{"push_id": ""}]}, "push_id must be a non-empty string"),
        (OPT_OUT | {"user_identifier_value": " "}, "user_identifier_value can not be empty Unicode String"),
    ]
    for body, message in cases:
        resp = gw.post(f"/v1/devices/manage?app_id={WS}", body)
        assert resp.status_code == 400, body
        assert resp.json()["error"]["message"].startswith(message), resp.text


def test_track_device_single_endpoint(gw, read_topic):
    body = {"type": "device", "customer_id": "jane", "device_id": "d-5", "attributes": {"platform": "iOS"}}
    resp = gw.post(f"/v1/device/{WS}", body)
    assert resp.status_code == 200, resp.text
    [(_, rec)] = read_topic(TOPIC, 1)
    assert rec["device_id"] == "d-5" and rec["customer_id"] == "jane"


def test_test_connection_checks_the_credentials_in_the_body(gw):
    ok = gw.post(
        "/v1/test-connection", {"app_id": WS, "app_secret": KEY, "source": "x", "region": "DC-01"}, auth=None
    )
    assert ok.status_code == 200 and ok.json() == {"status": "success", "app_name": WS}
    bad = gw.post("/v1/test-connection", {"app_id": WS, "app_secret": "wrong"}, auth=None)
    assert bad.status_code == 401 and bad.json()["status"] == "fail"
    unknown = gw.post("/v1/test-connection", {"app_id": "NOPE", "app_secret": "x"}, auth=None)
    assert unknown.status_code == 401
    missing = gw.post("/v1/test-connection", {"app_id": WS}, auth=None)
    assert (
        missing.status_code == 400
        and missing.json()["error"]["message"] == "app_secret is not found in the payload"
    )


def test_project_code_on_a_workspace_that_is_not_a_portfolio_is_refused_and_nothing_is_stored(
    gw, consumer_factory, catalogue_topics
):
    resp = gw.post(f"/v1/customer/{WS}?project_code=P1", {"type": "customer", "customer_id": "c1"})
    assert resp.status_code == 400
    assert (
        resp.json()["error"]["type"] == "InvalidParams" and "project_code" in resp.json()["error"]["message"]
    )
    assert consume_until_quiet(consumer_factory([catalogue_topics.topic(TOPIC)]), quiet=1.0) == []

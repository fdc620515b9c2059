"""Every error path of the Data APIs answers MoEngage's exact error body (auth and request errors)."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from tests.bulk_api.conftest import KEY, NOKEY_WS, WS, basic


def fail(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "fail" and len(body["error"]["request_id"]) == 8
    err = dict(body["error"])
    del err["request_id"]
    return err


def test_malformed_json_bulk_body(shared_gw):
    err = fail(shared_gw.post(f"/v1/transition/{WS}", data=b'{"type": "transition", "elements": [}'), 400)
    assert err == {
        "message": "'Could not decode the request body. The JSON was incorrect or not encoded as UTF-8.",
        "type": "Malformed JSON",
    }


def test_malformed_json_single_body_and_invalid_utf8_and_nan(shared_gw):
    bad = (
        b"{nope",
        b'{"type":"customer","customer_id":"\xff\xfe"}',
        b'{"a": NaN}',
        b'{"a": "\\ud800"}',
        b"[" * 2000 + b"]" * 2000,
    )
    for data in bad:
        err = fail(shared_gw.post(f"/v1/customer/{WS}", data=data), 400)
        assert err["type"] == "Malformed JSON"
        assert (
            err["message"]
            == "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8."
        )


def test_empty_body(shared_gw):
    err = fail(shared_gw.post(f"/v1/transition/{WS}", data=b"  "), 400)
    assert err == {"message": "A valid JSON document is required", "type": "Empty request body"}


def test_body_that_is_not_an_object(shared_gw):
    err = fail(shared_gw.post(f"/v1/transition/{WS}", [1, 2]), 400)
    assert err == {"message": "A valid JSON document is required.", "type": "Body type is not JSON"}


def test_missing_content_type_is_400_and_wrong_one_is_415(shared_gw):
    url = f"{shared_gw.url}/v1/transition/{WS}"
    resp = requests.post(url, data=b"{}", headers={"Authorization": basic(WS, KEY)}, timeout=30)
    assert fail(resp, 400) == {
        "message": "The Content-Type Header is required",
        "type": "Missing header value",
    }
    resp = shared_gw.post(f"/v1/transition/{WS}", data=b"{}", headers={"Content-Type": "text/plain"})
    assert fail(resp, 415) == {"message": "Unsupported Media Type", "type": "Unsupported Media Type"}


def test_json_with_charset_is_accepted(shared_gw):
    body = {"type": "customer", "customer_id": "c-charset"}
    resp = shared_gw.post(
        f"/v1/customer/{WS}", body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"type": "transition", "elements": []},
            {
                "attribute": "elements",
                "message": "'elements cannot be empty array",
                "type": "MissingAttributeError",
            },
        ),
        (
            {"type": "transition"},
            {
                "attribute": "elements",
                "message": "'elements not found in the payload",
                "type": "MissingAttributeError",
            },
        ),
        (
            {"type": "transition", "elements": {"a": 1}},
            {"attribute": "elements", "message": "elements is expected to be list", "type": "TypeError"},
        ),
        (
            {"elements": [{"type": "customer", "customer_id": "abc"}]},
            {
                "attribute": "type",
                "message": "'type not found in the payload",
                "type": "MissingAttributeError",
            },
        ),
        (
            {"type": "Transition", "elements": [{"type": "customer", "customer_id": "abc"}]},
            {"attribute": "type", "message": "'type should be transition", "type": "AttributeError"},
        ),
        (
            {"type": "transition", "elements": [{"type": "Customer", "customer_id": "abc"}]},
            {
                "attribute": "type",
                "message": "'type in elements should be customer/event/device",
                "type": "AttributeError",
            },
        ),
        (
            {"type": "transition", "elements": [{"type": "customer", "attributes": {"a": 1}}]},
            {
                "attribute": "customer_id",
                "message": "'customer_id not found in the payload",
                "type": "MissingAttributeError",
            },
        ),
        (
            {
                "type": "transition",
                "elements": [{"type": "event", "customer_id": "abc", "actions": [{"action": ""}]}],
            },
            {
                "attribute": "action",
                "message": "'action cannot be empty Unicode string",
                "type": "MissingAttributeError",
            },
        ),
        (
            {"type": "transition", "elements": [{"type": "event", "customer_id": "abc", "actions": [{}]}]},
            {
                "attribute": "action",
                "message": "'action not found in the payload",
                "type": "MissingAttributeError",
            },
        ),
        (
            {"type": "transition", "elements": [{"type": "event", "customer_id": "abc", "actions": []}]},
            {
                "attribute": "actions",
                "message": "'actions cannot be empty array",
                "type": "MissingAttributeError",
            },
        ),
        (
            {"type": "transition", "elements": [{"type": "customer", "customer_id": "null"}]},
            {
                "attribute": "customer_id",
                "message": "customer_id value 'null' is blocked",
                "type": "BlockedValueError",
            },
        ),
        (
            {
                "type": "transition",
                "elements": [{"type": "customer", "customer_id": "abc", "attributes": {"moe_x": 1}}],
            },
            {
                "attribute": "attributes",
                "message": "'moe_x' uses the reserved prefix moe_",
                "type": "ReservedNameError",
            },
        ),
        (
            {
                "type": "transition",
                "elements": [{"type": "event", "customer_id": "abc", "actions": [{"action": "moe_custom"}]}],
            },
            {
                "attribute": "action",
                "message": "'moe_custom' uses the reserved prefix moe_",
                "type": "ReservedNameError",
            },
        ),
        (
            {"type": "transition", "elements": [{"type": "device", "customer_id": "abc", "attributes": {}}]},
            {
                "attribute": "device_id",
                "message": "'device_id not found in the payload",
                "type": "MissingAttributeError",
            },
        ),
    ],
)
def test_bulk_validation_errors(shared_gw, doc, expected):
    assert fail(shared_gw.post(f"/v1/transition/{WS}", doc), 400) == expected


@pytest.mark.parametrize(
    ("path", "doc", "message"),
    [
        ("customer", {"type": "customer"}, "customer_id is not found in the payload"),
        ("customer", {"type": "customer", "customer_id": " "}, "customer_id can not be empty Unicode String"),
        ("event", {"type": "event", "customer_id": "abc", "actions": []}, "actions can not be empty Array"),
        (
            "event",
            {"type": "event", "customer_id": "abc", "actions": [{"x": 1}]},
            "action is not found in the payload",
        ),
        ("event", {"type": "event", "customer_id": "abc"}, "actions is not found in the payload"),
        ("device", {"type": "device", "device_id": "d"}, "customer_id is not found in the payload"),
    ],
)
def test_single_record_validation_errors(shared_gw, path, doc, message):
    err = fail(shared_gw.post(f"/v1/{path}/{WS}", doc), 400)
    assert err["message"] == message and err["type"] == "MissingAttributeError"


def test_bulk_body_over_100_kb_is_413_before_parsing(shared_gw):
    data = b"{" + b" " * (100 * 1024) + b"}"  # would be valid JSON: size is checked first
    err = fail(shared_gw.post(f"/v1/transition/{WS}", data=data), 413)
    assert err == {"message": "The payload can not exceed 100KB", "type": "Payload too large"}


def test_chunked_body_without_content_length_is_capped_too(shared_gw):
    def chunks():
        yield b'{"type":"transition","elements":['
        for _ in range(200):
            yield b'{"type":"customer","customer_id":"' + b"x" * 1000 + b'"},'
        yield b'{"type":"customer","customer_id":"y1"}]}'

    resp = requests.post(
        f"{shared_gw.url}/v1/transition/{WS}",
        data=chunks(),
        timeout=30,
        headers={"Authorization": basic(WS, KEY), "Content-Type": "application/json"},
    )
    assert fail(resp, 413)["type"] == "Payload too large"


def test_single_record_cap_is_128_kb(shared_gw):
    attrs = {"blob": "x" * (110 * 1024)}
    ok = shared_gw.post(
        f"/v1/customer/{WS}", {"type": "customer", "customer_id": "big1", "attributes": attrs}
    )
    assert ok.status_code == 200, ok.text
    attrs = {"blob": "x" * (129 * 1024)}
    err = fail(
        shared_gw.post(f"/v1/customer/{WS}", {"type": "customer", "customer_id": "b", "attributes": attrs}),
        413,
    )
    assert err["message"] == "The payload can not exceed 128KB"


def _auth_error(shared_gw, header, path=f"/v1/transition/{WS}", extra=None):
    doc = {"type": "transition", "elements": [{"type": "customer", "customer_id": "abc"}]}
    headers = {
        "Content-Type": "application/json",
        **({"Authorization": header} if header is not None else {}),
    }
    resp = requests.post(
        shared_gw.url + path, data=json.dumps(doc), headers=headers | (extra or {}), timeout=30
    )
    return resp


@pytest.mark.parametrize(
    ("header", "status", "expected"),
    [
        (None, 401, {"message": "Authentication Header Required", "type": "Authentication Required"}),
        ("Basic ", 401, {"message": "No identity information found", "type": "Authentication required"}),
        ("Bearer abc", 401, {"message": "No identity information found", "type": "Authentication required"}),
        (
            "Basic %%%",
            401,
            {"message": "Invalid identity information found", "type": "Authentication required"},
        ),
        (
            "Basic " + base64.b64encode(b"nocolon").decode(),
            401,
            {"message": "Invalid identity information found", "type": "Authentication required"},
        ),
        (
            basic("", KEY),
            401,
            {"message": "APP_KEY missing in the authentication header", "type": "Authentication required"},
        ),
        (
            basic(WS, ""),
            401,
            {"message": "APP_SECRET missing in the authentication header", "type": "Authentication required"},
        ),
        (
            basic(WS, "wrong-key"),
            401,
            {
                "message": "App Secret key mismatch. Please login to the dashboard to verify key",
                "type": "Authentication required",
            },
        ),
        (
            basic("OTHER", KEY),
            409,
            {"message": "App key mismatch in params and authentication", "type": "Authentication Mismatch"},
        ),
    ],
)
def test_authentication_errors(shared_gw, header, status, expected):
    assert fail(_auth_error(shared_gw, header), status) == expected


def test_unknown_workspace_and_workspace_without_key(shared_gw):
    resp = _auth_error(shared_gw, basic("NOPE", "k"), path="/v1/transition/NOPE")
    assert fail(resp, 401) == {
        "message": "Invalid APP_ID used in Authentication Header",
        "type": "Authentication required",
    }
    resp = _auth_error(shared_gw, basic(NOKEY_WS, "k"), path=f"/v1/transition/{NOKEY_WS}")
    assert fail(resp, 409) == {
        "message": "App Secret key is not set. Please login to the dashboard to set a key",
        "type": "Authentication required",
    }


def test_moe_appkey_that_differs_from_the_user_is_409(shared_gw):
    resp = _auth_error(shared_gw, basic(WS, KEY), extra={"MOE-APPKEY": "OTHER"})
    assert fail(resp, 409)["type"] == "HeaderMismatch"


def test_missing_app_id_is_400(shared_gw):
    resp = _auth_error(shared_gw, basic(WS, KEY), path="/v1/transition")
    assert fail(resp, 400) == {
        "message": "app_id is required in path/query params.",
        "type": "ParamsRequired",
    }


def test_disabled_workspace_is_403(shared_gw):
    directory = shared_gw.gateway.directory
    directory.set_disabled(WS, True)
    try:
        err = fail(_auth_error(shared_gw, basic(WS, KEY)), 403)
        assert err == {
            "message": "Your account is suspended. Please contact MoEngage team.",
            "type": "Account Suspended",
        }
    finally:
        directory.set_disabled(WS, False)
    assert _auth_error(shared_gw, basic(WS, KEY)).status_code == 200


def test_unknown_path_keeps_the_envelope(shared_gw):
    resp = requests.get(shared_gw.url + "/v1/nothing", timeout=30)
    assert resp.status_code == 404 and resp.json()["status"] == "fail"


def test_rate_limit_headers_on_every_authenticated_response(shared_gw):
    ok = shared_gw.post(
        f"/v1/event/{WS}", {"type": "event", "customer_id": "hdr", "actions": [{"action": "a"}]}
    )
    bad = shared_gw.post(f"/v1/event/{WS}", {"type": "event", "customer_id": "hdr"})
    for resp in (ok, bad):
        assert resp.headers["x-ratelimit-limit"] == "30000"
        assert 0 < int(resp.headers["x-ratelimit-reset"]) <= 60
        assert int(resp.headers["x-ratelimit-remaining"]) < 30000
        assert resp.headers["x-ratelimit-limit-users"] == "10000"

"""Hostile bodies against the running gateway: every one gets a 4xx with a JSON error body, never a 5xx."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bulk_api.conftest import KEY, WS, basic

ENDPOINTS = [
    f"/v1/transition/{WS}",
    f"/v1/customer/{WS}",
    f"/v1/event/{WS}",
    f"/v1/device/{WS}",
    f"/v1/customers/export?app_id={WS}",
]
BIG = 200 * 1024  # over both body limits (100 KB Bulk, 128 KB the others)

NASTY: dict[str, bytes] = {
    "empty": b"",
    "blank": b" \r\n\t ",
    "truncated": b'{"type": "transition", "elements": [{"type": "customer", "customer_id": "a"',
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep objects": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    "deep in an element": (
        b'{"type":"transition","elements":[{"type":"customer","customer_id":"d","attributes":{"x":'
        + b"[" * 3_000
        + b"]" * 3_000
        + b"}}]}"
    ),
    "10^400": b'{"type":"customer","customer_id":1' + b"0" * 400 + b"}",
    "1e400": b'{"type":"customer","customer_id":1e400}',
    "NaN": b'{"type":"customer","customer_id":NaN}',
    "Infinity": b'{"type":"customer","customer_id":Infinity}',
    "-Infinity": b'{"type":"event","customer_id":"a",'
    b'"actions":[{"action":"x","attributes":{"v":-Infinity}}]}',
    "invalid UTF-8": b'{"type":"customer","customer_id":"\xc3\x28"}',
    "overlong UTF-8": b'{"type":"customer","customer_id":"\xc0\xaf"}',
    "lone surrogate": b'{"type":"customer","customer_id":"\\udc00"}',
    "UTF-16": '{"type":"customer","customer_id":"a"}'.encode("utf-16"),
    "BOM": b'\xef\xbb\xbf{"type":"customer","customer_id":"a"}',
    "NUL bytes": b'{"type":"customer",\x00"customer_id":"a"}',
    "duplicate keys": b'{"type":"transition","elements":[{"type":"customer"}],"elements":[]}',
    "huge string": b'{"type":"customer","customer_id":"' + b"a" * BIG + b'"}',
    "huge array": b'{"type":"transition","elements":[' + b"1," * (BIG // 2) + b"1]}",
    "many keys": b"{" + b",".join(b'"k%d":1' % i for i in range(30_000)) + b"}",
    "a bare number": b"12345678901234567890123456789",
    "a bare string": b'"transition"',
    "null": b"null",
    "not JSON": b"\x00\x01\x02\xff\xfe",
    "trailing garbage": b'{"type":"customer","customer_id":"a"} {}',
}


def post(gw, path: str, data: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    hdrs = {"Authorization": basic(WS, KEY), "Content-Type": "application/json"} | (headers or {})
    return gw.session.post(gw.url + path, data=data, headers=hdrs, timeout=60)


def assert_json_error(resp: requests.Response, what: str) -> None:
    assert 400 <= resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:300]}"
    body = resp.json()
    assert body["status"] == "fail", what
    assert body["error"]["type"] and body["error"]["message"] and len(body["error"]["request_id"]) == 8


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_nasty_body_is_a_4xx_with_a_json_error(shared_gw, path):
    for name, data in NASTY.items():
        assert_json_error(post(shared_gw, path, data), f"{name} to {path}")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_wrong_content_types_and_encodings_are_a_4xx_with_a_json_error(shared_gw, path):
    body = json.dumps({"type": "customer", "customer_id": "a"}).encode()
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("text/plain", body, {"Content-Type": "text/plain"}),
        ("form", b"type=customer", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("multipart", body, {"Content-Type": "multipart/form-data; boundary=x"}),
        ("no media type", body, {"Content-Type": ""}),
        ("garbage media type", body, {"Content-Type": ";;;==/"}),
        ("unknown encoding", body, {"Content-Encoding": "zstd-x"}),
    ]
    for name, data, headers in cases:
        assert_json_error(post(shared_gw, path, data, headers), f"{name} to {path}")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bodies_the_server_cannot_decode_get_a_4xx_or_a_closed_connection(shared_gw, path):
    """Decoding stops at the body limit (gzip bomb) or at the first bad byte: a 4xx JSON error, or the
    server closes the connection on the unread rest (aiohttp decodes while the body arrives)."""
    body = json.dumps({"type": "customer", "customer_id": "a"}).encode()
    cases = [
        ("gzip bomb", gzip.compress(b"[" * (20 * 1024 * 1024)), {"Content-Encoding": "gzip"}),
        ("gzip that is not gzip", body, {"Content-Encoding": "gzip"}),
        ("deflate (not accepted)", zlib.compress(body), {"Content-Encoding": "deflate"}),
    ]
    for name, data, headers in cases:
        try:
            resp = post(shared_gw, path, data, headers)
        except requests.ConnectionError:
            pass
        else:
            assert_json_error(resp, f"{name} to {path}")
        assert requests.get(shared_gw.url + "/health", timeout=30).status_code == 200


@given(data=st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_random_bytes_never_get_a_server_error(shared_gw, data):
    for path in ENDPOINTS:
        resp = post(shared_gw, path, data)
        assert resp.status_code < 500, f"{resp.status_code} {resp.text[:300]} for {data!r} to {path}"
        assert resp.json()["status"] in ("success", "fail")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(
    kind=st.sampled_from(["customer", "event", "device"]),
    fields=st.dictionaries(
        st.sampled_from(["customer_id", "device_id", "attributes", "actions", "update_existing_only", "x"]),
        JSON_VALUES,
    ),
)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_random_elements_never_get_a_server_error(shared_gw, kind, fields):
    element = {"type": kind} | fields
    for path, doc in (
        (f"/v1/{kind}/{WS}", element),
        (f"/v1/transition/{WS}", {"type": "transition", "elements": [element]}),
    ):
        resp = post(shared_gw, path, json.dumps(element if doc is element else doc).encode())
        assert resp.status_code < 500, f"{resp.status_code} {resp.text[:300]} for {doc!r}"
        assert resp.json()["status"] in ("success", "fail")


# --- numeric ids beyond what a float keeps exactly -------------------------------------------------------
TOO_BIG = 18446744073709551616  # 2**64: parsed as a float, which would read as 1.8446744073709552e+19


def test_a_customer_id_beyond_64_bits_is_refused_with_a_clear_400_in_every_endpoint(shared_gw):
    bodies = {
        f"/v1/customer/{WS}": {"type": "customer", "customer_id": TOO_BIG},
        f"/v1/event/{WS}": {"type": "event", "customer_id": TOO_BIG, "actions": [{"action": "a"}]},
        f"/v1/device/{WS}": {"type": "device", "customer_id": TOO_BIG, "device_id": "d"},
        f"/v1/transition/{WS}": {
            "type": "transition",
            "elements": [{"type": "customer", "customer_id": TOO_BIG}],
        },
    }
    for path, doc in bodies.items():
        resp = post(shared_gw, path, json.dumps(doc).encode())
        assert_json_error(resp, path)
        error = resp.json()["error"]
        assert error["attribute"] == "customer_id" and "too large" in error["message"], error
        assert "e+19" not in resp.text


def test_numeric_ids_within_64_bits_are_kept_exactly(gw, read_topic):
    big = 2**64 - 1  # a JSON integer the parser keeps exactly, though a float would round it
    doc = {"type": "transition", "elements": [{"type": "customer", "customer_id": big}]}
    resp = post(gw, f"/v1/transition/{WS}", json.dumps(doc).encode())
    assert resp.status_code == 200, resp.text
    [(key, user)] = read_topic("ingest.users", 1)
    assert user["customer_id"] == str(big) and key == f"{WS}:{big}".encode()


def test_get_user_refuses_a_numeric_identifier_beyond_64_bits(shared_gw):
    doc = {"data": {"identifiers": [{"identifier_type": "customer_id", "identifier": TOO_BIG}]}}
    resp = post(shared_gw, f"/v1/customers/export?app_id={WS}", json.dumps(doc).encode())
    assert_json_error(resp, "export")
    assert "too large" in resp.json()["error"]["message"]

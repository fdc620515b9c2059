"""Per-workspace rate limits: 429 with headers, nothing stored, and one budget across gateway processes."""

from __future__ import annotations

import time

import requests

from inflow.config.file import RateLimits, WorkspaceConfig
from inflow.producers.bulk_api.ratelimit import RateLimiter
from inflow.schemas.serde import AvroSerde
from tests.bulk_api.conftest import KEY, WS, basic, gateway_env, record_names, write_config
from tests.support import consume_until_quiet, wait_for

WINDOW = 3600  # long windows so a test never straddles a reset; the length is configurable


def customers(prefix: str, n: int) -> dict:
    return {
        "type": "transition",
        "elements": [{"type": "customer", "customer_id": f"{prefix}{i}"} for i in range(n)],
    }


def wait_for_fresh_window(margin: int = 60) -> None:
    """Start in a window with at least ``margin`` seconds left, so counts cannot reset mid-test."""
    wait_for(lambda: WINDOW - time.time() % WINDOW > margin, margin + 5, what="a fresh rate-limit window")


def test_limits_of_two_gateways_are_shared_through_the_topic():
    serde = AvroSerde()
    a_out: list[tuple[bytes, bytes]] = []
    a = RateLimiter("gw-a", WINDOW, serde, lambda k, v: a_out.append((k, v)))
    b = RateLimiter("gw-b", WINDOW, serde)
    limits = {"users": 10, "events": 100}
    now = (time.time() // WINDOW) * WINDOW + 10
    assert a.acquire(WS, {"users": 6, "events": 0}, limits, now).allowed
    for key, value in a_out:
        b.observe(key, value)
    denied = b.acquire(WS, {"users": 5, "events": 0}, limits, now)
    assert not denied.allowed and denied.remaining("users") == 4
    assert denied.headers("users")["x-ratelimit-remaining"] == "4"
    assert b.acquire(WS, {"users": 4, "events": 0}, limits, now).allowed
    # A new window starts from zero; a refund gives units back.
    assert b.acquire(WS, {"users": 10, "events": 0}, limits, now + WINDOW).allowed
    decision = a.acquire(WS, {"users": 4, "events": 0}, limits, now)
    a.refund(WS, decision, {"users": 4, "events": 0})
    assert a.status(WS, limits, now).remaining("users") == 4


def test_over_the_limit_is_429_with_headers_and_nothing_is_stored(
    gateway_factory, consumer_factory, catalogue_topics
):
    wait_for_fresh_window()
    seeds = [
        WorkspaceConfig(id=WS, api_key=KEY, rate_limits=RateLimits(users_per_minute=5, events_per_minute=3))
    ]
    gw = gateway_factory(seeds=seeds, rate_window_s=WINDOW)
    assert gw.post(f"/v1/transition/{WS}", customers("a", 4)).status_code == 200
    resp = gw.post(f"/v1/transition/{WS}", customers("b", 2))
    assert resp.status_code == 429
    assert resp.json()["error"] | {"request_id": "x"} == {
        "message": "Rate Limits for User / Event exceeded",
        "type": "Rate Limit Exceeded",
        "request_id": "x",
    }
    assert resp.headers["x-ratelimit-remaining-users"] == "1"
    assert 0 < int(resp.headers["x-ratelimit-reset"]) <= WINDOW
    events = {"type": "event", "customer_id": "e1", "actions": [{"action": "a"}] * 4}
    resp = gw.post(f"/v1/event/{WS}", events)
    assert resp.status_code == 429 and resp.headers["x-ratelimit-limit"] == "3"
    assert gw.post(f"/v1/transition/{WS}", customers("c", 1)).status_code == 200
    records = consume_until_quiet(consumer_factory([catalogue_topics.topic("ingest.records")]), quiet=2.0)
    assert record_names(records) == ["UserUpsert"] * 5  # the refused events wrote nothing


def test_rate_limit_holds_across_two_gateway_processes(
    gateway_process, catalogue_topics, consumer_factory, tmp_path
):
    wait_for_fresh_window()
    config = write_config(tmp_path / "inflow.yaml", users=10, events=1000)
    env = gateway_env(catalogue_topics, tmp_path / "home", config, INFLOW_GATEWAY_RATE_WINDOW_S=str(WINDOW))
    a, b = gateway_process(env, "a"), gateway_process(env, "b")
    headers = {"Authorization": basic(WS, KEY), "Content-Type": "application/json"}

    def post(gw, body):
        return requests.post(f"{gw.url}/v1/transition/{WS}", json=body, headers=headers, timeout=60)

    def remaining_users(gw) -> int:  # a request that is rejected before the limiter still carries the headers
        return int(post(gw, {"type": "transition", "elements": []}).headers["x-ratelimit-remaining-users"])

    assert post(a, customers("a", 6)).status_code == 200
    wait_for(lambda: remaining_users(b) == 4, 30, what="gateway b to see a's count")
    denied = post(b, customers("b", 5))
    assert denied.status_code == 429 and denied.headers["x-ratelimit-remaining-users"] == "4"
    assert post(b, customers("b", 4)).status_code == 200
    wait_for(lambda: remaining_users(a) == 0, 30, what="gateway a to see b's count")
    assert post(a, customers("c", 1)).status_code == 429
    users = consume_until_quiet(consumer_factory([catalogue_topics.topic("ingest.records")]), quiet=2.0)
    assert len(users) == 10
    assert a.stop() == 0 and b.stop() == 0

"""End to end: EnrichedEvents in the events topic -> real HTTP endpoint, body and headers as MoEngage
sends them."""

from __future__ import annotations

import base64
import json

from tests.streams.conftest import enriched, stream
from tests.support import wait_for


def campaign(code: str, name: str, channel: str, **fields):
    attrs = {
        "campaign_id": "353df897hkbh67658",
        "campaign_name": "Name of the Campaign",
        "campaign_type": "Event Trigger",
        "campaign_channel": channel,
        "email_subject": "never exported",
        "email_click_url": "https://x",
    }
    return enriched(
        event_code=code,
        event_name=name,
        event_type="CAMPAIGN_EVENT",
        event_attributes_json=json.dumps(attrs),
        **fields,
    )


def test_exact_body_and_headers_for_user_action_push_email_and_sms(writer, endpoint_factory, sink_factory):
    ep = endpoint_factory()
    definition = stream(
        ep.url + "?url_param1=value1",
        headers={"header1": "value1"},
        auth={"type": "header", "header_name": "X-Api-Key", "header_value": "k-123"},
    )
    events = [
        enriched(uid="u-1"),
        campaign(
            "NOTIFICATION_RECEIVED_MOE",
            "Notification Received Android",
            "Push",
            push_id="tok-1",
            email_id="leak@x.io",
        ),
        campaign("MOE_EMAIL_SENT", "Email Sent", "Email", email_id="a@b.io"),
        campaign("SMS_DELIVERED", "SMS Delivered", "SMS", mobile_number="+3361234"),
    ]
    writer.write(events)
    sink_factory(definition)
    wait_for(lambda: len(ep.delivered_uuids()) == 4, 60, what="4 events delivered")
    [request] = ep.snapshot()
    assert request.query == {"url_param1": "value1"}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["header1"] == "value1"
    assert request.headers["X-Api-Key"] == "k-123"
    body = request.body
    assert list(body) == ["app_name", "source", "moe_request_id", "events"]
    assert body["app_name"] == "Test App" and body["source"] == "MOENGAGE"
    assert len(body["moe_request_id"]) == 36
    by_code = {e["event_code"]: e for e in body["events"]}
    user_action = by_code["Purchase"]
    assert user_action == {
        "event_name": "Purchase",
        "event_code": "Purchase",
        "event_uuid": events[0]["event_uuid"],
        "event_time": 1580967474,
        "event_type": "USER_ACTION_EVENT",
        "event_source": "MOENGAGE",
        "uid": "cust-1",
        "event_attributes": {"amount": 10},
        "user_attributes": {"moengage_user_id": "u-1", "city": "Paris"},
        "device_attributes": {"moengage_device_id": "d-1", "os": "android"},
    }
    campaign_attrs = {
        "campaign_id": "353df897hkbh67658",
        "campaign_name": "Name of the Campaign",
        "campaign_type": "Event Trigger",
    }
    push = by_code["NOTIFICATION_RECEIVED_MOE"]
    assert list(push) == [
        "event_name",
        "event_code",
        "event_uuid",
        "event_time",
        "event_type",
        "event_source",
        "push_id",
        "uid",
        "event_attributes",
        "user_attributes",
        "device_attributes",
    ]
    assert push["push_id"] == "tok-1" and "email_id" not in push
    assert push["event_attributes"] == campaign_attrs | {"campaign_channel": "Push"}
    email = by_code["MOE_EMAIL_SENT"]
    assert email["email_id"] == "a@b.io" and "push_id" not in email and "mobile_number" not in email
    assert email["event_attributes"] == campaign_attrs | {"campaign_channel": "Email"}
    sms = by_code["SMS_DELIVERED"]
    assert sms["mobile_number"] == "+3361234" and "email_id" not in sms and "push_id" not in sms
    assert all(e["event_type"] == "CAMPAIGN_EVENT" for e in (push, email, sms))


def test_filters_events_workspace_and_attribute_lists(writer, endpoint_factory, sink_factory):
    ep = endpoint_factory()
    definition = stream(
        ep.url,
        workspace_id="W1",
        events=["Purchase", "MOE_EMAIL_SENT"],
        user_attributes=["city"],
        device_attributes=["os"],
    )
    wanted = [
        enriched(user_attributes_json='{"moengage_user_id":"u-1","city":"Paris","secret":"x"}'),
        enriched(
            event_name="Email Sent", event_code="MOE_EMAIL_SENT", event_type="CAMPAIGN_EVENT", email_id="a@b"
        ),
    ]
    unwanted = [enriched(event_name="Login", event_code="Login"), enriched(workspace_id="W2")]
    writer.write([wanted[0], unwanted[0], unwanted[1], wanted[1]])
    sink_factory(definition)
    wait_for(lambda: len(ep.delivered_uuids()) >= 2, 60, what="2 events delivered")
    events = [e for r in ep.snapshot() for e in r.body["events"]]
    assert {e["event_uuid"] for e in events} == {w["event_uuid"] for w in wanted}
    for e in events:
        assert e["user_attributes"] == {"moengage_user_id": "u-1", "city": "Paris"}
        assert e["device_attributes"] == {"moengage_device_id": "d-1", "os": "android"}


def test_batches_of_100_and_a_partial_batch_after_the_linger(writer, endpoint_factory, sink_factory):
    ep = endpoint_factory()
    sent = writer.write([enriched(uid=f"u-{i % 7}") for i in range(250)])
    sink_factory(stream(ep.url, linger_s=3.0, max_in_flight=1))
    wait_for(lambda: len(ep.delivered_uuids()) == 250, 60, what="250 events delivered")
    sizes = [len(r.body["events"]) for r in ep.snapshot()]
    assert sizes == [100, 100, 50]
    assert ep.delivered_uuids() == set(sent)
    assert len({r.body["moe_request_id"] for r in ep.snapshot()}) == 3


def test_linger_sends_a_lone_event(writer, endpoint_factory, sink_factory):
    ep = endpoint_factory()
    sink_factory(stream(ep.url, linger_s=0.5))
    [sent] = writer.write([enriched()])
    wait_for(lambda: ep.delivered_uuids() == {sent}, 60, what="the lone event")
    assert [len(r.body["events"]) for r in ep.snapshot()] == [1]


def test_basic_auth_header(writer, endpoint_factory, sink_factory):
    ep = endpoint_factory()
    writer.write([enriched()])
    sink_factory(stream(ep.url, auth={"type": "basic", "username": "ws-1", "password": "p@ss:word"}))
    wait_for(lambda: ep.snapshot(), 60, what="a request")
    expected = "Basic " + base64.b64encode(b"ws-1:p@ss:word").decode()
    assert ep.snapshot()[0].headers["Authorization"] == expected

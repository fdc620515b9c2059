"""Pure parts of the sink: definitions, payload formatting and filters, offset tracking, retry routing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from inflow.config.file import parse_config_text
from inflow.config.secrets import SecretBox
from inflow.sinks.streams.batching import EventBatch
from inflow.sinks.streams.cli import yaml_definitions
from inflow.sinks.streams.control import pause_view
from inflow.sinks.streams.definitions import StreamDefinition, parse_definition
from inflow.sinks.streams.destinations.base import Outcome, Result
from inflow.sinks.streams.destinations.http import HttpDestination
from inflow.sinks.streams.destinations.registry import open_destination
from inflow.sinks.streams.exceptions import StreamDefinitionError
from inflow.sinks.streams.offsets import OffsetTracker, WorkUnit
from inflow.sinks.streams.payload import (
    EventFilter,
    EventFormatter,
    PayloadError,
    events_array,
    request_body,
    split_events,
)
from inflow.sinks.streams.retry import DLQ_TOPIC, next_parking_topic, parked_batch
from tests.streams.conftest import enriched


def definition(**kw):
    return StreamDefinition.model_validate({"id": "s", "url": "http://h/x"} | kw)


def test_yaml_streams_are_validated_and_unknown_keys_named():
    text = (
        "streams:\n  - id: a\n    url: https://h/x?p=1\n    batch_size: 10\n"
        "  - id: b\n    url: http://h\n    colour: red\n"
    )
    with pytest.raises(StreamDefinitionError, match=r"streams\[1\]: unknown key 'colour'"):
        yaml_definitions(parse_config_text(text))
    ok = yaml_definitions(parse_config_text("streams:\n  - {id: a, url: 'http://h'}\n"))
    assert ok[0].batch_size == 100 and ok[0].retry_delays_s == [30, 60, 120] and ok[0].linger_s == 1.0
    with pytest.raises(StreamDefinitionError, match="defined twice"):
        yaml_definitions(
            parse_config_text("streams:\n  - {id: a, url: 'http://h'}\n  - {id: a, url: 'http://h'}\n")
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"url": "http://h", "retry_delays_s": [1, 2, 3, 4]}, "at most 3"),
        ({"url": "http://h", "headers": {"Content-Type": "text/plain"}}, "set by the sink"),
        ({"url": "http://h", "auth": {"type": "header", "header_name": "X"}}, "header_name and header_value"),
        ({"url": "http://h", "auth": {"type": "none", "username": "u"}}, "only for basic auth"),
        ({"url": "http://h", "batch_size": 0}, "batch_size"),
        ({"url": "nohost"}, "http(s) URL"),
    ],
)
def test_bad_definitions_are_refused_with_the_reason(data, message):
    with pytest.raises(StreamDefinitionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_definition({"id": "s"} | data, "streams[0]")


def test_stored_form_encrypts_secrets_and_they_decrypt_into_headers():
    box = SecretBox(Fernet.generate_key())
    d = definition(auth={"type": "header", "header_name": "Authorization", "header_value": "Bearer t0k"})
    stored = d.stored(box)
    assert stored["auth"]["header_value"].startswith("enc:v1:") and "t0k" not in json.dumps(stored)
    again = StreamDefinition.model_validate(stored)
    assert again.request_headers(box)["Authorization"] == "Bearer t0k"
    with pytest.raises(StreamDefinitionError, match="secret box"):
        again.request_headers(None)
    assert "t0k" not in json.dumps(d.public())


def test_formatter_splices_raw_attributes_and_drops_unsupported_campaign_attributes():
    fmt = EventFormatter(definition())
    event = enriched(
        event_type="CAMPAIGN_EVENT",
        event_code="MOE_EMAIL_CLICK",
        event_name="Email Clicked",
        email_id="a@b",
        push_id="tok",
        customer_id=None,
        event_attributes_json='{"campaign_id":"c","email_subject":"s","email_click_url":"u"}',
    )
    out = json.loads(fmt.fragment(event))
    assert out["event_attributes"] == {"campaign_id": "c"}
    assert out["email_id"] == "a@b" and "push_id" not in out and out["uid"] is None
    user_action = json.loads(
        fmt.fragment(enriched(event_attributes_json='{"email_subject":"kept"}', push_id="t"))
    )
    assert user_action["event_attributes"] == {"email_subject": "kept"} and "push_id" not in user_action


def test_formatter_adds_moengage_user_id_and_keeps_device_id_with_attribute_lists():
    fmt = EventFormatter(definition(user_attributes=["city"], device_attributes=["os"]))
    out = json.loads(
        fmt.fragment(
            enriched(
                uid="u9",
                user_attributes_json='{"city":"X","age":3}',
                device_attributes_json='{"moengage_device_id":"d","os":"a","m":1}',
            )
        )
    )
    assert out["user_attributes"] == {"moengage_user_id": "u9", "city": "X"}
    assert out["device_attributes"] == {"moengage_device_id": "d", "os": "a"}
    no_device = json.loads(fmt.fragment(enriched(device_attributes_json="{}")))
    assert no_device["device_attributes"] == {}
    all_attrs = json.loads(
        EventFormatter(definition()).fragment(enriched(uid="u9", user_attributes_json='{"a":1}'))
    )
    assert all_attrs["user_attributes"] == {"moengage_user_id": "u9", "a": 1}


def test_formatter_reports_attributes_that_are_not_json_objects():
    fmt = EventFormatter(definition(user_attributes=["a"]))
    with pytest.raises(PayloadError, match="user_attributes_json is not valid JSON"):
        fmt.fragment(enriched(user_attributes_json="{oops"))
    with pytest.raises(PayloadError, match="event_attributes_json is not a JSON object"):
        fmt.fragment(enriched(event_attributes_json="[1]"))


def test_event_filter_by_workspace_and_name_or_code():
    f = EventFilter.of(definition(workspace_id="W1", events=["Email Sent", "Purchase"]))
    assert f.accepts(enriched(event_name="Email Sent", event_code="MOE_EMAIL_SENT"))
    assert f.accepts(enriched(event_name="x", event_code="Purchase"))
    assert not f.accepts(enriched(event_name="Login", event_code="Login"))
    assert not f.accepts(enriched(workspace_id="W2"))
    assert EventFilter.of(definition()).accepts(enriched(workspace_id="any"))


def test_request_body_is_the_moengage_envelope():
    body = json.loads(request_body("App", "rid", events_array(['{"a":1}', '{"b":2}'])))
    assert body == {
        "app_name": "App",
        "source": "MOENGAGE",
        "moe_request_id": "rid",
        "events": [{"a": 1}, {"b": 2}],
    }


def test_offsets_commit_only_up_to_the_first_unfinished_batch():
    tracker = OffsetTracker()
    a, b, c = WorkUnit(), WorkUnit(), WorkUnit()
    for offset, unit in [(0, a), (1, a), (2, b), (3, a), (4, c)]:
        tracker.add(unit, "t", 0, offset)
    tracker.add(b, "t", 1, 7)
    tracker.complete(b)
    assert [(tp.partition, tp.offset) for tp in tracker.take_commits()] == [(1, 8)]
    tracker.complete(c)
    assert tracker.take_commits() == []  # offset 0 (a) is still in flight
    tracker.complete(a)
    assert [(tp.partition, tp.offset) for tp in tracker.take_commits()] == [(0, 5)]
    tracker.forget([("t", 0)])
    assert tracker.pending() == 0


def test_retry_route_and_history():
    d = definition(retry_delays_s=[30, 60])
    assert next_parking_topic(d, -1).topic == "streams.retry.30s"
    assert next_parking_topic(d, 0).topic == "streams.retry.60s"
    assert next_parking_topic(d, 1).topic == DLQ_TOPIC
    assert next_parking_topic(definition(retry_delays_s=[]), -1).topic == DLQ_TOPIC
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = parked_batch(
        d,
        {"moe_request_id": "r", "events_json": "[]", "created_at": now},
        Outcome.retriable("HTTP 502", 502, 0.1),
        "ev",
        next_parking_topic(d, -1),
        now,
    )
    assert first["attempt"] == 1 and first["due_at"] == now + timedelta(seconds=30)
    second = parked_batch(
        d, first, Outcome.retriable("timeout", None, 1), "r30", next_parking_topic(d, 0), now
    )
    assert second["attempt"] == 2 and [a["status"] for a in second["attempts"]] == [502, None]
    assert second["due_at"] == now + timedelta(seconds=60) and second["moe_request_id"] == "r"


def test_pause_view_windows():
    d = definition()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(seconds=5)
    assert pause_view(d, None).paused is False
    assert pause_view(definition(paused=True), None).paused is True
    resumed = pause_view(d, {"paused": False, "mode": "skip", "changed_at": t1, "paused_at": t0})
    assert resumed.skip_window == (int(t0.timestamp() * 1000), int(t1.timestamp() * 1000))
    assert (
        pause_view(d, {"paused": False, "mode": "resume", "changed_at": t1, "paused_at": t0}).skip_window
        is None
    )


def test_batch_drops_events_that_arrived_in_a_window():
    batch = EventBatch(fragments=["a", "b", "c"], event_uuids=["1", "2", "3"], first_arrival_ms=[5, 10, 20])
    batch.drop_arrivals(10, 20)
    assert batch.fragments == ["a", "c"] and batch.event_uuids == ["1", "3"]


def test_a_permanent_failure_goes_straight_to_the_dlq():
    d = definition(retry_delays_s=[30, 60])
    assert next_parking_topic(d, -1, permanent=True).topic == DLQ_TOPIC
    assert next_parking_topic(d, 0, permanent=True).is_dlq
    outcome = Outcome.failed_permanently("rejected", 400)
    assert not outcome.ok and outcome.permanent and outcome.result is Result.PERMANENT
    dlq = next_parking_topic(d, -1, True)
    record = parked_batch(d, {"moe_request_id": "r", "events_json": "[]"}, outcome, "ev", dlq)
    assert record["attempts"][0]["error"] == "rejected" and record["attempts"][0]["status"] == 400


def test_the_destination_is_chosen_from_the_definition_url_scheme():
    assert isinstance(open_destination(definition(url="https://h/x"), None), HttpDestination)
    assert isinstance(open_destination(definition(url="http://h/x"), None), HttpDestination)
    odd = StreamDefinition.model_construct(id="s", url="ftp://h/x")
    with pytest.raises(StreamDefinitionError, match="no destination for 'ftp'"):
        open_destination(odd, None)


def test_split_events_keeps_each_fragment_byte_for_byte():
    fragments = ['{"a":[1,2]}', '{"b":"x,]"}', '{ "c" : "\\u00e9" }']
    assert split_events(events_array(fragments)) == fragments
    assert split_events("[]") == []
    with pytest.raises(PayloadError):
        split_events('{"a":1}')

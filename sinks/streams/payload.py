"""The Streams request body, built exactly as MoEngage Streams sends it, from EnrichedEvent records.

Each event becomes one JSON text fragment; a request body is the fragments joined, so a batch parked
in a retry topic (``StreamBatch.events_json``) is resent byte for byte with the same ``moe_request_id``.
Attribute objects that need no filtering are spliced in as the processors wrote them (no re-parsing):
this keeps the sink fast enough for 50,000 events/s in one process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as quote
from typing import Any

from inflow.sinks.streams.channels import RECIPIENT_FIELD, UNSUPPORTED_CAMPAIGN_ATTRIBUTES, channel_of
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.exceptions import StreamsError

CAMPAIGN_EVENT = "CAMPAIGN_EVENT"
RECIPIENT_FIELDS = ("push_id", "email_id", "mobile_number")


class PayloadError(StreamsError):
    """An enriched event cannot be turned into a Streams event (e.g. attributes that are not JSON objects)."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events of the events topic a stream exports: workspace, and event names or codes."""

    workspace_id: str | None
    names: frozenset[str] | None  # None means all events

    @classmethod
    def of(cls, definition: StreamDefinition) -> EventFilter:
        names = None if definition.events == "all" else frozenset(definition.events)
        return cls(definition.workspace_id, names)

    @property
    def accepts_all(self) -> bool:
        """True when every event passes (no workspace, all event names): the check can be skipped."""
        return self.workspace_id is None and self.names is None

    def accepts(self, event: Mapping[str, Any]) -> bool:
        if self.workspace_id is not None and event["workspace_id"] != self.workspace_id:
            return False
        return self.names is None or event["event_name"] in self.names or event["event_code"] in self.names


class EventFormatter:
    """Turns one EnrichedEvent into the JSON text of one Streams event for one stream's attribute lists."""

    def __init__(self, definition: StreamDefinition) -> None:
        self._user_keys = None if definition.user_attributes == "all" else set(definition.user_attributes)
        self._device_keys = (
            None if definition.device_attributes == "all" else set(definition.device_attributes)
        )
        self._splice_all = self._user_keys is None and self._device_keys is None

    def fragment(self, event: Mapping[str, Any]) -> str:
        """The event object as JSON text, keys in the order of MoEngage's Streams events."""
        if self._splice_all and event["event_type"] != CAMPAIGN_EVENT:
            # The usual case (a user-action event, a stream of all attributes): one f-string, every
            # attribute object spliced as the processors wrote it once it looks like an object.
            user = event.get("user_attributes_json") or "{}"
            device = event.get("device_attributes_json") or "{}"
            attrs = event.get("event_attributes_json") or "{}"
            if (
                user[:1] == "{"
                and user[-1:] == "}"
                and '"moengage_user_id"' in user
                and device[:1] == "{"
                and device[-1:] == "}"
                and attrs[:1] == "{"
                and attrs[-1:] == "}"
            ):
                customer_id = event.get("customer_id")
                return (
                    f'{{"event_name":{quote(event["event_name"])},"event_code":{quote(event["event_code"])}'
                    f',"event_uuid":{quote(event["event_uuid"])},"event_time":{int(event["event_time"])}'
                    f',"event_type":{quote(event["event_type"])}'
                    f',"event_source":{quote(event.get("event_source") or "MOENGAGE")}'
                    f',"uid":{"null" if customer_id is None else quote(customer_id)}'
                    f',"event_attributes":{attrs},"user_attributes":{user},"device_attributes":{device}}}'
                )
        code = event["event_code"]
        is_campaign = event["event_type"] == CAMPAIGN_EVENT
        parts = [
            '{"event_name":',
            quote(event["event_name"]),
            ',"event_code":',
            quote(code),
            ',"event_uuid":',
            quote(event["event_uuid"]),
            ',"event_time":',
            str(int(event["event_time"])),
            ',"event_type":',
            quote(event["event_type"]),
            ',"event_source":',
            quote(event.get("event_source") or "MOENGAGE"),
        ]
        recipient = recipient_field(event, is_campaign)
        if recipient is not None:
            parts += [',"', recipient, '":', quote(event[recipient])]
        customer_id = event.get("customer_id")
        parts += [',"uid":', "null" if customer_id is None else quote(customer_id)]
        parts += [',"event_attributes":', self._event_attributes(event, is_campaign)]
        parts += [',"user_attributes":', self._user_attributes(event)]
        parts += [',"device_attributes":', self._device_attributes(event), "}"]
        return "".join(parts)

    def _event_attributes(self, event: Mapping[str, Any], is_campaign: bool) -> str:
        raw: str = event.get("event_attributes_json") or "{}"
        if is_campaign and any(name in raw for name in UNSUPPORTED_CAMPAIGN_ATTRIBUTES):
            attrs = load_object(raw, "event_attributes_json", event)
            for name in UNSUPPORTED_CAMPAIGN_ATTRIBUTES:
                attrs.pop(name, None)
            return dump(attrs)
        return checked_object(raw, "event_attributes_json", event)

    def _user_attributes(self, event: Mapping[str, Any]) -> str:
        raw: str = event.get("user_attributes_json") or "{}"
        if self._user_keys is None and '"moengage_user_id"' in raw:
            return checked_object(raw, "user_attributes_json", event)
        attrs = load_object(raw, "user_attributes_json", event)
        out: dict[str, Any] = {"moengage_user_id": attrs.get("moengage_user_id", event["uid"])}
        out.update((k, v) for k, v in attrs.items() if self._user_keys is None or k in self._user_keys)
        return dump(out)

    def _device_attributes(self, event: Mapping[str, Any]) -> str:
        raw: str = event.get("device_attributes_json") or "{}"
        if self._device_keys is None:
            return checked_object(raw, "device_attributes_json", event)
        attrs = load_object(raw, "device_attributes_json", event)
        if not attrs:
            return "{}"
        out = {k: v for k, v in attrs.items() if k == "moengage_device_id" or k in self._device_keys}
        return dump(out)


def recipient_field(event: Mapping[str, Any], is_campaign: bool) -> str | None:
    """push_id / email_id / mobile_number, only for push / email / SMS campaign events and only when set."""
    if not is_campaign:
        return None
    channel = channel_of(event["event_code"])
    if channel is not None:
        field = RECIPIENT_FIELD[channel]
        return field if field is not None and event.get(field) else None
    # A campaign code MoEngage does not list: trust the processors, which set at most one of the three.
    return next((f for f in RECIPIENT_FIELDS if event.get(f)), None)


def request_body(app_name: str, moe_request_id: str, events_json: str) -> bytes:
    """The whole request body around an ``events`` JSON array text."""
    head = '{"app_name":' + quote(app_name) + ',"source":"MOENGAGE","moe_request_id":' + quote(moe_request_id)
    return (head + ',"events":' + events_json + "}").encode()


def events_array(fragments: list[str]) -> str:
    """JSON array text of event fragments, as kept in ``StreamBatch.events_json``."""
    return "[" + ",".join(fragments) + "]"


def split_events(events_json: str) -> list[str]:
    """The event fragments of an ``events`` JSON array text, each exactly as it appears in it."""
    decoder = json.JSONDecoder()
    text = events_json.strip()
    if not text.startswith("[") or not text.endswith("]"):
        raise PayloadError("events_json is not a JSON array")
    fragments: list[str] = []
    index = 1
    end = len(text) - 1
    while True:
        while index < end and text[index] in " \t\r\n,":
            index += 1
        if index >= end:
            return fragments
        _, stop = decoder.raw_decode(text, index)
        fragments.append(text[index:stop])
        index = stop


def dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def checked_object(raw: str, field: str, event: Mapping[str, Any]) -> str:
    """Raw JSON object text, spliced as is once it looks like an object (full parse only when it does not)."""
    text = raw.strip()
    if text.startswith("{") and text.endswith("}"):
        return text
    return dump(load_object(raw, field, event))


def load_object(raw: str, field: str, event: Mapping[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise PayloadError(f"event {event.get('event_uuid')}: {field} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise PayloadError(f"event {event.get('event_uuid')}: {field} is not a JSON object")
    return value

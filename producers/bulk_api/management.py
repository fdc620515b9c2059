"""Requests about users and devices rather than data: Merge User, Delete User, Device opt-out.

The gateway checks the body and writes one request record per user (``MergeRequest``, ``DeleteRequest``,
``DeviceOptOut``) to the ingest topic, keyed by the user's route (``workspace:customer_id``, or
``workspace:name=value`` for another identifier) so it is ordered with that user's other records; the
processors apply it. Like the Bulk Import API, one bad pair of a Merge User call is reported with its index
and the good ones go through (``GatewaySettings.bad_elements``).

Merge User is refused while identity resolution is on (reference §2.8: "The Merge User API is disabled
while IR is on"): a workspace with an identifier other than ``customer_id`` merges on shared identifier
values by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from inflow.producers.bulk_api.context import RequestContext
from inflow.producers.bulk_api.elements import Outgoing
from inflow.producers.bulk_api.exceptions import ApiError
from inflow.producers.bulk_api.messages import invalid, missing, not_an_object, wrong_type
from inflow.schemas.serde import AvroSerde

# TODO(lead): the processors read these records from this topic (their first two fields are event_uuid
# and workspace_id, as in every ingest record) and apply them; until then they wait there.
REQUESTS_TOPIC = "ingest.records"
CUSTOMER_ID = "customer_id"
MAX_MERGE_PAIRS = 100
MAX_DEVICE_IDENTIFIERS = 100
MAX_VALUE_CHARS = 1000
DEVICE_IDENTIFIER_TYPES = ("unique_id", "device_unique_id", "push_id", "moe_gaid")
ACTION_TYPES = ("block", "unblock")


def identity_resolution_on(identifiers: tuple[str, ...]) -> bool:
    """IR is on when the workspace identifies users by anything besides customer_id."""
    return any(name != CUSTOMER_ID for name in identifiers)


def route(workspace_id: str, name: str, value: str) -> str:
    """The ingest key of a user: ``W:value`` for customer_id, ``W:name=value`` for another identifier."""
    return f"{workspace_id}:{value}" if name == CUSTOMER_ID else f"{workspace_id}:{name}={value}"


def user_id(doc: dict[str, Any], name: str, blocked: frozenset[str], label: str | None = None) -> str:
    """A customer id field: present, a string, not blank, not one of MoEngage's blocked values."""
    label = label or name
    if name not in doc or doc[name] is None:
        raise missing(label, f"{label} is not found in the payload")
    value = doc[name]
    if not isinstance(value, str):
        raise wrong_type(label, "string")
    if not value.strip():
        raise missing(label, f"{label} can not be empty Unicode String")
    if len(value) > MAX_VALUE_CHARS:
        raise invalid(label, f"{label} is longer than {MAX_VALUE_CHARS} characters")
    if value.strip().lower() in blocked:
        raise invalid(label, f"{label} value '{value}' is blocked", "BlockedValueError")
    return value


def merge_pairs(doc: Any) -> list[Any]:
    """The ``merge_data`` list of a Merge User body (its pairs are checked one by one)."""
    if not isinstance(doc, dict):
        raise not_an_object()
    pairs = doc.get("merge_data")
    if pairs is None:
        raise missing("merge_data", "merge_data is not found in the payload")
    if not isinstance(pairs, list):
        raise wrong_type("merge_data", "list")
    if not pairs:
        raise missing("merge_data", "merge_data can not be empty Array")
    if len(pairs) > MAX_MERGE_PAIRS:
        raise ApiError(400, "LimitBreached", f"max limit allowed is {MAX_MERGE_PAIRS}", "merge_data")
    return pairs


def merge_pair(pair: Any, blocked: frozenset[str]) -> tuple[str, str]:
    """``(merged_user, retained_user)`` of one pair, or the ApiError saying what is wrong with it."""
    if not isinstance(pair, dict):
        raise wrong_type("merge_data", "a list of objects")
    merged = user_id(pair, "merged_user", blocked)
    retained = user_id(pair, "retained_user", blocked)
    if merged == retained:
        raise invalid("retained_user", "merged_user and retained_user must be different users")
    return merged, retained


def delete_customer(doc: Any, blocked: frozenset[str]) -> str:
    """The customer_id of a Delete User body ``{"customer_id": "..."}``."""
    if not isinstance(doc, dict):
        raise not_an_object()
    return user_id(doc, CUSTOMER_ID, blocked)


def optional_text(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong_type(name, "string")
    if len(value) > MAX_VALUE_CHARS:
        raise invalid(name, f"{name} is longer than {MAX_VALUE_CHARS} characters")
    return value


def device_identifiers(value: Any) -> list[dict[str, str]]:
    """Each item names devices by one or more of unique_id, device_unique_id, push_id, moe_gaid."""
    if value is None:
        raise missing("device_identifiers", "device_identifiers is not found in the payload")
    if not isinstance(value, list):
        raise wrong_type("device_identifiers", "list")
    if not value:
        raise missing("device_identifiers", "device_identifiers can not be empty Array")
    if len(value) > MAX_DEVICE_IDENTIFIERS:
        raise ApiError(
            400, "LimitBreached", f"max limit allowed is {MAX_DEVICE_IDENTIFIERS}", "device_identifiers"
        )
    out = []
    known = ", ".join(DEVICE_IDENTIFIER_TYPES)
    for item in value:
        if not isinstance(item, dict) or not item:
            raise wrong_type("device_identifiers", f"a list of objects with {known}")
        unknown = sorted(k for k in item if k not in DEVICE_IDENTIFIER_TYPES)
        if unknown:
            raise invalid("device_identifiers", f"unknown device identifier {unknown[0]!r}; known: {known}")
        for name, text in item.items():
            if not isinstance(text, str) or not text.strip():
                raise invalid("device_identifiers", f"{name} must be a non-empty string")
            if len(text) > MAX_VALUE_CHARS:
                raise invalid("device_identifiers", f"{name} is longer than {MAX_VALUE_CHARS} characters")
        out.append(dict(item))
    return out


class RequestRecords:
    """Encodes the request records of one gateway."""

    def __init__(self, serde: AvroSerde) -> None:
        self._merge: Callable[[dict[str, Any]], bytes] = serde.encoder("MergeRequest")
        self._delete: Callable[[dict[str, Any]], bytes] = serde.encoder("DeleteRequest")
        self._opt_out: Callable[[dict[str, Any]], bytes] = serde.encoder("DeviceOptOut")

    @staticmethod
    def _common(ctx: RequestContext) -> dict[str, Any]:
        return {
            "event_uuid": ctx.next_event_uuid(),
            "workspace_id": ctx.workspace_id,
            "request_id": ctx.request_id,
            "received_at": ctx.received_at,
        }

    def merge(self, ctx: RequestContext, merged: str, retained: str) -> Outgoing:
        fields = self._common(ctx) | {"merged_user": merged, "retained_user": retained}
        key = route(ctx.workspace_id, CUSTOMER_ID, merged).encode()
        return Outgoing(REQUESTS_TOPIC, key, self._merge(fields))

    def delete(self, ctx: RequestContext, customer_id: str) -> Outgoing:
        fields = self._common(ctx) | {"customer_id": customer_id}
        key = route(ctx.workspace_id, CUSTOMER_ID, customer_id).encode()
        return Outgoing(REQUESTS_TOPIC, key, self._delete(fields))

    def opt_out(self, ctx: RequestContext, doc: Any, identifiers: tuple[str, ...]) -> Outgoing:
        """The DeviceOptOut record of a ``/v1/devices/manage`` body (checked here)."""
        if not isinstance(doc, dict):
            raise not_an_object()
        kind = optional_text(doc, "user_identifier_type")
        if kind is None:
            raise missing("user_identifier_type", "user_identifier_type is not found in the payload")
        allowed = tuple(dict.fromkeys((CUSTOMER_ID, *identifiers)))
        if kind not in allowed:
            raise invalid(
                "user_identifier_type",
                f"user_identifier_type must be one of the workspace's identifiers: {', '.join(allowed)}",
            )
        value = user_id(doc, "user_identifier_value", frozenset())
        action = doc.get("action_type")
        if action is None:
            raise missing("action_type", "action_type is not found in the payload")
        if action not in ACTION_TYPES:
            raise invalid("action_type", "action_type should be block/unblock")
        devices = device_identifiers(doc.get("device_identifiers"))
        fields = self._common(ctx) | {
            "user_identifier_type": kind,
            "user_identifier_value": value,
            "action_type": action,
            "reason": optional_text(doc, "reason"),
            "client_reference_id": optional_text(doc, "client_reference_id"),
            "device_identifiers_json": orjson.dumps(devices).decode(),
        }
        key = route(ctx.workspace_id, kind, value).encode()
        return Outgoing(REQUESTS_TOPIC, key, self._opt_out(fields))

"""Builders of ingest records as the gateway and the importer produce them (schemas/*.avsc)."""

from __future__ import annotations

import json
import uuid
from typing import Any

BASE_MS = 1_750_000_000_000


def _envelope(ws: str, customer_id: str | None, at: int, event_uuid: str | None) -> dict[str, Any]:
    """The fields every ingest record starts with, as the gateway writes them."""
    return {
        "event_uuid": event_uuid or str(uuid.uuid4()),
        "workspace_id": ws,
        "request_id": "req-1",
        "received_at": BASE_MS + at * 1000,
        "source": "api",
        "client_ip": None,
        "customer_id": customer_id,
    }


def user(ws: str, customer_id: str | None = None, *, at: int = 0, **kw: Any) -> dict[str, Any]:
    """A UserUpsert; ``at`` is seconds after a fixed base time (received_at)."""
    return _envelope(ws, customer_id, at, kw.pop("event_uuid", None)) | {
        "anonymous_id": kw.pop("anonymous_id", None),
        "user_identifiers": kw.pop("user_identifiers", {}),
        "update_existing_only": kw.pop("update_existing_only", False),
        "attributes_json": json.dumps(kw.pop("attributes", {})),
        "unset_attributes_json": kw.pop("unset", None),
        "origin": None,
    }


def device(
    ws: str, customer_id: str | None, device_id: str, *, at: int = 0, **attributes: Any
) -> dict[str, Any]:
    return _envelope(ws, customer_id, at, None) | {
        "anonymous_id": None,
        "device_id": device_id,
        "attributes_json": json.dumps(attributes),
        "origin": None,
    }


def event(
    ws: str, customer_id: str | None, action: str = "Purchase", *, at: int = 0, **kw: Any
) -> dict[str, Any]:
    return _envelope(ws, customer_id, at, kw.pop("event_uuid", None)) | {
        "anonymous_id": kw.pop("anonymous_id", None),
        "user_identifiers": kw.pop("user_identifiers", {}),
        "device_id": kw.pop("device_id", None),
        "action": action,
        "attributes_json": json.dumps(kw.pop("attributes", {})),
        "platform": kw.pop("platform", None),
        "moe_os_type": None,
        "app_version": None,
        "user_time": BASE_MS + at * 1000,
        "current_time": None,
        "user_timezone_offset": None,
        "origin": None,
    }


def _request(ws: str, at: int, event_uuid: str | None, request_id: str) -> dict[str, Any]:
    """The fields every management request starts with (producers/bulk_api/management.py)."""
    return {
        "event_uuid": event_uuid or str(uuid.uuid4()),
        "workspace_id": ws,
        "request_id": request_id,
        "received_at": BASE_MS + at * 1000,
    }


def merge(
    ws: str, merged: str, retained: str, *, at: int = 0, event_uuid: str | None = None
) -> dict[str, Any]:
    """A MergeRequest: one pair of a Merge User call."""
    return _request(ws, at, event_uuid, "req-merge") | {"merged_user": merged, "retained_user": retained}


def delete(ws: str, customer_id: str, *, at: int = 0, event_uuid: str | None = None) -> dict[str, Any]:
    """A DeleteRequest (Delete User)."""
    return _request(ws, at, event_uuid, "req-delete") | {"customer_id": customer_id}


def opt_out(
    ws: str,
    value: str,
    devices: list[dict[str, str]],
    *,
    action: str = "block",
    kind: str = "customer_id",
    at: int = 0,
) -> dict[str, Any]:
    """A DeviceOptOut (POST /v1/devices/manage)."""
    return _request(ws, at, None, "req-optout") | {
        "user_identifier_type": kind,
        "user_identifier_value": value,
        "action_type": action,
        "reason": "user asked",
        "client_reference_id": None,
        "device_identifiers_json": json.dumps(devices),
    }

"""Device attributes as MoEngage's Device API takes them: the documented set is kept, custom attributes are
dropped, and a user holds at most 1,000 devices.
"""

from __future__ import annotations

import json
from typing import Any

from inflow.processors.exceptions import Rejection

DEVICE_ATTRIBUTES = frozenset(
    {
        "platform",
        "push_id",
        "model",
        "moe_push_opted",
        "moe_push_provisional_opted",
        "app_version",
        "os_version",
        "moe_gaid",
        "idfv",
        "brand",
    }
)
# A new device with one of these values replaces the device that had it (as in MoEngage).
UNIQUE_DEVICE_KEYS = ("push_id", "moe_gaid", "idfv")
MAX_DEVICES_PER_USER = 1000
DEVICE_PLATFORMS = {"android": "ANDROID", "ios": "iOS", "web": "web", "tv": "TV"}


def device_attributes(attributes_json: str) -> dict[str, Any]:
    """The documented device attributes of a record; custom ones are dropped during processing."""
    try:
        raw = json.loads(attributes_json or "{}")
    except ValueError as exc:
        raise Rejection(f"device attributes_json is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise Rejection("device attributes_json must be a JSON object")
    kept = {k: v for k, v in raw.items() if k in DEVICE_ATTRIBUTES and v is not None}
    if "platform" in kept:
        platform = DEVICE_PLATFORMS.get(str(kept["platform"]).strip().lower())
        if platform is None:
            raise Rejection(f"device platform {kept['platform']!r} is not one of ANDROID, iOS, web, TV")
        kept["platform"] = platform
    return kept


def unique_values(device: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) pairs that identify the device within a workspace."""
    pairs = [("device_id", str(device["device_id"]))]
    pairs += [(k, str(device[k])) for k in UNIQUE_DEVICE_KEYS if device.get(k) not in (None, "")]
    return pairs


def check_capacity(book: dict[str, Any], device_id: str) -> None:
    """The 1,001st device of a user is refused."""
    if device_id not in book and len(book) >= MAX_DEVICES_PER_USER:
        raise Rejection(f"the user already has {MAX_DEVICES_PER_USER} devices; device {device_id!r} refused")

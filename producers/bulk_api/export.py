"""Get User (``POST /v1/customers/export?app_id=``): request validation and MoEngage's answer."""

from __future__ import annotations

from typing import Any

from inflow.producers.bulk_api.elements import number_text
from inflow.producers.bulk_api.exceptions import ApiError
from inflow.producers.bulk_api.messages import missing, wrong_type
from inflow.producers.bulk_api.profiles import ProfileStore


def parse_export(doc: Any, max_identifiers: int) -> tuple[list[tuple[str, str]], list[str] | None]:
    """``{"data":{"identifiers":[{identifier_type, identifier}], "user_fields_to_export":[...]}}``."""
    if not isinstance(doc, dict):
        raise ApiError(400, "Body type is not JSON", "A valid JSON document is required.")
    data = doc.get("data")
    if data is None:
        raise missing("data", "data is not found in the payload")
    if not isinstance(data, dict):
        raise wrong_type("data", "object")
    raw = data.get("identifiers")
    if raw is None:
        raise missing("identifiers", "identifiers is not found in the payload")
    if not isinstance(raw, list):
        raise wrong_type("identifiers", "list")
    if not raw:
        raise missing("identifiers", "identifiers can not be empty Array")
    if len(raw) > max_identifiers:
        raise ApiError(400, "LimitBreached", f"max limit allowed is {max_identifiers}", "identifiers")
    wanted = []
    for item in raw:
        if not isinstance(item, dict):
            raise wrong_type("identifiers", "list of objects")
        kind, value = item.get("identifier_type"), item.get("identifier")
        if not isinstance(kind, str) or not kind:
            raise wrong_type("identifier_type", "non-empty string")
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = number_text("identifier", value)
        if not isinstance(value, str) or not value:
            raise wrong_type("identifier", "non-empty string")
        wanted.append((kind, value))
    fields = data.get("user_fields_to_export")
    if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)):
        raise wrong_type("user_fields_to_export", "list of strings")
    return wanted, fields


def export_users(
    store: ProfileStore, workspace_id: str, wanted: list[tuple[str, str]], fields: list[str] | None
) -> dict[str, Any]:
    """MoEngage's answer: users found (optionally only the requested fields) and not found."""
    users, not_found, seen = [], [], set()
    for kind, value in wanted:
        profile = store.find(workspace_id, kind, value)
        if profile is None:
            not_found.append(value)
            continue
        if profile.uid in seen:
            continue
        seen.add(profile.uid)
        attributes = profile.user_attributes()
        if fields:
            keep = set(fields) | {"moengage_id", "uid"}
            attributes = {k: v for k, v in attributes.items() if k in keep}
        users.append({"user_attributes": attributes})
    return {
        "status": "success",
        "type": "export_users",
        "data": {"users_not_found": not_found, "users": users},
    }

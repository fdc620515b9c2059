"""User attributes: the standard-key mapping, array operators, unset rules and the merge of two profiles.

Array operators use set semantics (a value present once), so a record replayed after a crash leaves the
profile as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inflow.config.identifiers import BLOCKED_ATTRIBUTE_NAMES
from inflow.processors import jsoncodec
from inflow.processors.exceptions import Rejection

# MoEngage's standard user attributes: API input keys and the stored u_* keys they map to.
STANDARD_KEYS = {
    "name": "u_n",
    "first_name": "u_fn",
    "last_name": "u_ln",
    "email": "u_em",
    "mobile": "u_mb",
    "gender": "u_gd",
    "birthday": "u_bd",
}
# MoEngage sets these on create and never updates them through Track User.
CREATE_ONLY = frozenset(
    {"publisher_name", "campaign_name", "u_l_a", "cr_t", "moe_gaid", "advertising_identifier"}
)
# MoEngage derives these itself; input values are ignored.
READ_ONLY = frozenset(
    {
        "t_rev",
        "t_trans",
        "moe_ip_city",
        "moe_ip_pin",
        "moe_ip_subdivision",
        "moe_ip_country",
        "moe_dtzo",
        "u_s_c",
        "installed",
        "uninstall_time",
        "moe_rsp_android",
        "moe_rsp_ios",
        "moe_rsp_web",
        "moe_rsu",
    }
)
ADD_OP = "addValueToArrayField"
REMOVE_OP = "removeValueFromArrayField"
RESERVED_FOR_OPERATORS = frozenset({"platforms"})
BLOCKED_NAMES = BLOCKED_ATTRIBUTE_NAMES
# On a MoEngage merge these become true when the two merged profiles disagree.
TRUE_WINS_ON_MERGE = frozenset({"moe_hard_bounce", "moe_spam", "moe_unsubscribe"})
# On a MoEngage merge the lifetime value (revenue, transactions) is summed by default.
SUMMED_ON_MERGE = frozenset({"t_rev", "t_trans"})
# Read-only through the Data API, but a file import may set them (the manifest maps an LTV column to t_rev).
IMPORTABLE_READ_ONLY = frozenset({"t_rev", "t_trans"})
IMPORT_SOURCE = "s3_import"  # UserUpsert.source of a file import
PLATFORMS = {"android": "ANDROID", "ios": "iOS", "web": "web", "tv": "TV"}


@dataclass
class AttributeUpdate:
    """What one customer element asks for, validated."""

    values: dict[str, Any] = field(default_factory=dict)
    add: dict[str, list[Any]] = field(default_factory=dict)
    remove: dict[str, list[Any]] = field(default_factory=dict)
    platforms: list[tuple[str, bool]] = field(default_factory=list)


def parse_attributes(attributes_json: str) -> dict[str, Any]:
    """The record's attributes object; anything but a JSON object rejects the record."""
    return _json_object(attributes_json, "attributes_json")


def parse_update(attributes: Mapping[str, Any], imported: bool = False) -> AttributeUpdate:
    """Validate a record's attributes; operator misuse rejects the record with MoEngage's message.
    Read-only attributes are ignored, except LTV (``t_rev``, ``t_trans``) from a file import."""
    raw = dict(attributes)
    update = AttributeUpdate()
    update.add = _operator(raw.pop(ADD_OP, None), ADD_OP)
    update.remove = _operator(raw.pop(REMOVE_OP, None), REMOVE_OP)
    update.platforms = _platforms(raw.pop("platforms", None))
    for key, value in raw.items():
        if key in BLOCKED_NAMES:
            raise Rejection(f"attribute name {key!r} is not allowed")
        if key in READ_ONLY and not (imported and key in IMPORTABLE_READ_ONLY):
            continue
        update.values[STANDARD_KEYS.get(key, key)] = value
    for name in update.add.keys() & update.remove.keys():
        raise Rejection(f"Cannot add and remove '{name}' at the same time")
    for name in (update.add.keys() | update.remove.keys()) & (update.values.keys() | RESERVED_FOR_OPERATORS):
        raise Rejection(f"Cannot set '{name}' and add/remove values of it in the same call")
    return update


def apply_update(attributes: dict[str, Any], update: AttributeUpdate) -> None:
    """Set values (create-only ones only when absent), then apply the array operators."""
    for key, value in update.values.items():
        if key in CREATE_ONLY and key in attributes:
            continue
        attributes[key] = value
    for key, values in update.add.items():
        current = _as_list(attributes.get(key))
        attributes[key] = current + [v for v in values if v not in current]
    for key, values in update.remove.items():
        if key in attributes:
            attributes[key] = [v for v in _as_list(attributes[key]) if v not in values]


def apply_platforms(platforms: list[str], changes: list[tuple[str, bool]]) -> list[str]:
    """Active platforms after ``{platform, active}`` entries."""
    active = list(platforms)
    for platform, on in changes:
        if on and platform not in active:
            active.append(platform)
        elif not on and platform in active:
            active.remove(platform)
    return active


def apply_unset(attributes: dict[str, Any], unset_json: str | None) -> None:
    """``unset_attributes`` rules (equals / prefix / suffix / contains); system attributes are protected."""
    if not unset_json:
        return
    try:
        rules = json.loads(unset_json)
    except ValueError as exc:
        raise Rejection(f"unset_attributes is not valid JSON: {exc}") from exc
    if not isinstance(rules, list):
        raise Rejection("unset_attributes must be a list of {type, attr, case_sensitive}")
    for rule in rules:
        match = _unset_matcher(rule)
        for key in [k for k in attributes if not _is_system(k) and match(k)]:
            del attributes[key]


def merge_attributes(retained: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, Any]:
    """Retained values win, missing ones are copied from the merged user; flags true on conflict; LTV sums."""
    result = dict(merged) | dict(retained)
    for key in TRUE_WINS_ON_MERGE & retained.keys() & merged.keys():
        if _is_true(retained[key]) != _is_true(merged[key]):  # a conflict: one side says true
            result[key] = True
    for key in SUMMED_ON_MERGE & retained.keys() & merged.keys():
        a, b = retained[key], merged[key]
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            result[key] = a + b
    return result


def _is_true(value: Any) -> bool:
    """A flag set to true in any spelling a payload or a file gives it (true, "true", 1)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True or (isinstance(value, int | float) and value == 1)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = jsoncodec.loads(text or "{}")  # orjson, json for what it refuses (the same errors)
    except ValueError as exc:
        raise Rejection(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise Rejection(f"{what} must be a JSON object")
    return value


def _operator(raw: Any, op: str) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Rejection(f"{op} must be an object of attribute name to value(s)")
    out: dict[str, list[Any]] = {}
    for name, values in raw.items():
        if name in RESERVED_FOR_OPERATORS:
            raise Rejection(f"Reserved attribute '{name}' can't be used with {op}")
        out[STANDARD_KEYS.get(name) or name] = values if isinstance(values, list) else [values]
    return out


def _platforms(raw: Any) -> list[tuple[str, bool]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Rejection("platforms must be a list of {platform, active}")
    changes = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("platform"), str):
            raise Rejection("each platforms entry needs a platform (ANDROID, iOS, web)")
        platform = PLATFORMS.get(item["platform"].strip().lower())
        if platform is None:
            raise Rejection(f"platform {item['platform']!r} is not one of ANDROID, iOS, web, TV")
        changes.append((platform, str(item.get("active", "true")).strip().lower() != "false"))
    return changes


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _is_system(key: str) -> bool:
    return key.startswith(("u_", "moe_")) or key in CREATE_ONLY or key in READ_ONLY


def _unset_matcher(rule: Any) -> Any:
    if not isinstance(rule, dict) or not isinstance(rule.get("attr"), str):
        raise Rejection("each unset_attributes rule needs type and attr")
    kind = rule.get("type", "equals")
    sensitive = rule.get("case_sensitive", True) is not False
    attr = rule["attr"] if sensitive else rule["attr"].casefold()
    tests = {
        "equals": lambda k: k == attr,
        "prefix": lambda k: k.startswith(attr),
        "suffix": lambda k: k.endswith(attr),
        "contains": lambda k: attr in k,
    }
    if kind not in tests:
        raise Rejection(f"unset_attributes type {kind!r} is not one of equals, prefix, suffix, contains")
    test = tests[kind]
    return lambda key: test(key if sensitive else key.casefold())
